"""`vt reindex`: rebuild a datadir's index from its data files alone.

Every data file is read, every block hashed and indexed again; damaged records
are reported and skipped.  The store must not be in use by another process.
Exit code 1 when damage was found.
"""

from __future__ import annotations

from vtstore.cli.common import open_store, print_lines, progress_bar
from vtstore.errors import StoreError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reindex",
        help="rebuild a datadir's index from its data files",
        description=__doc__.split("\n\n")[1],
    )
    p.set_defaults(func=run)


def _indexed(store):
    """The store under wrappers that has an index to rebuild."""
    from vtstore.stores.fsck import fsck_targets

    for t in fsck_targets(store):
        if hasattr(t, "reindex"):
            return t
    raise StoreError(f"store {store.name} has no index to rebuild")


def run(args) -> int:
    from vtstore.stores.spec import store_info

    with open_store(args) as store:
        target = _indexed(store)
        if not target.initialized:
            print(f"{target.name}: no datadir yet, nothing to reindex")
            return 0
        total = store_info(target).get("bytes_on_disk")
        with progress_bar(args, total=total, desc="reindex") as bar:
            rep = target.reindex(progress=bar.update)
        lines = rep.lines()
        if not getattr(args, "verbose", 0):
            lines = [x for x in lines if not x.startswith("note: ")] or lines
        print_lines(lines)
        return 0 if rep.ok else 1
