"""`vt cat`: write the content of refs to standard output."""

from __future__ import annotations

import sys

from vtstore.cli.common import open_store
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "cat",
        help="write the content of a ref to stdout",
        description=(
            "Write the content of each REF to standard output: a block ref, a file"
            " dirent, a path inside a dirent or archive (REF/path, X.vt/path)."
        ),
    )
    p.add_argument("refs", nargs="+", metavar="REF")
    p.set_defaults(func=run)


def run(args) -> int:
    use_clause_of(args, args.refs[0] if args.refs else None)
    out = sys.stdout.buffer
    with open_store(args, readonly=True) as store:
        for text in args.refs:
            t = resolve_special(text, store)
            if t.dirent is not None and not t.dirent.is_file:
                if t.dirent.is_symlink:
                    raise VTError(f"{text}: is a symlink to {t.dirent.target!r}")
                raise VTError(f"{text}: is a {t.dirent.type_name}, not a file")
            block = t.content_block
            if block is None:
                continue
            for chunk in block.chunks(store):
                out.write(chunk)
    out.flush()
    return 0
