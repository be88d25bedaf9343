"""POSIX filesystem semantics over a stored tree, independent of FUSE.

`FileSystem` holds the mutable state of one mount: the inode table (number ->
materialised node, forgotten nodes collapse back into dirents), the handle
table, the hard-link table (`links.py`) and the background storer that turns
closed files into blocks (`content.py`).  Operations take and return inode and
handle numbers like the kernel's, raise `FSError(errno)`, and are serialised by
one lock; only storing and block reads run outside it.  `sync()` turns every
change into blocks and returns the new top dirent.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as statmod
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from vtstore.errors import VTError
from vtstore.fs import views
from vtstore.fs.cache import CachingStore, NotCached, PeekStore, Prefetcher
from vtstore.fs.content import ContentChunker, Layer
from vtstore.fs.errors import FSError
from vtstore.fs.handles import HandleTable
from vtstore.fs.links import LinkTable
from vtstore.fs.namespace import RENAME_EXCHANGE, RENAME_NOREPLACE, Namespace  # noqa: F401 (re-exported)
from vtstore.fs.nodes import (
    DirNode,
    FileNode,
    Node,
    SpecialNode,
    SymlinkNode,
    ViewNode,
    _group_name,
    _user_name,
)
from vtstore.fs.refs import REF_NAME_MAX
from vtstore.fs.storing import Storing
from vtstore.tree.dir import decode_dir_data, read_dir_data
from vtstore.tree.dirent import (
    T_DEVICE,
    T_DIR,
    T_FIFO,
    T_FILE,
    T_HARDLINK,
    T_SOCKET,
    T_SYMLINK,
    T_WHITEOUT,
    Dirent,
    fsenc,
)
from vtstore.tree.meta import Meta

log = logging.getLogger(__name__)

ROOT_INO = 1
NAME_MAX = 255
MIME_XATTR = "user.mime_type"
# the xattr namespaces Linux knows; any other name is EOPNOTSUPP, as on tmpfs
XATTR_NAMESPACES = ("user.", "trusted.", "security.", "system.")


class FileHandle:
    __slots__ = ("node", "flags", "next_read", "written", "ahead")

    def __init__(self, node: FileNode, flags: int):
        self.node = node
        self.flags = flags
        self.next_read = 0
        self.ahead = 0  # readahead has been asked up to here
        self.written = False


class DirHandle:
    __slots__ = ("node", "names")

    def __init__(self, node: DirNode, names: list[str]):
        self.node = node
        self.names = names


def _now() -> int:
    return time.time_ns()


class FileSystem(Namespace, Storing):
    """A mounted tree; see the module docstring.

    `root` is the directory dirent to mount.  `readonly` refuses every change
    with EROFS; `append_only` refuses truncation of non-empty files, writes
    before the end of a file, unlinks, rmdirs and renames with EPERM.
    """

    def __init__(
        self,
        store,
        root: Dirent,
        *,
        readonly: bool = False,
        append_only: bool = False,
        scratch_dir: str | None = None,
        cache_bytes: int = 128 * 1024 * 1024,
        workers: int = 2,
        readahead: bool = True,
        outer=None,
        dir_salt: bytes | None = None,
        stream_bytes: int | None = 64 << 20,
    ):
        if not root.is_dir:
            raise FSError(errno.ENOTDIR, f"{root.name or 'the ref'} is not a directory")
        self.backend = store
        self.store = CachingStore(store, cache_bytes)
        self.readonly = readonly or getattr(store, "readonly", False)
        self.append_only = append_only
        self.scratch_dir = scratch_dir
        # exclude rules (vtstore.tree.filters.Filters) set by Mount: what they
        # match lives in the scratch only and is never stored
        self.filters = None
        self.chunker = ContentChunker.for_store(store)
        self.lock = threading.RLock()
        self.inodes: dict[int, Node] = {}
        self._next_ino = ROOT_INO
        self.handles = HandleTable()
        self.links = LinkTable(self.store, root, outer=outer)
        self._read_errors: set = set()
        self.read_errors = 0  # reads that failed on a missing or corrupt block
        self.links.on_error = self.note_read_error
        self.root_name = root.name
        self.root = self._make_node(root)
        self._assign(self.root)
        self.root.nlookup = 1 << 62  # never forgotten
        self._writing: set[FileNode] = set()
        self._forgotten: set[Node] = set()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vt-store")
        self.prefetcher = Prefetcher(self.store) if readahead else None
        self.errors: list[str] = []  # files that could not be stored
        self.generation = 0  # bumped on every change; the mount syncs when it moved
        self.on_sync = None  # called after an explicit sync request (x-vt-control sync)
        self.refresh_root = None  # the history view: called before the top is looked at
        self.on_missing = None  # the refs view: on_missing(name) -> a dirent for the top
        # files of link groups outside a mounted sub-path changed by the last syncs,
        # by their path below the archive's top (Mount.sync writes them there)
        self.outside_changes: dict[tuple[str, ...], Dirent] = {}
        self.view_nodes: dict[tuple[int, str], ViewNode] = {}  # archive-as views, views.py
        self.dir_salt = dir_salt  # salt for directories written (see salt_for)
        # streaming: a file written past this many octets since its layer began is
        # stored while still open (a log, a download), so scratch use stays bounded
        self.stream_bytes = stream_bytes
        self._outer_links = None
        self.closed = False

    def salt_for(self, d: DirNode) -> bytes | None:
        """The salt to encode directory `d` with: its own, else the mount's.

        A salted tree stays salted: a directory without a salt (new, or packed
        before) gets the mounted top's salt, or `dir_salt` (`--salt-dirs`).
        """
        if d.salt is not None:
            return d.salt
        if self.root.salt is not None:
            return self.root.salt
        return self.dir_salt

    # -- inode table ---------------------------------------------------------

    def _assign(self, node: Node) -> int:
        if not node.ino:
            node.ino = self._next_ino
            self._next_ino += 1
            self.inodes[node.ino] = node
        return node.ino

    def node(self, ino: int) -> Node:
        n = self.inodes.get(ino)
        if n is None:
            raise FSError(errno.ESTALE)
        return n

    def _dir(self, ino: int) -> DirNode:
        n = self.node(ino)
        if n.type != T_DIR:
            raise FSError(errno.ENOTDIR)
        return n

    def _make_node(self, d: Dirent) -> Node:
        meta = d.meta if d.meta is not None else Meta()
        t = d.type
        if t == T_DIR:
            if meta.mode is None:
                meta = meta.with_changes(mode=0o755)
            return DirNode(meta, d)
        if meta.mode is None:
            meta = meta.with_changes(mode=0o644)
        if t == T_FILE:
            return FileNode(meta, d.block, d)
        if t == T_SYMLINK:
            return SymlinkNode(meta, d.target or "", d)
        if t in (T_DEVICE, T_FIFO, T_SOCKET):
            return SpecialNode(t, meta, d.rdev, d)
        raise FSError(errno.EIO, f"cannot mount a {d.type_name} dirent")

    # -- damage ----------------------------------------------------------------

    def path_text(self, node: Node) -> str:
        """`node`'s path in the mount, for messages (`?` where it is not known)."""
        if node is self.root:
            return "/"
        if isinstance(node, DirNode):
            return "/" + "/".join(node.path())
        if node.parent is not None:
            return "/" + "/".join(node.parent.path() + (node.name,))
        if node.gid is not None:
            g = self.links.get(node.gid)
            if g is not None and g.paths:
                return "/" + "/".join(g.primary)
        return f"?/{node.name}" if node.name else "?"

    def note_read_error(self, what: str, err: BaseException) -> None:
        """Log a read failure once (the same path and error are not repeated)."""
        key = (what, str(err))
        if key in self._read_errors:
            return
        if len(self._read_errors) < 100_000:
            self._read_errors.add(key)
        self.read_errors += 1
        log.error("%s: %s", what, err)

    def _note_error(self, msg: str) -> None:
        if msg not in self._read_errors:
            self._read_errors.add(msg)
            self.read_errors += 1
            log.error("%s", msg)

    # -- directories' entries ------------------------------------------------------

    def children(self, d: DirNode) -> dict:
        """The entries of `d` (loading them on first use).

        A directory whose blocks cannot be read is EIO (logged once), and stays
        unloaded: a later look tries again.
        """
        if d.children is None:
            kids: dict = {}
            if d.orig is not None and d.orig.block is not None:
                try:
                    entries, salt = decode_dir_data(read_dir_data(d.orig.block, self.store))
                except (VTError, KeyError) as e:
                    self.note_read_error(f"directory {self.path_text(d)}", e)
                    raise FSError(errno.EIO, str(e)) from None
                d.salt = salt
                for e in entries:
                    if e.type != T_WHITEOUT:
                        kids[e.name] = e
            d.children = kids
        return d.children

    def _child(self, d: DirNode, name: str) -> Node | None:
        """The materialised child `name` of `d`, or None."""
        kids = self.children(d)
        c = kids.get(name)
        if c is None or isinstance(c, Node):
            return c
        if c.is_linked:
            gid, g = self.links.group_for(d, c.ino)
            if g is None:
                if c.type != T_HARDLINK:  # an object whose group lost its other names
                    node = self._make_node(c)
                    node.parent = d
                    node.name = name
                    kids[name] = node
                    return node
                where = self.path_text(d).rstrip("/") + "/" + name
                self._note_error(
                    f"hard link {where}: no file of its inode group {c.ino} can be read"
                )
                raise FSError(errno.EIO, f"hard link {name!r} to unknown group {c.ino}")
            if g.node is None:
                node = self._make_node(g.entry)
                node.gid = gid
                node.dirty = False
                g.node = node
            node = g.node
        else:
            node = self._make_node(c)
            node.parent = d
            node.name = name
        kids[name] = node
        return node

    def _remember(self, node: Node) -> None:
        """The kernel learnt of `node` (one more lookup)."""
        self._assign(node)
        node.nlookup += 1
        self._forgotten.discard(node)

    def remember(self, ino: int) -> None:
        with self.lock:
            self._remember(self.node(ino))

    def forget(self, ino: int, n: int) -> None:
        with self.lock:
            node = self.inodes.get(ino)
            if node is None or node is self.root:
                return
            node.nlookup = max(0, node.nlookup - n)
            if node.nlookup == 0:
                self._try_collapse(node)

    def _try_collapse(self, node: Node) -> None:
        """Drop a node nobody uses: clean ones fold back into their dirent."""
        while node is not None and node is not self.root:
            if node.nlookup or node.opens:
                return
            if node.unlinked:
                self.inodes.pop(node.ino, None)
                self._forgotten.discard(node)
                return
            if node.gid is not None:
                return  # hard-linked nodes stay until unmount (they have several parents)
            if node.dirty or (isinstance(node, FileNode) and (node.top or node.frozen)):
                self._forgotten.add(node)
                return
            if isinstance(node, DirNode) and node.children:
                if any(isinstance(c, Node) for c in node.children.values()):
                    self._forgotten.add(node)
                    return
            parent = node.parent
            if (
                parent is None
                or parent.children is None
                or parent.children.get(node.name) is not node
            ):
                self.inodes.pop(node.ino, None)
                return
            parent.children[node.name] = node.to_dirent(node.name, self)
            self.inodes.pop(node.ino, None)
            self._forgotten.discard(node)
            node = parent if parent.nlookup == 0 else None

    # -- dirtiness -------------------------------------------------------------

    def _touch(self, node: Node) -> None:
        """`node` changed: it and its ancestors need encoding at the next sync."""
        self.generation += 1
        if node.gid is not None:
            self.links.touch(node.gid)
            node.dirty = True
            return
        while node is not None and not node.dirty:
            node.dirty = True
            node = node.parent
        # an already-dirty node has dirty ancestors

    def _touch_dir(self, d: DirNode, now: int | None = None) -> None:
        now = _now() if now is None else now
        d.meta = d.meta.with_changes(mtime_ns=now, ctime_ns=now)
        if isinstance(d.cached, Dirent):
            d.cached = None
        self._touch(d)

    # -- checks ----------------------------------------------------------------

    def _check_write(self) -> None:
        if self.readonly:
            raise FSError(errno.EROFS)

    def _check_append(self, what: str) -> None:
        if self.append_only:
            raise FSError(errno.EPERM, f"{what} refused: the mount is append-only")

    @staticmethod
    def _check_name(name: str) -> None:
        if len(fsenc(name)) > NAME_MAX:
            raise FSError(errno.ENAMETOOLONG)
        if "/" in name or "\0" in name or not name:
            raise FSError(errno.EINVAL)

    @staticmethod
    def _check_view(node: Node) -> None:
        if isinstance(node, ViewNode):
            raise FSError(errno.EPERM, "an archive-as view cannot be changed")

    def _check_not_view(self, d: DirNode, name: str) -> None:
        """A missing entry `name` of `d`: EPERM if it is a view, else ENOENT."""
        if name in views.views_of(self, d):
            raise FSError(errno.EPERM, "an archive-as view cannot be changed")
        raise FSError(errno.ENOENT)

    def outer_links(self):
        """Hard-link groups of the whole stored tree, for views of its directories."""
        if self.links.outer is not None:
            return self.links.outer
        top = self.root.synced
        if top is None or top.block is None:
            return None
        if self._outer_links is None or self._outer_links.root != top:
            from vtstore.tree.links import LinkResolver

            self._outer_links = LinkResolver(top, self.store)
        return self._outer_links

    @staticmethod
    def _check_xattr_name(name: str) -> None:
        if not name.startswith(XATTR_NAMESPACES):
            raise FSError(errno.EOPNOTSUPP)

    # -- attributes ------------------------------------------------------------

    def lookup(self, parent: int, name: str):
        """The attributes of `name` in directory `parent` (counted as a lookup)."""
        with self.lock:
            d = self._dir(parent)
            if self.refresh_root is not None and (d is self.root or d.parent is self.root):
                self.refresh_root(self)  # the history views: states recorded meanwhile
            if name == ".":
                node = d
            elif name == "..":
                node = d.parent or d
            else:
                # FUSE passes names up to 1024 octets; POSIX says ENAMETOOLONG past
                # NAME_MAX (the refs view's top takes refs, which are longer)
                refs = d is self.root and self.on_missing is not None
                if len(fsenc(name)) > (REF_NAME_MAX if refs else NAME_MAX):
                    raise FSError(errno.ENAMETOOLONG)
                node = self._child(d, name)
                if node is None and refs:
                    e = self.on_missing(name)
                    if e is not None:
                        self.children(d)[name] = e
                        node = self._child(d, name)
                if node is None:
                    node = views.view_node(self, d, name)
                if node is None:
                    raise FSError(errno.ENOENT)
            self._remember(node)
            return node.attr(self)

    def getattr(self, ino: int):
        with self.lock:
            return self.node(ino).attr(self)

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ):
        with self.lock:
            node = self.node(ino)
            self._check_write()
            self._check_view(node)
            now = _now()
            m = node.meta
            kw: dict = {}
            if size is not None:
                if node.type == T_DIR:
                    raise FSError(errno.EISDIR)
                if node.type != T_FILE:
                    raise FSError(errno.EINVAL)
                cur = node.size
                if size < cur and self.append_only:
                    self._check_append("truncation")
                if size != cur:
                    node.layer(self.scratch_dir).truncate(size)
                    self._writing.add(node)
                kw["mtime_ns"] = now
            if mode is not None:
                kw["mode"] = statmod.S_IMODE(mode)
            if uid is not None and uid != 0xFFFFFFFF and uid != -1:
                kw["uid"] = uid
                kw["user"] = _user_name(uid)
            if gid is not None and gid != 0xFFFFFFFF and gid != -1:
                kw["gid"] = gid
                kw["group"] = _group_name(gid)
            if atime_ns is not None:
                kw["atime_ns"] = atime_ns
            if mtime_ns is not None:
                kw["mtime_ns"] = mtime_ns
            kw["ctime_ns"] = now
            node.meta = m.with_changes(**kw)
            self._touch(node)
            return node.attr(self)

    def readlink(self, ino: int) -> str:
        with self.lock:
            node = self.node(ino)
            if node.type != T_SYMLINK:
                raise FSError(errno.EINVAL)
            return node.target

    # -- files -----------------------------------------------------------------

    def _open_node(self, node: FileNode, flags: int) -> int:
        node.opens += 1
        self._assign(node)
        return self.handles.add(FileHandle(node, flags))

    def open(self, ino: int, flags: int) -> int:
        with self.lock:
            node = self.node(ino)
            if node.type == T_DIR:
                raise FSError(errno.EISDIR)
            if node.type != T_FILE:
                raise FSError(errno.ENXIO)
            if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
                self._check_write()
                if isinstance(node, ViewNode):
                    raise FSError(errno.EACCES, "an archive-as view is read-only")
            if flags & os.O_TRUNC and node.size and self.append_only:
                self._check_append("truncation")
            fh = self._open_node(node, flags)
            if flags & os.O_TRUNC and node.size:
                node.layer(self.scratch_dir).truncate(0)
                self._writing.add(node)
                now = _now()
                node.meta = node.meta.with_changes(mtime_ns=now, ctime_ns=now)
                self._touch(node)
            return fh

    def read(self, fh: int, offset: int, size: int, peek: bool = False) -> bytes | None:
        """Up to `size` octets at `offset`; with `peek`, None if the store must be read."""
        with self.lock:
            h = self.handles.get(fh)
            view = h.node.view
        store = PeekStore(self.store) if peek else self.store
        try:
            if isinstance(view, Layer):
                return view.read(store, offset, size)
            end = min(offset + size, view.span)
            if offset >= end:
                return b""
            data = view.read(store, offset, end)
        except NotCached:
            return None
        except (VTError, KeyError) as e:
            # a missing or corrupt block: this read fails, the rest of the file does not
            with self.lock:
                what = f"file {self.path_text(h.node)}"
            self.note_read_error(what, e)
            raise FSError(errno.EIO, str(e)) from None
        pf = self.prefetcher
        if pf is not None and offset == h.next_read and end < view.span:
            # sequential: keep one window of leaves loading ahead of the reader
            if h.ahead < end + pf.window // 2:
                start = max(h.ahead, end)
                pf.prefetch(view, start)
                h.ahead = start + pf.window
        h.next_read = end
        return data

    def write(self, fh: int, offset: int, data) -> int:
        with self.lock:
            h = self.handles.get(fh)
            node = h.node
            self._check_write()
            if node.unlinked and not node.opens:
                raise FSError(errno.EBADF)
            if self.append_only and offset < node.size:
                self._check_append("overwrite")
            layer = node.layer(self.scratch_dir)
            layer.write(offset, data)
            self._writing.add(node)
            if self.stream_bytes and layer.written >= self.stream_bytes and not node.unlinked:
                self._freeze(node)  # store what was written so far; a new layer takes the rest
            now = _now()
            node.meta = replace(node.meta, mtime_ns=now, ctime_ns=now)
            if not node.dirty:
                self._touch(node)
            else:
                self.generation += 1
            h.written = True
            return len(data)

    def flush(self, fh: int) -> None:
        """close(2) of one descriptor: start storing, never wait for it."""
        with self.lock:
            h = self.handles.get(fh)
            self._freeze(h.node)

    def release(self, fh: int) -> None:
        with self.lock:
            h = self.handles.remove(fh)
            node = h.node
            node.opens -= 1
            if node.unlinked:
                if not node.opens:
                    node.top = None
                    node.frozen = []
                    if not node.nlookup:
                        self.inodes.pop(node.ino, None)
                return
            self._freeze(node)
            if not node.nlookup and not node.opens:
                self._try_collapse(node)

    def fsync(self, fh: int) -> None:
        """Store the file's content now (the caller then syncs the tree)."""
        with self.lock:
            node = self.handles.get(fh).node
            layers = self._freeze(node)
        self._wait(layers)

    # -- directories -------------------------------------------------------------

    def opendir(self, ino: int) -> int:
        with self.lock:
            d = self._dir(ino)
            if self.refresh_root is not None and (d is self.root or d.parent is self.root):
                self.refresh_root(self)
            kids = self.children(d)
            names = list(kids) + [n for n in views.views_of(self, d) if n not in kids]
            return self.handles.add(DirHandle(d, names))

    def readdir(self, fh: int, start: int):
        """Entries from cookie `start`: `(name, attr, next_cookie, node)`.

        Cookies index the listing taken at opendir, so they stay valid whatever
        changes meanwhile: removed names are skipped, new ones are not shown.
        `.` and `..` come first (cookies 1 and 2); the caller calls `remember`
        for each entry it passed on (except those two).
        """
        with self.lock:
            h = self.handles.get(fh)
            d = h.node
            out = []
            if start < 1:
                out.append((".", d.attr(self), 1, None))
            if start < 2:
                p = d.parent or d
                out.append(("..", p.attr(self), 2, None))
            kids = self.children(d)
            for i in range(max(0, start - 2), len(h.names)):
                name = h.names[i]
                try:
                    if name in kids:
                        node = self._child(d, name)
                    else:
                        node = views.view_node(self, d, name)
                        if node is None:
                            continue
                except FSError:  # a hard link whose file cannot be found (logged)
                    continue
                self._assign(node)
                if not node.nlookup:
                    self._forgotten.add(node)
                out.append((name, node.attr(self), i + 3, node))
                if len(out) >= 128:
                    break
            return out

    def releasedir(self, fh: int) -> None:
        with self.lock:
            self.handles.remove(fh)

    # -- xattrs ------------------------------------------------------------------

    def getxattr(self, ino: int, name: str) -> bytes:
        from vtstore.fs import control

        if name.startswith(control.PREFIX):
            return control.get(self, ino, name)
        self._check_xattr_name(name)
        with self.lock:
            v = self.node(ino).meta.xattr(name)
            if v is None:
                raise FSError(errno.ENODATA)
            return v

    def setxattr(self, ino: int, name: str, value: bytes) -> None:
        from vtstore.fs import control

        if name.startswith(control.PREFIX):
            return control.set(self, ino, name, value)
        self._check_xattr_name(name)
        with self.lock:
            node = self.node(ino)
            self._check_write()
            self._check_view(node)
            if name == views.ATTR:
                views.changed(node)
            xs = dict(node.meta.xattrs)
            xs[name] = bytes(value)
            kw: dict = {"xattrs": tuple(sorted(xs.items())), "ctime_ns": _now()}
            if name == MIME_XATTR:
                kw["mime_type"] = bytes(value).decode("utf-8", "replace")
            node.meta = node.meta.with_changes(**kw)
            self._touch(node)

    def listxattr(self, ino: int) -> list[str]:
        with self.lock:
            return [n for n, _ in self.node(ino).meta.xattrs]

    def removexattr(self, ino: int, name: str) -> None:
        if name == views.CONTROL:
            name = views.ATTR
        self._check_xattr_name(name)
        with self.lock:
            node = self.node(ino)
            self._check_write()
            self._check_view(node)
            if name == views.ATTR:
                views.changed(node)
            xs = dict(node.meta.xattrs)
            if name not in xs:
                raise FSError(errno.ENODATA)
            del xs[name]
            kw: dict = {"xattrs": tuple(sorted(xs.items())), "ctime_ns": _now()}
            if name == MIME_XATTR:
                kw["mime_type"] = None
            node.meta = node.meta.with_changes(**kw)
            self._touch(node)

    # -- the filesystem ----------------------------------------------------------

    def statfs(self) -> dict:
        """Capacity of the disk under the store, block count of the store."""
        path = getattr(self.backend, "path", None)
        bsize = 4096
        blocks = bfree = 1 << 40
        if path is not None:
            try:
                st = os.statvfs(path)
                bsize, blocks, bfree = st.f_frsize, st.f_blocks, st.f_bavail
            except OSError:
                pass
        try:
            nblocks = len(self.backend)
        except Exception:
            nblocks = 0
        return {
            "bsize": bsize,
            "frsize": bsize,
            "blocks": blocks,
            "bfree": bfree,
            "bavail": bfree,
            "files": nblocks + len(self.inodes),
            "ffree": 1 << 32,
            "favail": 1 << 32,
            "namemax": NAME_MAX,
        }

    def close(self) -> None:
        """Stop the background threads (call `sync` first to keep changes)."""
        if self.closed:
            return
        self.closed = True
        self._pool.shutdown(wait=True)
        if self.prefetcher is not None:
            self.prefetcher.close()
