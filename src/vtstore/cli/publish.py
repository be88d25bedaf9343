"""`vt publish`: store a path and print an x-vt: URI for it."""

from __future__ import annotations

import os

from vtstore.cli.common import open_store
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "publish",
        help="store a path and print an x-vt: URI",
        description=(
            "Store PATH inside a one-entry directory and print"
            " x-vt:/DIRREF/NAME, a URI naming it that vt cat, vt ls, vt unpack and"
            " the HTTP daemon (/d/...) understand."
        ),
    )
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.tree.dir import make_dir
    from vtstore.tree.fsimport import import_tree

    if not os.path.lexists(args.path):
        raise VTError(f"{args.path}: no such file or directory")
    with open_store(args) as store:
        dirent, stats = import_tree(args.path, store)
        if not dirent.name:
            raise VTError(f"{args.path}: cannot publish a path without a name")
        top = make_dir([dirent], store)
        store.flush()
    print(f"x-vt:/{top}/{dirent.name}")
    return 1 if stats.errors else 0
