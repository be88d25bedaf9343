"""Merging trees: overlay one directory dirent onto another."""

from __future__ import annotations

from vtstore.tree.dir import dir_entries, make_dir, salt_of
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


# -- three-way merge -----------------------------------------------------------

CONFLICT_SUFFIX = ".vt-conflict"


def _conflict_name(name: str, taken) -> str:
    """A name for the other side's version of `name` that no entry has."""
    n = 1
    cand = f"{name}{CONFLICT_SUFFIX}"
    while cand in taken:
        n += 1
        cand = f"{name}{CONFLICT_SUFFIX}{n}"
    return cand


def merge3(base: Dirent | None, ours: Dirent, theirs: Dirent, store) -> tuple[Dirent, list[str]]:
    """Merge the changes `base -> ours` and `base -> theirs` of a directory tree.

    Entry by entry, by name: what only one side changed (added, removed,
    replaced) takes that side's change; what both changed the same way takes
    it once; directories both sides changed are merged the same way, level by
    level (an explicit stack: any depth).  A real conflict (both changed one
    non-directory differently, or one removed what the other changed) keeps
    both: ours under the name, theirs under `NAME.vt-conflict` (a number added
    if that is taken); a removal against a change keeps the changed one.
    Returns the merged dirent (ours' name; metadata of the side that changed
    it, ours when both did) and the conflicting paths, `/`-joined.
    Unchanged subtrees are taken as they are, unread: the cost follows what
    changed.  The merged directories get the salt of `ours`' top, if salted.
    Hard-link groups new on both sides may share a number (the
    merged tree then joins them); the mount's link table of the top is dropped
    (readers walk).
    """
    conflicts: list[str] = []
    salt: bytes | None | bool = False  # not looked up yet

    def entries(d: Dirent | None) -> dict[str, Dirent]:
        if d is None or not d.is_dir or d.block is None:
            return {}
        return {e.name: e for e in dir_entries(d, store)}

    def frame(path: str, b, o, t):
        be, oe, te = entries(b), entries(o), entries(t)
        names = sorted(set(be) | set(oe) | set(te), reverse=True)
        return path, b, o, t, be, oe, te, names, {}

    stack = [frame("", base, ours, theirs)]
    while True:
        path, b, o, t, be, oe, te, names, out = stack[-1]
        descended = False
        while names:
            name = names.pop()
            bd, od, td = be.get(name), oe.get(name), te.get(name)
            if od == td or td == bd:
                keep = od
            elif od == bd:
                keep = td
            elif od is not None and td is not None and od.is_dir and td.is_dir:
                sub = f"{path}/{name}" if path else name
                stack.append(frame(sub, bd if bd is not None and bd.is_dir else None, od, td))
                descended = True
                break
            else:
                where = f"{path}/{name}" if path else name
                conflicts.append(where)
                if od is None or td is None:
                    keep = od if od is not None else td  # removed here, changed there
                else:
                    keep = od
                    other = _conflict_name(name, set(oe) | set(te) | set(out))
                    out[other] = td.renamed(other)
            if keep is not None:
                out[name] = keep
        if descended:
            continue
        if o.meta == t.meta or (b is not None and t.meta == b.meta):
            meta = o.meta
        elif b is not None and o.meta == b.meta:
            meta = t.meta
        else:
            meta = o.meta
        # a salted tree stays salted (the salt of the merged tree's top, ours)
        if salt is False:
            salt = salt_of(ours, store)
        done = make_dir(list(out.values()), store, name=o.name, meta=meta, salt=salt)
        stack.pop()
        if not stack:
            return done, conflicts
        stack[-1][8][o.name] = done
