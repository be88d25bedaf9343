"""The refs view (`vt mount --refs MNT`): a content-addressed namespace.

The mount's top is an empty read-only directory in which any dirent ref is a
name: a lookup of `D{...}` (the text `vt pack` prints; any dirent type) or of
a directory's block ref (`I{...}`, `B{...}`, `LB{...}`) makes that entry
appear, so `MNT/D{...}/some/path` resolves on demand and a symlink to it is a
permanent link to that content: it reads the same after any remount, as long
as the store has the blocks.  Nothing else is ever listed at the top but the
refs looked up so far.  Refs are longer than NAME_MAX, so the top accepts
names up to FUSE's own limit (1024 octets).  A name that is not a ref, or a
ref whose block the store does not have, is ENOENT.

Each ref is a tree of its own, with its own hard-link groups: the view uses
the history view's per-tree link tables (`history.HistoryLinks`).
"""

from __future__ import annotations

import logging

from vtstore.blocks import Block
from vtstore.errors import VTError
from vtstore.tree.dirent import T_DIR, Dirent

log = logging.getLogger(__name__)

#: FUSE passes names up to this many octets (FUSE_NAME_MAX); the top takes them
REF_NAME_MAX = 1024


def parse_name(name: str, store) -> Dirent | None:
    """The dirent a top-level name stands for (named `name`), or None."""
    from vtstore.transcribe import parse_all

    if not name or name[0] not in "BDFHILRSW":
        return None  # no ref starts otherwise: skip the parser for ordinary names
    try:
        v = parse_all(name)
    except (VTError, ValueError):
        return None
    if isinstance(v, Block):
        v = Dirent(T_DIR, block=v)  # a directory's entries, by their block
    if not isinstance(v, Dirent):
        return None
    h = getattr(v.block, "hashcode", None)
    try:
        if h is not None and h not in store:
            return None
    except (VTError, KeyError):
        return None
    try:
        return v.renamed(name)
    except VTError:
        return None


def refs_filesystem(store, **kw):
    """A read-only `FileSystem` serving the refs view of `store`."""
    from vtstore.fs.filesystem import FileSystem
    from vtstore.fs.history import HistoryLinks, history_top

    fs = FileSystem(store, history_top(), readonly=True, **kw)
    fs.links = HistoryLinks(fs)  # each ref is a tree with its own link groups
    fs.on_missing = lambda name: parse_name(name, fs.store)
    return fs
