"""`vt export`: write a tree as a tar stream."""

from __future__ import annotations

import sys

from vtstore.cli.common import add_filter_options, filters_from_args, open_store
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.cli.unpack import (
    DEFAULT_MAX_SIZE,
    EXIT_DAMAGED,
    add_limit_options,
    finish,
    free_space,
    parse_count,
    parse_size,
)
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a tree as a tar stream",
        description=(
            "Write the latest state of X.vt (or a dirent ref) as a POSIX (pax) tar"
            " stream, with hard links, symlinks, devices, xattrs and ACLs, to -o FILE"
            " or standard output.  The tar is streamed: memory use does not grow"
            " with the tree.  A missing or corrupt block does not stop the export:"
            " a file that cannot be read whole is written with zeros in place of"
            " what cannot be read, and the command ends with a summary on stderr"
            f" and exit status {EXIT_DAMAGED}."
        ),
    )
    p.add_argument("special", metavar="X.vt|REF")
    p.add_argument("-o", "--output", metavar="FILE", default="-", help="tar file (default stdout)")
    p.add_argument(
        "--format",
        choices=("tar", "vtd"),
        default="tar",
        help="tar (default), or vtd: a self-contained .vtd bundle of the tree's blocks"
        " (top block first; -S file:X.vtd opens it, vt ar reads it)",
    )
    add_limit_options(p, "the free space of FILE's filesystem, 16T on a pipe")
    add_filter_options(p, source=False)
    p.set_defaults(func=run)


def _export_vtd(top, store, output: str) -> int:
    from vtstore.tree.vtdview import VtdView

    view = VtdView(top, store)
    if output == "-":
        if sys.stdout.isatty():
            raise VTError("refusing to write a bundle to a terminal: use -o FILE")
        view.write_to(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        with open(output, "wb") as f:
            view.write_to(f)
    return 0


def run(args) -> int:
    use_clause_of(args, args.special)
    from vtstore.tree.tar import write_tar

    max_files = parse_count(args.max_files)
    filters = filters_from_args(args)
    if args.max_size is not None:
        max_size = parse_size(args.max_size)
    else:
        max_size = DEFAULT_MAX_SIZE if args.output == "-" else free_space(args.output)
    with open_store(args, readonly=True) as store:
        t = resolve_special(args.special, store)
        if t.dirent is None:
            raise VTError(f"{args.special}: a bare block ref has no tree; use vt cat")
        if getattr(args, "format", "tar") == "vtd":
            if filters is not None and filters.active:
                raise VTError("--format vtd bundles a whole tree: the filter options do not apply")
            return _export_vtd(t.dirent, store, args.output)
        kw = {
            "links": getattr(t, "links", None),
            "max_files": max_files,
            "max_size": max_size,
            "filters": filters,
        }
        if args.output == "-":
            if sys.stdout.isatty():
                raise VTError("refusing to write a tar to a terminal: use -o FILE")
            stats = write_tar(t.dirent, store, sys.stdout.buffer, **kw)
            sys.stdout.buffer.flush()
        else:
            with open(args.output, "wb") as f:
                stats = write_tar(t.dirent, store, f, **kw)
    return finish(args, stats, "exported")
