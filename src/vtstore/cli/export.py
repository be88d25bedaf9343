"""`vt export`: write a tree as a tar stream."""

from __future__ import annotations

import sys

from vtstore.cli.common import open_store
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a tree as a tar stream",
        description=(
            "Write the latest state of X.vt (or a dirent ref) as a POSIX (pax) tar"
            " stream, with hard links, symlinks, devices, xattrs and ACLs, to -o FILE"
            " or standard output.  The tar is streamed: memory use does not grow"
            " with the tree."
        ),
    )
    p.add_argument("special", metavar="X.vt|REF")
    p.add_argument("-o", "--output", metavar="FILE", default="-", help="tar file (default stdout)")
    p.set_defaults(func=run)


def run(args) -> int:
    use_clause_of(args, args.special)
    from vtstore.tree.tar import write_tar

    with open_store(args, readonly=True) as store:
        t = resolve_special(args.special, store)
        if t.dirent is None:
            raise VTError(f"{args.special}: a bare block ref has no tree; use vt cat")
        if args.output == "-":
            if sys.stdout.isatty():
                raise VTError("refusing to write a tar to a terminal: use -o FILE")
            write_tar(t.dirent, store, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(args.output, "wb") as f:
                write_tar(t.dirent, store, f)
    return 0
