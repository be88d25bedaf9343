"""Export dirents to a real filesystem, safely.

Export never writes outside its target: every object is created relative to an
open directory descriptor with `O_NOFOLLOW`/`O_EXCL` semantics, names were checked
when the dirents were decoded (no `/`, NUL, `.` or `..`), and symlinks are never
followed while writing.  Holes (RLE zero leaves) are recreated as holes.
Metadata is restored as far as the running user may: owner by name first, then by
number (root only), then mode (after chown, which clears setuid), xattrs and ACLs,
and times last (directories after their contents).
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat as statmod
from dataclasses import dataclass, field

from vtstore.blocks import RLEBlock
from vtstore.errors import FormatError, VTError
from vtstore.tree.dir import dir_entries
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
from vtstore.tree.meta import cached_lookup

log = logging.getLogger(__name__)

_WRITE_BUFFER = 1 << 20
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class ExportError(VTError):
    """The target cannot be written (exists, not empty, not a directory...)."""


@dataclass
class ExportStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class Exporter:
    """One export run into a target directory."""

    def __init__(self, store, numeric_ids: bool = False, on_file=None):
        self.store = store
        self.numeric_ids = numeric_ids
        self.is_root = os.geteuid() == 0
        self.stats = ExportStats()
        self.on_file = on_file
        self._links: dict[int, tuple[bytes, ...]] = {}
        self._root_fd: int | None = None
        # per export: the user databases may change between runs, not during one
        self._uid_of = cached_lookup(lambda name: pwd.getpwnam(name).pw_uid)
        self._gid_of = cached_lookup(lambda name: grp.getgrnam(name).gr_gid)

    # -- entry point ------------------------------------------------------

    def export(self, dirent: Dirent, target: str) -> ExportStats:
        """Write `dirent` at `target`: a directory's contents go into `target`."""
        target_b = os.fsencode(target)
        if dirent.is_dir:
            try:
                os.mkdir(target_b, 0o700)
            except FileExistsError:
                if not os.path.isdir(target_b) or os.path.islink(target_b):
                    raise ExportError(f"{target} exists and is not a directory") from None
                if os.listdir(target_b):
                    raise ExportError(f"{target} is not empty") from None
            fd = os.open(target_b, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
            self._root_fd = fd
            try:
                self._fill(fd, dirent, ())
                self._apply_meta(fd, None, dirent)
            finally:
                os.close(fd)
                self._root_fd = None
        else:
            parent, name = os.path.split(os.path.abspath(target_b))
            if os.path.lexists(target_b):
                raise ExportError(f"{target} already exists")
            try:
                fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as e:
                raise ExportError(f"{os.fsdecode(parent)}: {e.strerror}") from None
            self._root_fd = fd
            try:
                if dirent.type == T_HARDLINK:
                    raise ExportError("a hard link on its own cannot be exported")
                self._create(fd, name, dirent, ())
            finally:
                os.close(fd)
                self._root_fd = None
        return self.stats

    # -- objects -----------------------------------------------------------

    def _fill(self, dfd: int, d: Dirent, relpath: tuple[bytes, ...]) -> None:
        for e in dir_entries(d, self.store):
            name = fsenc(e.name)
            try:
                self._create(dfd, name, e, relpath + (name,))
            except (VTError, FormatError):
                raise
            except OSError as err:
                shown = b"/".join(relpath + (name,)).decode("utf-8", "replace")
                msg = f"{shown}: {err.strerror or err}"
                log.warning("could not restore %s", msg)
                self.stats.errors.append(msg)

    def _create(self, dfd: int, name: bytes, e: Dirent, relpath: tuple[bytes, ...]) -> None:
        meta = e.meta
        mode = meta.mode if meta is not None and meta.mode is not None else None
        t = e.type
        if t == T_FILE:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dfd)
            try:
                if e.block is not None:
                    self._write_content(fd, e)
                self._apply_meta(fd, None, e)
            finally:
                os.close(fd)
            if e.ino is not None:
                self._links.setdefault(e.ino, relpath or (name,))
            self.stats.files += 1
            if self.on_file:
                self.on_file(self.stats)
        elif t == T_DIR:
            os.mkdir(name, 0o700, dir_fd=dfd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dfd)
            try:
                self._fill(fd, e, relpath)
                self._apply_meta(fd, None, e)
            finally:
                os.close(fd)
            self.stats.dirs += 1
        elif t == T_HARDLINK:
            src = self._links.get(e.ino)
            if src is None:
                raise FormatError(
                    f"hard link {e.name!r} to inode group {e.ino} which no earlier file has"
                )
            os.link(
                b"/".join(src),
                name,
                src_dir_fd=self._root_fd,
                dst_dir_fd=dfd,
                follow_symlinks=False,
            )
            self.stats.files += 1
        elif t == T_SYMLINK:
            os.symlink(fsenc(e.target or ""), name, dir_fd=dfd)
            self._apply_meta(None, (dfd, name), e)
            self.stats.others += 1
        elif t in (T_DEVICE, T_FIFO, T_SOCKET):
            perm = 0o600 if mode is None else mode
            if t == T_FIFO:
                os.mkfifo(name, perm, dir_fd=dfd)
            elif t == T_SOCKET:
                os.mknod(name, perm | statmod.S_IFSOCK, dir_fd=dfd)
            else:
                kind, major, minor = e.rdev
                ftype = statmod.S_IFCHR if kind == "c" else statmod.S_IFBLK
                os.mknod(name, perm | ftype, os.makedev(major, minor), dir_fd=dfd)
            self._apply_meta(None, (dfd, name), e)
            self.stats.others += 1
        elif t == T_WHITEOUT:
            pass

    def _write_content(self, fd: int, e: Dirent) -> None:
        buf = bytearray()
        pos = 0
        hole = False  # the content so far ends with a hole (seeked over)
        store = self.store
        for leaf, start, end in e.block.slices(store):
            n = end - start
            if isinstance(leaf, RLEBlock) and leaf.octet == 0 and n >= 4096:
                if buf:
                    _write_all(fd, buf)
                    buf.clear()
                os.lseek(fd, n, os.SEEK_CUR)
                hole = True
            else:
                buf += leaf.leaf_data(store, start, end)
                hole = False
                if len(buf) >= _WRITE_BUFFER:
                    _write_all(fd, buf)
                    buf.clear()
            pos += n
        if buf:
            _write_all(fd, buf)
        if hole:  # a seek past the end does not make the file longer
            os.ftruncate(fd, pos)
        self.stats.bytes += pos

    def _apply_meta(self, fd: int | None, at: tuple[int, bytes] | None, e: Dirent) -> None:
        """Restore metadata on an open fd, or on `(dir_fd, name)` without following."""
        meta = e.meta
        if meta is None:
            return
        path = fd if fd is not None else at[1]
        kw = {} if fd is not None else {"dir_fd": at[0], "follow_symlinks": False}
        uid = gid = None
        if not self.numeric_ids:
            uid = self._uid_of(meta.user) if meta.user else None
            gid = self._gid_of(meta.group) if meta.group else None
        if uid is None:
            uid = -1 if meta.uid is None else meta.uid
        if gid is None:
            gid = -1 if meta.gid is None else meta.gid
        if (uid != -1 or gid != -1) and (self.is_root or uid in (-1, os.geteuid())):
            try:
                os.chown(path, uid, gid, **kw)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EINVAL):
                    raise
        if meta.mode is not None and not e.is_symlink:
            os.chmod(path, meta.mode, **kw)
        if meta.xattrs:
            xpath = path if fd is not None else f"/proc/self/fd/{at[0]}/".encode() + at[1]
            for xname, value in meta.xattrs:
                try:
                    if fd is not None:
                        os.setxattr(xpath, xname, value)
                    else:
                        os.setxattr(xpath, xname, value, follow_symlinks=False)
                except OSError as err:
                    if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                        raise
                    log.info("xattr %s not restored: %s", xname, err.strerror)
        if meta.mtime_ns is not None:
            atime = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
            os.utime(path, ns=(atime, meta.mtime_ns), **kw)


def _write_all(fd: int, buf) -> None:
    mv = memoryview(buf)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def export_tree(dirent: Dirent, store, target: str, **kw) -> ExportStats:
    """Export `dirent` (its contents, for a directory) to `target`."""
    return Exporter(store, **kw).export(dirent, target)
