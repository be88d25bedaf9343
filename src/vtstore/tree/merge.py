"""Merging trees: overlay one directory dirent onto another."""

from __future__ import annotations

from vtstore.tree.dir import dir_entries, make_dir
from vtstore.tree.dirent import T_WHITEOUT, Dirent


def merge(base: Dirent, overlay: Dirent, store) -> Dirent:
    """`base` with `overlay` laid on top.

    Directories present in both are merged recursively (the overlay's metadata
    wins); any other entry of the overlay replaces the base's entry of that name;
    a whiteout in the overlay deletes the base's entry.  The result keeps the
    base's name.
    """
    if not (base.is_dir and overlay.is_dir):
        return overlay.renamed(base.name)
    entries = {e.name: e for e in dir_entries(base, store)}
    for e in dir_entries(overlay, store):
        old = entries.get(e.name)
        if e.type == T_WHITEOUT:
            entries.pop(e.name, None)
        elif old is not None and old.is_dir and e.is_dir:
            entries[e.name] = merge(old, e, store)
        else:
            entries[e.name] = e
    return make_dir(entries.values(), store, name=base.name, meta=overlay.meta or base.meta)
