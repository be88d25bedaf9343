"""The persistent hard-link table of a mounted tree.

In the tree a hard-linked object looks exactly as `vt pack` writes it, so
`vt unpack` and every other reader restore it: the name first in walk order is
a dirent of the object's type (file, symlink, device, fifo, socket) with
`ino=GID` holding the content and metadata, every other name a hard-link
dirent with `ino=GID`.  Finding the content of a hard-link
dirent from there would need a walk of the whole tree, so the mount also keeps
a table, stored with the tree (in the `ext` field of the mounted directory's
dirent, see docs/FILESYSTEM.md):

    ext    := "VTFS" varint(version = 2) field*
    field  := varint(tag) lbytes(value)
    tag 1  : blockref of the table directory
    tag 2  : varint(next group id)
    tag 3  : varint(number of groups)

The table directory holds one sub-directory ("bucket") per 1024 group ids,
named by `gid >> 10` in hex, and in it one dirent per group, named by the gid
in hex: the group's object (a file with its content block, a symlink with its
target, a device with its numbers, a fifo or socket; version 1 tables hold
files only), `ino=GID`, and in its `ext` the
group's names as `lbytes(path)*` (paths relative to the mounted directory,
components joined by `/`).  Buckets are loaded on demand and only changed
buckets are re-encoded, so a lookup costs two small directory reads and an
update rewrites one bucket, however many hard links the tree has.
A tree without a table (packed from a real filesystem) gets one built by one
walk the first time a hard-linked dirent is met.  The format's encoders and
decoders live in `tree/links.py`, beside `LinkResolver`, which reads the table
without a mount.

A mount of a sub-path always builds its table by a walk of the sub-path, and
finds the groups whose file lies outside it through a `LinkResolver` over the
whole top (`outer`): such a group's names in the mount stay hard-link dirents
and its changed content is written through to the file outside
(`FileSystem.outside_changes`, applied by `Mount.sync`).
"""

from __future__ import annotations

import logging

from vtstore.errors import VTError
from vtstore.tree.dir import dir_entries, make_dir
from vtstore.tree.dirent import T_DIR, T_HARDLINK, Dirent
from vtstore.tree.links import (  # the table's format lives with the tree (readers use it)
    BUCKET_BITS,
    EXT_MAGIC,
    decode_ext,
    decode_paths,
    encode_ext,
    encode_paths,
    iter_tree,
    path_key,
)

log = logging.getLogger(__name__)

__all__ = ["LinkGroup", "LinkTable", "decode_ext", "encode_ext"]


class LinkGroup:
    """One hard-link group: its names and its shared file node (once made).

    `outside` is set for a group of a mounted sub-path whose file lies outside
    it: the path of that file below the archive's top.  Such a group keeps its
    file there (the mount writes the new content through to it, see
    `FileSystem.outside_changes`) and all its names in the mount stay links.
    """

    __slots__ = ("gid", "paths", "entry", "node", "outside")

    def __init__(self, gid: int, paths: set, entry: Dirent | None = None, node=None):
        self.gid = gid
        self.paths = paths
        self.entry = entry  # the stored table entry (content and meta), until a node exists
        self.node = node
        self.outside: tuple[str, ...] | None = None

    @property
    def primary(self) -> tuple[str, ...] | None:
        return min(self.paths, key=path_key) if self.paths else None


class LinkTable:
    """The hard-link groups of a mounted tree; see the module docstring.

    `outer` (a `tree.links.LinkResolver` over the whole archive state) is given
    for a mount of a sub-path: groups whose file is outside the mounted
    directory are found there, and new groups get numbers no group of the
    whole tree has.
    """

    def __init__(self, store, root: Dirent | None, outer=None):
        self.store = store
        self.outer = outer
        self.groups: dict[int, LinkGroup] = {}
        self.buckets: dict[int, Dirent | None] = {}  # stored bucket dirents, by number
        self.loaded: set[int] = set()
        self.dirty_buckets: set[int] = set()
        self.changed: set[int] = set()  # groups whose names or content changed since sync
        self.next_gid = 1
        self.count = 0
        self.complete = True  # False: the tree has links but no table yet
        self._root = root
        self._outer_numbers = outer is None
        self.on_error = None  # on_error(what, exception): a directory the walk cannot read
        try:
            info = decode_ext(root.ext) if root is not None and outer is None else None
            if info is not None:
                block, next_gid, count = info
                buckets = {
                    int(b.name, 16): b for b in dir_entries(Dirent(T_DIR, block=block), store)
                }
                self.buckets, self.next_gid, self.count = buckets, next_gid, count
        except (VTError, KeyError, ValueError) as e:
            # a damaged table: the tree itself still says everything, walk it
            log.warning("the hard-link table of the mounted tree is unreadable (%s)", e)
            info = None
        if info is None and root is not None:
            # no table (packed from a real filesystem), a damaged one, or a sub-path
            # whose groups may have their file outside it: build by one walk
            self.complete = False

    def __len__(self) -> int:
        return self.count

    # -- finding groups -------------------------------------------------------

    def _load_bucket(self, n: int) -> None:
        if n in self.loaded:
            return
        self.loaded.add(n)
        b = self.buckets.get(n)
        if b is None:
            return
        for e in dir_entries(b, self.store):
            try:
                gid = int(e.name, 16)
            except ValueError:
                log.warning("hard-link table entry %r is not a group number", e.name)
                continue
            if gid not in self.groups:
                self.groups[gid] = LinkGroup(gid, decode_paths(e.ext), entry=e)

    def _build(self) -> None:
        """Make the table from a tree packed without one (one walk)."""
        self.complete = True
        if self._root is None:
            return
        found: dict[int, LinkGroup] = {}
        # an unreadable directory is skipped (its groups stay unknown), told to on_error
        for path, e in iter_tree(self._root, self.store, self._unreadable):
            if not e.is_linked or not path:
                continue
            g = found.get(e.ino)
            if g is None:
                g = found[e.ino] = LinkGroup(e.ino, set())
            g.paths.add(path)
            if e.type != T_HARDLINK and g.entry is None:
                g.entry = e
        for gid, g in found.items():
            if g.entry is None and self.outer is not None:
                g.entry = self.outer.resolve(gid)
                g.outside = self.outer.path_of(gid)
                if g.entry is not None:
                    self.groups[gid] = g
                    continue
            if g.entry is None:
                log.warning("hard-link group %d has no file in the mounted tree", gid)
                continue
            self.groups[gid] = g
            self.loaded.add(gid >> BUCKET_BITS)
            self.dirty_buckets.add(gid >> BUCKET_BITS)
            self.changed.add(gid)
            self.next_gid = max(self.next_gid, gid + 1)
        self.count = sum(1 for g in self.groups.values() if g.outside is None)

    def _unreadable(self, path: tuple[str, ...], err: Exception) -> None:
        if self.on_error is not None:
            self.on_error("directory /" + "/".join(path), err)
        else:
            log.warning("directory /%s: %s", "/".join(path), err)

    def get(self, gid: int) -> LinkGroup | None:
        """The group `gid`, loading its bucket (or building the table) if needed."""
        if not self.complete:
            self._build()
        g = self.groups.get(gid)
        if g is None:
            self._load_bucket(gid >> BUCKET_BITS)
            g = self.groups.get(gid)
        return g

    def load_all(self) -> None:
        if not self.complete:
            self._build()
        for n in list(self.buckets):
            self._load_bucket(n)

    def group_for(self, d, ino: int) -> tuple[int, LinkGroup | None]:
        """`(gid, group)` of the link dirent `ino` met in directory node `d`."""
        return ino, self.get(ino)

    def nlink(self, gid: int) -> int:
        g = self.get(gid)
        if g is None:
            return 1
        return len(g.paths) + (g.outside is not None)

    # -- changing groups ------------------------------------------------------

    def new_group(self, node, paths: set) -> LinkGroup:
        if not self.complete:
            self._build()
        if not self._outer_numbers:
            # numbers must be new in the whole tree, not only in the mounted part
            self._outer_numbers = True
            self.next_gid = max(self.next_gid, self.outer.max_ino() + 1)
        gid = self.next_gid
        self.next_gid += 1
        self._load_bucket(gid >> BUCKET_BITS)
        g = self.groups[gid] = LinkGroup(gid, set(paths), node=node)
        self.count += 1
        self.touch(gid)
        return g

    def touch(self, gid: int) -> None:
        """Group `gid` changed: its names or its content."""
        self.changed.add(gid)
        self.dirty_buckets.add(gid >> BUCKET_BITS)

    def drop(self, gid: int) -> None:
        g = self.groups.pop(gid, None)
        if g is not None and g.outside is None:
            self.count -= 1
        self.changed.discard(gid)
        self.dirty_buckets.add(gid >> BUCKET_BITS)

    def rename_prefix(self, old: tuple, new: tuple) -> None:
        """A directory moved: rewrite the names below it."""
        if self.complete and not self.groups and not self.buckets:
            return
        self.load_all()
        n = len(old)
        for g in self.groups.values():
            if any(p[:n] == old for p in g.paths):
                g.paths = {new + p[n:] if p[:n] == old else p for p in g.paths}
                self.touch(g.gid)

    # -- storing --------------------------------------------------------------

    def entry_of(self, g: LinkGroup) -> Dirent:
        name = f"{g.gid:x}"
        if g.node is not None:
            d = g.node.group_dirent(name)
        else:
            d = g.entry.with_changes(name=name)
        return d.with_changes(ext=encode_paths(g.paths))

    def encode_ext(self, old_ext: bytes | None) -> bytes | None:
        """The `ext` for the mounted directory's dirent, re-encoding changed buckets."""
        if not self.complete and old_ext is None:
            return None
        if self.count == 0 and not self.buckets:
            return old_ext if decode_ext(old_ext) is None else None
        for n in sorted(self.dirty_buckets):
            self._load_bucket(n)
            entries = [
                self.entry_of(g)
                for gid, g in self.groups.items()
                if gid >> BUCKET_BITS == n and g.outside is None
            ]
            self.buckets[n] = make_dir(entries, self.store, name=f"{n:x}") if entries else None
            if not entries:
                del self.buckets[n]
        self.dirty_buckets.clear()
        top = make_dir(
            [b for b in self.buckets.values() if b is not None], self.store, name="links"
        )
        if old_ext and not old_ext.startswith(EXT_MAGIC):
            log.warning("replacing foreign ext data of the mounted directory with the link table")
        return encode_ext(top.block, self.next_gid, self.count)
