"""Creating, linking, removing and renaming entries: a part of `FileSystem`.

`Namespace` is a mixin of `vtstore.fs.filesystem.FileSystem` (as `Storing`
is), split out so each file reads on its own: the operations that change what
names a directory holds.  They use the filesystem's inode table, checks,
dirtiness and link table, and run under its lock like every operation.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from time import time_ns as _now

from vtstore.fs import views
from vtstore.fs.errors import FSError
from vtstore.fs.nodes import DirNode, FileNode, Node, SpecialNode, SymlinkNode, default_meta
from vtstore.tree.dir import decode_dir_data, read_dir_data
from vtstore.tree.dirent import T_DEVICE, T_DIR, T_FIFO, T_SOCKET, Dirent

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class Namespace:
    """mknod, mkdir, symlink, create, link, unlink, rmdir, rename (see the module docstring)."""

    # -- creating --------------------------------------------------------------

    def _new_entry(self, parent: int, name: str, node: Node, uid: int, gid: int):
        d = self._dir(parent)
        self._check_write()
        self._check_name(name)
        if d.unlinked:
            raise FSError(errno.ENOENT)
        kids = self.children(d)
        if name in kids:
            raise FSError(errno.EEXIST)
        if d.meta.mode is not None and d.meta.mode & statmod.S_ISGID:
            # BSD group semantics of a setgid directory, as Linux does
            node.meta = node.meta.with_changes(gid=d.meta.gid, group=d.meta.group)
            if node.type == T_DIR:
                node.meta = node.meta.with_changes(mode=node.meta.mode | statmod.S_ISGID)
        node.parent = d
        node.name = name
        kids[name] = node
        self._touch_dir(d)
        self._touch(node)
        self._remember(node)
        return node.attr(self)

    def mknod(self, parent: int, name: str, mode: int, rdev: int, uid: int, gid: int):
        with self.lock:
            fmt = statmod.S_IFMT(mode)
            meta = default_meta(mode, uid, gid)
            if fmt in (statmod.S_IFREG, 0):
                node: Node = FileNode(meta, None)
            elif fmt == statmod.S_IFIFO:
                node = SpecialNode(T_FIFO, meta)
            elif fmt == statmod.S_IFSOCK:
                node = SpecialNode(T_SOCKET, meta)
            elif fmt in (statmod.S_IFCHR, statmod.S_IFBLK):
                kind = "c" if fmt == statmod.S_IFCHR else "b"
                node = SpecialNode(T_DEVICE, meta, (kind, os.major(rdev), os.minor(rdev)))
            else:
                raise FSError(errno.EINVAL)
            return self._new_entry(parent, name, node, uid, gid)

    def mkdir(self, parent: int, name: str, mode: int, uid: int, gid: int):
        with self.lock:
            return self._new_entry(parent, name, DirNode(default_meta(mode, uid, gid)), uid, gid)

    def symlink(self, parent: int, name: str, target: str, uid: int, gid: int):
        with self.lock:
            node = SymlinkNode(default_meta(0o777, uid, gid), target)
            return self._new_entry(parent, name, node, uid, gid)

    def create(self, parent: int, name: str, mode: int, flags: int, uid: int, gid: int):
        """Create and open a regular file: `(fh, attr)`."""
        with self.lock:
            node = FileNode(default_meta(mode, uid, gid), None)
            attr = self._new_entry(parent, name, node, uid, gid)
            return self._open_node(node, flags), attr

    def link(self, ino: int, parent: int, name: str):
        with self.lock:
            node = self.node(ino)
            d = self._dir(parent)
            self._check_write()
            self._check_name(name)
            if node.type == T_DIR:
                raise FSError(errno.EPERM)
            self._check_view(node)
            if node.unlinked:
                raise FSError(errno.ENOENT)
            kids = self.children(d)
            if name in kids:
                raise FSError(errno.EEXIST)
            new_path = d.path() + (name,)
            if node.gid is None:
                old_path = node.parent.path() + (node.name,)
                g = self.links.new_group(node, {old_path, new_path})
                node.gid = g.gid
                # the old name is re-encoded as the group's file or link dirent
                self._touch(node.parent)
                node.parent = None
            else:
                g = self.links.get(node.gid)
                g.paths.add(new_path)
                self.links.touch(node.gid)
            kids[name] = node
            now = _now()
            node.meta = node.meta.with_changes(ctime_ns=now)
            self._touch(node)
            self._touch_dir(d, now)
            self._remember(node)
            return node.attr(self)

    # -- removing --------------------------------------------------------------

    def _dir_empty(self, d: Node | Dirent) -> bool:
        if isinstance(d, DirNode):
            return not self.children(d)
        return (
            not decode_dir_data(read_dir_data(d.block, self.store))[0]
            if d.block is not None
            else True
        )

    def _detach(self, d: DirNode, name: str) -> None:
        """Remove entry `name` of `d` (checks done by the caller)."""
        kids = self.children(d)
        c = kids[name]
        if isinstance(c, Dirent) and c.is_linked:
            c = self._child(d, name)  # a hard link: its group must hear of it
        del kids[name]
        if isinstance(c, Node):
            self._unlink_node(c, d.path() + (name,))

    def _unlink_node(self, node: Node, path: tuple) -> None:
        if node.gid is not None:
            g = self.links.get(node.gid)
            g.paths.discard(path)
            self.links.touch(node.gid)
            if g.paths or g.outside is not None:
                # other names remain (here, or the group's file outside a sub-path mount)
                node.meta = node.meta.with_changes(ctime_ns=_now())
                return
            self.links.drop(node.gid)
            node.gid = None
        node.unlinked = True
        node.parent = None
        node.meta = node.meta.with_changes(ctime_ns=_now())
        if isinstance(node, FileNode):
            self._writing.discard(node)
            if not node.opens:
                node.top = None
        if node.ino and not node.nlookup and not node.opens:
            self.inodes.pop(node.ino, None)

    def unlink(self, parent: int, name: str) -> None:
        with self.lock:
            d = self._dir(parent)
            self._check_write()
            self._check_append("unlink")
            c = self.children(d).get(name)
            if c is None:
                self._check_not_view(d, name)
            if c.type == T_DIR:
                raise FSError(errno.EISDIR)
            self._detach(d, name)
            self._touch_dir(d)

    def rmdir(self, parent: int, name: str) -> None:
        with self.lock:
            d = self._dir(parent)
            self._check_write()
            self._check_append("rmdir")
            if name == ".":
                raise FSError(errno.EINVAL)
            if name == "..":
                raise FSError(errno.ENOTEMPTY)
            c = self.children(d).get(name)
            if c is None:
                raise FSError(errno.ENOENT)
            if c.type != T_DIR:
                raise FSError(errno.ENOTDIR)
            if not self._dir_empty(c):
                raise FSError(errno.ENOTEMPTY)
            if c.meta is not None and c.meta.xattr(views.ATTR) is not None:
                d.views = None
            self._detach(d, name)
            self._touch_dir(d)

    def rename(self, old_parent: int, old: str, new_parent: int, new: str, flags: int = 0) -> None:
        with self.lock:
            sd = self._dir(old_parent)
            dd = self._dir(new_parent)
            self._check_write()
            self._check_append("rename")
            self._check_name(new)
            skids = self.children(sd)
            dkids = self.children(dd)
            if old not in skids:
                self._check_not_view(sd, old)
            src = self._child(sd, old)
            dst = self._child(dd, new) if new in dkids else None
            if flags & RENAME_EXCHANGE:
                if dst is None:
                    raise FSError(errno.ENOENT)
            elif flags & RENAME_NOREPLACE and dst is not None:
                raise FSError(errno.EEXIST)
            if src is dst:
                return
            for moving, into in ((src, dd), (dst, sd) if flags & RENAME_EXCHANGE else (None, None)):
                if moving is not None and moving.type == T_DIR:
                    a = into
                    while a is not None:
                        if a is moving:
                            raise FSError(errno.EINVAL)
                        a = a.parent
            if dst is not None and not flags & RENAME_EXCHANGE:
                if src.type == T_DIR and dst.type != T_DIR:
                    raise FSError(errno.ENOTDIR)
                if src.type != T_DIR and dst.type == T_DIR:
                    raise FSError(errno.EISDIR)
                if dst.type == T_DIR and not self._dir_empty(dst):
                    raise FSError(errno.ENOTEMPTY)
            now = _now()
            old_path = sd.path() + (old,)
            new_path = dd.path() + (new,)
            for moving in (src, dst):
                if moving is not None and moving.meta.xattr(views.ATTR) is not None:
                    sd.views = dd.views = None  # a directory with a view moves or goes
            if flags & RENAME_EXCHANGE:
                skids[old], dkids[new] = dst, src
                self._moved(dst, sd, old, new_path, old_path)
                self._moved(src, dd, new, old_path, new_path)
            else:
                if dst is not None:
                    self._detach(dd, new)
                del skids[old]
                dkids[new] = src
                self._moved(src, dd, new, old_path, new_path)
            src.meta = src.meta.with_changes(ctime_ns=now)
            self._touch(src)
            self._touch_dir(sd, now)
            self._touch_dir(dd, now)

    def _moved(self, node: Node, parent: DirNode, name: str, old_path, new_path) -> None:
        if node.gid is not None:
            g = self.links.get(node.gid)
            g.paths.discard(old_path)
            g.paths.add(new_path)
            self.links.touch(node.gid)
        else:
            node.parent = parent
            node.name = name
            if node.type == T_DIR:
                self.links.rename_prefix(old_path, new_path)
        self._touch(node)
