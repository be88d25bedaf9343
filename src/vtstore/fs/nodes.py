"""The mutable nodes of a mounted tree.

A directory's children map names to either a `Dirent` (not yet looked at:
costs nothing but the decoded entry) or a `Node` (materialised: it has an inode
number because the kernel knows it, or it was changed).  Clean nodes the kernel
has forgotten collapse back into their dirent, so memory follows what is in
use, not the size of the tree.  A node that changed is `dirty` and so are its
ancestors; syncing re-encodes exactly the dirty directories, bottom up.
"""

from __future__ import annotations

import stat as statmod
import time
from dataclasses import dataclass, replace

from vtstore.blocks import Block
from vtstore.fs.content import EMPTY, Layer
from vtstore.tree.dirent import (
    T_DEVICE,
    T_DIR,
    T_FIFO,
    T_FILE,
    T_SOCKET,
    T_SYMLINK,
    Dirent,
)
from vtstore.tree.meta import Meta

IFMT = {
    T_FILE: statmod.S_IFREG,
    T_DIR: statmod.S_IFDIR,
    T_SYMLINK: statmod.S_IFLNK,
    T_FIFO: statmod.S_IFIFO,
    T_SOCKET: statmod.S_IFSOCK,
}


@dataclass(slots=True)
class Attr:
    """What `stat` reports for a node."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


class Node:
    """Common part of every materialised object."""

    __slots__ = (
        "ino",
        "type",
        "meta",
        "parent",
        "name",
        "nlookup",
        "opens",
        "dirty",
        "orig",
        "gid",
        "unlinked",
    )

    def __init__(self, dtype: int, meta: Meta, orig: Dirent | None = None):
        self.ino = 0
        self.type = dtype
        self.meta = meta
        self.parent: DirNode | None = None
        self.name = ""
        self.nlookup = 0
        self.opens = 0
        self.dirty = orig is None
        self.orig = orig  # the dirent this node came from (uuid, ext... are kept)
        self.gid: int | None = None  # hard-link group, see links.py
        self.unlinked = False

    # -- attributes -----------------------------------------------------------

    @property
    def size(self) -> int:
        return 0

    def rdev(self) -> int:
        return 0

    def nlink(self, fs) -> int:
        if self.unlinked:
            return 0
        if self.gid is not None:
            return fs.links.nlink(self.gid)
        return 1

    def attr(self, fs) -> Attr:
        m = self.meta
        size = self.size
        mt = m.mtime_ns or 0
        return Attr(
            ino=self.ino,
            mode=IFMT_of(self) | (m.mode if m.mode is not None else 0o644),
            nlink=self.nlink(fs),
            uid=m.uid or 0,
            gid=m.gid or 0,
            rdev=self.rdev(),
            size=size,
            blocks=(size + 511) // 512,
            atime_ns=m.atime_ns if m.atime_ns is not None else mt,
            mtime_ns=mt,
            ctime_ns=m.ctime_ns if m.ctime_ns is not None else mt,
        )

    def base_dirent(self, name: str) -> Dirent:
        """The dirent of this node with its current metadata (content set by subclasses)."""
        if self.orig is not None:
            return replace(self.orig, name=name, meta=self.meta)
        return Dirent(self.type, name=name, meta=self.meta)

    def with_object(self, d: Dirent) -> Dirent:
        """`d` with this node's type-specific fields (content, target, device)."""
        return d

    def group_dirent(self, name: str) -> Dirent:
        """The dirent of a hard-linked node's first name (and of its table entry).

        Made afresh: `orig` may be a table entry, whose `ext` holds the names.
        """
        return self.with_object(Dirent(self.type, name=name, meta=self.meta, ino=self.gid))

    def to_dirent(self, name: str, fs) -> Dirent:
        if self.gid is not None:
            return self.group_dirent(name)
        return self.with_object(self.base_dirent(name))


def IFMT_of(node: Node) -> int:
    if node.type == T_DEVICE:
        return statmod.S_IFCHR if node.rdev_tuple[0] == "c" else statmod.S_IFBLK
    return IFMT[node.type]


class FileNode(Node):
    """A regular file: its stored `block`, frozen layers being stored, a write layer."""

    __slots__ = ("block", "top", "frozen", "mime_hint")

    def __init__(self, meta: Meta, block: Block | None, orig: Dirent | None = None):
        super().__init__(T_FILE, meta, orig)
        self.block: Block = block if block is not None else EMPTY
        self.top: Layer | None = None
        self.frozen: list[Layer] = []

    @property
    def view(self):
        """What reads see: the write layer, the newest frozen layer, or the block."""
        if self.top is not None:
            return self.top
        if self.frozen:
            return self.frozen[-1]
        return self.block

    @property
    def size(self) -> int:
        v = self.view
        return v.size if isinstance(v, Layer) else v.span

    def layer(self, scratch_dir: str | None) -> Layer:
        """The write layer, started on first use."""
        if self.top is None:
            base = self.frozen[-1] if self.frozen else self.block
            self.top = Layer(base, self.size, scratch_dir)
        return self.top

    def with_object(self, d: Dirent) -> Dirent:
        return replace(d, block=self.block)


class DirNode(Node):
    """A directory: `children` is None until loaded from `orig`.

    `synced` is its dirent as last stored (what its archive-as views show);
    `views` the archive-as views among its entries, by name (None: not yet
    looked at, see `FileSystem.views`).
    """

    __slots__ = ("children", "cached", "salt", "synced", "views")

    def __init__(self, meta: Meta, orig: Dirent | None = None):
        super().__init__(T_DIR, meta, orig)
        self.salt: bytes | None = None
        self.children: dict | None = None if orig is not None else {}
        self.cached: Dirent | None = orig
        self.synced: Dirent | None = orig
        self.views: dict | None = None

    def path(self) -> tuple[str, ...]:
        parts = []
        n = self
        while n.parent is not None:
            parts.append(n.name)
            n = n.parent
        return tuple(reversed(parts))

    def nlink(self, fs) -> int:
        if self.unlinked:
            return 0
        try:
            kids = fs.children(self)
        except OSError:  # unreadable (logged): still list it in its parent
            return 2
        return 2 + sum(
            1 for c in kids.values() if (c.type if isinstance(c, Node) else c.type) == T_DIR
        )

    def to_dirent(self, name: str, fs) -> Dirent:
        if not self.dirty and self.cached is not None:
            return self.cached if self.cached.name == name else self.cached.renamed(name)
        return fs.encode_dir(self, name)


class ViewNode(FileNode):
    """A read-only file made from a directory (an archive-as view, `fs/views.py`).

    Its `block` is the view (a `tree.tarview.TarView`: `span`, `read`,
    `slices`); it is not an entry of its directory and is never stored.
    """

    __slots__ = ("source",)

    def __init__(self, meta: Meta, view, source: Dirent):
        super().__init__(meta, None, None)
        self.block = view
        self.source = source  # the directory dirent the view was made from
        self.dirty = False


class SymlinkNode(Node):
    """A symbolic link."""

    __slots__ = ("target",)

    def __init__(self, meta: Meta, target: str, orig: Dirent | None = None):
        super().__init__(T_SYMLINK, meta, orig)
        self.target = target

    @property
    def size(self) -> int:
        return len(self.target.encode("utf-8", "surrogateescape"))

    def with_object(self, d: Dirent) -> Dirent:
        return replace(d, target=self.target)


class SpecialNode(Node):
    """A device, fifo or socket."""

    __slots__ = ("rdev_tuple",)

    def __init__(self, dtype: int, meta: Meta, rdev=None, orig: Dirent | None = None):
        super().__init__(dtype, meta, orig)
        self.rdev_tuple = rdev

    def rdev(self) -> int:
        import os

        if self.rdev_tuple is None:
            return 0
        return os.makedev(self.rdev_tuple[1], self.rdev_tuple[2])

    def with_object(self, d: Dirent) -> Dirent:
        return replace(d, rdev=self.rdev_tuple)


def default_meta(mode: int, uid: int, gid: int, now: int | None = None) -> Meta:
    """Metadata for a newly created object."""
    now = time.time_ns() if now is None else now
    return Meta(
        mode=statmod.S_IMODE(mode),
        uid=uid,
        gid=gid,
        user=_user_name(uid),
        group=_group_name(gid),
        mtime_ns=now,
        ctime_ns=now,
        atime_ns=now,
    )


_names: dict = {}


def _user_name(uid: int) -> str | None:
    import pwd

    key = ("u", uid)
    if key not in _names:
        try:
            _names[key] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _names[key] = None
    return _names[key]


def _group_name(gid: int) -> str | None:
    import grp

    key = ("g", gid)
    if key not in _names:
        try:
            _names[key] = grp.getgrgid(gid).gr_name
        except KeyError:
            _names[key] = None
    return _names[key]
