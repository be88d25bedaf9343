"""Finding the first name of a hard-link group anywhere in a tree.

A hard-linked object is stored once: the name first in walk order is a dirent
of the object's type (file, symlink, device, fifo or socket: `GROUP_TYPES`)
with `ino=GID` carrying content and metadata, every other name a hard-link
dirent with the same `ino` and nothing else (see `tree/fsimport.py`).  Link
groups of format 1 (table version 1) were files only; format 2 allows every
non-directory, and both are read.
A reader of a subtree (`vt cat X.vt/b/g`, `unpack X.vt/b`, `mount X.vt/b`, a
state of the history view) can meet a hard-link dirent whose file lies outside
what it reads.  `LinkResolver` answers "which file dirent is group GID?" for a
whole tree: lazily (nothing is read until the first question), with one walk
shared by every group (the walk stops where the asked group was found and goes
on from there for the next unknown one), and without recursion, so a tree
thousands of levels deep is no problem.

A tree written by a mount carries a table of its groups in its top dirent's
`ext` (`fs/links.py`); when it has one the resolver looks there first: two
small directory reads and a lookup of the path the table gives (which must hold
the group's file, else the table is out of date and the tree is walked)
instead of a walk.

A directory that cannot be read (a missing or corrupt block) is skipped by the
walk and recorded in `errors`: the groups whose file is elsewhere still
resolve, which is what "every readable byte restorable" asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from vtstore.blocks import decode_blockref
from vtstore.codec import Reader, encode_bytes, encode_varint
from vtstore.errors import FormatError, VTError
from vtstore.tree.dir import dir_entries, resolve, walk
from vtstore.tree.dirent import GROUP_TYPES, T_DIR, T_HARDLINK, Dirent, fsdec, fsenc

log = logging.getLogger(__name__)

__all__ = ["LinkResolver", "iter_tree"]


# -- the table a mount keeps in its top dirent's ext (see fs/links.py) --------

EXT_MAGIC = b"VTFS"
# version 2: a group's entry may be any non-directory (version 1: files only);
# a reader of version 1 refuses 2 and walks the tree instead
EXT_VERSION = 2
EXT_VERSIONS = (1, 2)
TAG_TABLE = 1
TAG_NEXT = 2
TAG_COUNT = 3
BUCKET_BITS = 10


def encode_ext(table_block, next_gid: int, count: int) -> bytes:
    """The `ext` of a directory dirent carrying a link table."""
    out = bytearray(EXT_MAGIC + encode_varint(EXT_VERSION))
    out += encode_varint(TAG_TABLE) + encode_bytes(table_block.encode())
    out += encode_varint(TAG_NEXT) + encode_bytes(encode_varint(next_gid))
    out += encode_varint(TAG_COUNT) + encode_bytes(encode_varint(count))
    return bytes(out)


def decode_ext(ext: bytes | None):
    """`(table block, next gid, count)` from a dirent's ext, or None if it has no table."""
    if not ext or not ext.startswith(EXT_MAGIC):
        return None
    r = Reader(ext[len(EXT_MAGIC) :])
    if r.varint() not in EXT_VERSIONS:
        raise FormatError("unknown vtfs ext version")
    block, nxt, count = None, 1, 0
    while not r.at_end():
        tag = r.varint()
        value = r.lbytes()
        if tag == TAG_TABLE:
            block = decode_blockref(value)
        elif tag == TAG_NEXT:
            nxt = Reader(value).varint()
        elif tag == TAG_COUNT:
            count = Reader(value).varint()
    return block, nxt, count


def encode_paths(paths) -> bytes:
    """A group's names (tuples of path parts) as the table entry's ext."""
    return b"".join(encode_bytes(fsenc("/".join(p))) for p in sorted(paths, key=path_key))


def decode_paths(ext: bytes | None) -> set[tuple[str, ...]]:
    """The names of a group from its table entry's ext."""
    out = set()
    if ext:
        r = Reader(ext)
        while not r.at_end():
            out.add(tuple(fsdec(r.lbytes()).split("/")))
    return out


def path_key(p: tuple[str, ...]):
    """Walk order of paths: depth first, names by their octets."""
    return tuple(fsenc(c) for c in p)


def table_entry(table_block, gid: int, store) -> tuple[Dirent, set] | None:
    """The stored entry of group `gid` in a link table and its names, or None."""
    if table_block is None:
        return None
    want = f"{gid >> BUCKET_BITS:x}"
    for b in dir_entries(Dirent(T_DIR, block=table_block), store):
        if b.name == want:
            name = f"{gid:x}"
            for e in dir_entries(b, store):
                if e.name == name:
                    return e, decode_paths(e.ext)
            return None
    return None


def iter_tree(
    root: Dirent, store, on_error: Callable[[tuple[str, ...], Exception], None] | None = None
) -> Iterator[tuple[tuple[str, ...], Dirent]]:
    """Every `(path parts, dirent)` below `root`, depth first in name order.

    `tree.dir.walk` with paths as tuples of names.  With `on_error` a directory
    whose entries cannot be read is passed to it (its path, the error) and
    skipped; without it the error propagates.
    """

    def parts(path: str) -> tuple[str, ...]:
        return tuple(path.split("/")) if path else ()  # names never hold "/"

    def entries_of(d: Dirent, path: str) -> list[Dirent]:
        try:
            return dir_entries(d, store)
        except (VTError, KeyError) as e:
            if on_error is None:
                raise
            on_error(parts(path), e)
            return []

    for path, e in walk(root, store, entries=entries_of):
        yield parts(path), e


class LinkResolver:
    """The first-name dirent of each hard-link group of the tree under `root`.

    `resolve(ino)` returns the group's dirent (a file, symlink, device, fifo
    or socket named as it is in the tree), or None if the tree has no such
    dirent of that group.  `path_of(ino)`
    gives where that file is (path parts below `root`), when the walk found
    it.  Safe to share between readers of one tree; not thread-safe.
    """

    def __init__(self, root: Dirent, store):
        self.root = root
        self.store = store
        self.errors: list[str] = []  # directories the walk could not read
        self._files: dict[int, Dirent] = {}
        self._max_ino = 0
        self._paths: dict[int, tuple[str, ...]] = {}
        self._walk: Iterator[tuple[tuple[str, ...], Dirent]] | None = None
        self._done = False
        self._table = None  # the mount's link table, when the top dirent has one
        self._table_tried = False

    def __repr__(self) -> str:
        state = "walked" if self._done else f"{len(self._files)} groups found so far"
        return f"<LinkResolver {state}>"

    def resolve(self, ino: int) -> Dirent | None:
        """The dirent holding the object and metadata of group `ino` (its first name)."""
        if ino is None:
            return None
        d = self._files.get(ino)
        if d is not None:
            return d
        d = self._from_table(ino)
        if d is not None:
            return d
        return self._walk_until(ino)

    def path_of(self, ino: int) -> tuple[str, ...] | None:
        """Where the walk found group `ino`'s file (None if not found by a walk)."""
        if ino not in self._paths and ino not in self._files:
            self._walk_until(ino)
        return self._paths.get(ino)

    def _unreadable(self, path: tuple[str, ...], err: Exception) -> None:
        msg = f"{'/'.join(path) or 'top'}: directory unreadable: {err}"
        log.warning("%s", msg)
        self.errors.append(msg)

    def max_ino(self) -> int:
        """The largest group number in the tree (0 if none): walks the whole tree."""
        self._walk_until(-1)
        return self._max_ino

    def resolve_link(self, d: Dirent) -> Dirent:
        """`d` itself, or for a hard-link dirent its group's file renamed to `d`'s name.

        Raises `FormatError` for a hard link whose group has no file in the tree.
        """
        if d.type != T_HARDLINK:
            return d
        f = self.resolve(d.ino)
        if f is None:
            raise FormatError(
                f"hard link {d.name!r} to inode group {d.ino}, which no file of the tree has"
            )
        return f.renamed(d.name)

    # -- the mount's table ----------------------------------------------------

    def _from_table(self, ino: int) -> Dirent | None:
        if not self._table_tried:
            self._table_tried = True
            try:
                self._table = decode_ext(self.root.ext)
            except (VTError, KeyError) as e:
                log.warning("the tree's link table is unreadable (%s): walking instead", e)
        if self._table is None:
            return None
        try:
            found = table_entry(self._table[0], ino, self.store)
        except (VTError, KeyError) as e:
            log.warning("the tree's link table is unreadable (%s): walking instead", e)
            self._table = None
            return None
        if found is None:
            return None
        _, paths = found
        primary = min(paths, key=path_key) if paths else None
        if primary is None:
            return None
        # the table is an index, the tree is the truth: the file must be where it says
        try:
            d = resolve(self.root, "/".join(primary), self.store)
        except (VTError, KeyError):
            d = None
        if d is None or d.type not in GROUP_TYPES or d.ino != ino:
            log.warning("the tree's link table is out of date (group %d): walking instead", ino)
            self._table = None
            return None
        self._files[ino] = d
        self._paths[ino] = primary
        return d

    # -- the walk --------------------------------------------------------------

    def _walk_until(self, ino: int) -> Dirent | None:
        if self._done:
            return self._files.get(ino)
        if self._walk is None:
            self._walk = iter_tree(self.root, self.store, self._unreadable)
        for path, e in self._walk:
            if e.ino is not None and e.ino > self._max_ino:
                self._max_ino = e.ino
            if e.type in GROUP_TYPES and e.ino is not None and e.ino not in self._files:
                self._files[e.ino] = e
                self._paths[e.ino] = path
                if e.ino == ino:
                    return e
        self._done = True
        self._walk = None
        return self._files.get(ino)
