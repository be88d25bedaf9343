"""Merging trees: overlay one directory dirent onto another."""

from __future__ import annotations

from vtstore.tree.dir import dir_entries, make_dir
from vtstore.tree.dirent import T_WHITEOUT, Dirent


def merge(base: Dirent, overlay: Dirent, store) -> Dirent:
    """`base` with `overlay` laid on top.

    Directories present in both are merged recursively (the overlay's metadata
    wins); any other entry of the overlay replaces the base's entry of that name;
    a whiteout in the overlay deletes the base's entry.  The result keeps the
    base's name.  The recursion is an explicit stack: any depth merges.
    """
    if not (base.is_dir and overlay.is_dir):
        return overlay.renamed(base.name)
    # each frame: base, overlay, merged entries by name, overlay entries left
    stack = [_open(base, overlay, store)]
    while True:
        b, o, entries, todo = stack[-1]
        descended = False
        while todo:
            e = todo.pop()
            old = entries.get(e.name)
            if e.type == T_WHITEOUT:
                entries.pop(e.name, None)
            elif old is not None and old.is_dir and e.is_dir:
                stack.append(_open(old, e, store))
                descended = True
                break
            else:
                entries[e.name] = e
        if descended:
            continue
        done = make_dir(entries.values(), store, name=b.name, meta=o.meta or b.meta)
        stack.pop()
        if not stack:
            return done
        stack[-1][2][done.name] = done


def _open(base: Dirent, overlay: Dirent, store):
    entries = {e.name: e for e in dir_entries(base, store)}
    todo = dir_entries(overlay, store)
    todo.reverse()  # popped from the end: name order
    return base, overlay, entries, todo
