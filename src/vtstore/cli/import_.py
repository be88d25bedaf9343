"""`vt import`: merge a real tree into an archive's latest state."""

from __future__ import annotations

import os

from vtstore.cli.common import add_filter_options, filters_from_args, open_store
from vtstore.cli.progress import TreeProgress
from vtstore.cli.refs import archive_of, use_clause_of
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "import",
        help="merge a tree into an archive's latest state",
        description=(
            "Store the tree at SRC and merge it into the latest state of X.vt:"
            " directories present in both are merged, other entries of SRC replace"
            " those of the same name.  The merged tree is appended as a new state"
            " (the first state if X.vt is new).  An archive belongs to the store its"
            " states were written to: merging into it from another store is refused"
            " unless --force (which still needs the latest state's directories)."
        ),
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("archive", metavar="X.vt")
    p.add_argument("-m", "--comment", help="a comment stored with the state")
    p.add_argument(
        "--force",
        action="store_true",
        help="append even if the archive's latest state belongs to another store",
    )
    add_filter_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.archive import store_identity
    from vtstore.tree.fsimport import Importer
    from vtstore.tree.merge import merge

    if not os.path.lexists(args.src):
        raise VTError(f"{args.src}: no such file or directory")
    use_clause_of(args, args.archive)
    with open_store(args) as store, TreeProgress(args, "import", store=store) as progress:
        archive, inner = archive_of(args.archive, store)
        if inner:
            raise VTError(f"{args.archive}: import merges into a whole archive, not a path in it")
        last = archive.last()
        archive.check_store(store, force=args.force, last=last)
        imp = Importer(
            progress.store,
            on_file=lambda st: progress.update(st.bytes_read, st.files),
            filters=filters_from_args(args, store, str(getattr(archive, "path", ""))),
        )
        new = imp.import_path(args.src)
        if last is None:
            merged = new
        elif new.is_dir:
            merged = merge(last.dirent, new, store)
        else:
            from vtstore.tree.dir import dir_entries, make_dir

            entries = {e.name: e for e in dir_entries(last.dirent, store)}
            entries[new.name] = new
            merged = make_dir(entries.values(), store, name=last.dirent.name, meta=last.dirent.meta)
        store.flush()
        entry = archive.update(merged, comment=args.comment, store_id=store_identity(store))
    print(entry.dirent)
    if imp.stats.errors:
        raise VTError(f"{len(imp.stats.errors)} objects could not be read")
    return 0
