"""`vt save`: store files or trees, print their refs."""

from __future__ import annotations

import os
import sys

from vtstore.cli.common import add_filter_options, filters_from_args, open_store
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "save",
        help="store files or a tree, print a block or dirent ref",
        description=(
            "Store each PATH and print one ref per line: the content block of a file"
            " (B{...} or I{...}), or with -F (and always for directories and other"
            " objects) the dirent with metadata (F{...}, D{...}).  '-' reads standard"
            " input.  The refs work with vt cat, vt ls and vt unpack."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory, or - for stdin")
    p.add_argument("-F", "--dirent", action="store_true", help="print dirents, not bare blocks")
    add_filter_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.chunking.blockify import blockify
    from vtstore.tree.dirent import T_FILE, Dirent
    from vtstore.tree.fsimport import import_tree

    rc = 0
    with open_store(args) as store:
        filters = filters_from_args(args, store)  # for the trees among the PATHs
        for path in args.paths:
            if path == "-":
                block = blockify(sys.stdin.buffer, store)
                print(Dirent(T_FILE, block=block) if args.dirent else block)
                continue
            if not os.path.lexists(path):
                raise VTError(f"{path}: no such file or directory")
            dirent, stats = import_tree(path, store, filters=filters)
            if stats.errors:
                rc = 1
            if dirent.type == T_FILE and not args.dirent:
                print(dirent.block)
            else:
                print(dirent)
        store.flush()
    return rc
