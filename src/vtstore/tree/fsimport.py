"""Import a real filesystem tree into a store, as dirents.

Every kind of object is kept: regular files (content through the format-aware
chunker, holes as RLE zero blocks), directories, symlinks, hard links (one inode
group per linked inode; later names become hard-link dirents and are not read
again), devices, fifos and sockets, with their full metadata and xattrs (POSIX
ACLs included).

With a previous state of the same tree, a file whose size, mtime_ns and ctime_ns
are unchanged reuses the previous dirent's content block without reading the file
(the "stat cache"; ctime changes on any write, chmod or rename of the inode).

File contents are blockified in a small thread pool, so reading, chunking, hashing
and compressing overlap on all cores (the hashers, zstd and the chunker release
the GIL).  Errors on single objects (unreadable file, vanished entry) are logged,
counted and skipped, like tar and rsync do; the caller decides the exit code.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat as statmod
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from vtstore.blocks import Block
from vtstore.tree.dir import dir_entries, make_dir
from vtstore.tree.dirent import (
    T_DEVICE,
    T_DIR,
    T_FIFO,
    T_FILE,
    T_HARDLINK,
    T_SOCKET,
    T_SYMLINK,
    Dirent,
    fsdec,
)
from vtstore.tree.meta import Meta

log = logging.getLogger(__name__)

MIME_XATTR = "user.mime_type"
#: files smaller than this are blockified in the walking thread, bigger ones in the pool
INLINE_FILE_SIZE = 4 << 20


@dataclass
class ImportStats:
    """What an import did, for progress lines and tests."""

    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes_read: int = 0
    bytes_reused: int = 0
    files_reused: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _names_cache(fn: Callable[[int], str]):
    cache: dict[int, str | None] = {}

    def lookup(n: int) -> str | None:
        if n not in cache:
            try:
                cache[n] = fn(n)
            except KeyError:
                cache[n] = None
        return cache[n]

    return lookup


_user_name = _names_cache(lambda uid: pwd.getpwuid(uid).pw_name)
_group_name = _names_cache(lambda gid: grp.getgrgid(gid).gr_name)


def read_xattrs(path: str | int) -> list[tuple[str, bytes]]:
    """All extended attributes of `path` (not following symlinks) or of an open fd."""
    follow = isinstance(path, int)
    try:
        names = os.listxattr(path, follow_symlinks=follow) if not follow else os.listxattr(path)
    except OSError:
        return []
    out = []
    for n in names:
        try:
            v = os.getxattr(path, n, follow_symlinks=follow) if not follow else os.getxattr(path, n)
        except OSError:
            continue
        out.append((n, v))
    return out


def meta_of(st, xattrs) -> Meta:
    """Metadata from a stat result and xattrs."""
    mime = None
    for n, v in xattrs:
        if n == MIME_XATTR:
            try:
                mime = v.decode()
            except UnicodeDecodeError:
                pass
    return Meta.from_stat(
        st,
        xattrs=xattrs,
        user=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        mime_type=mime,
    )


_TYPE_OF_MODE = {
    statmod.S_IFREG: T_FILE,
    statmod.S_IFLNK: T_SYMLINK,
    statmod.S_IFCHR: T_DEVICE,
    statmod.S_IFBLK: T_DEVICE,
    statmod.S_IFIFO: T_FIFO,
    statmod.S_IFSOCK: T_SOCKET,
}


def _unchanged(prev: Dirent, st) -> bool:
    """Whether `prev` still describes the (non-directory, unlinked) object of `st`.

    Any write, chmod, chown, xattr change or rename of an inode updates its
    ctime, so equal ctime, mtime, size and type mean the stored dirent is exact.
    """
    m = prev.meta
    return (
        m is not None
        and m.ctime_ns == st.st_ctime_ns
        and m.mtime_ns == st.st_mtime_ns
        and prev.ino is None
        and prev.type == _TYPE_OF_MODE.get(statmod.S_IFMT(st.st_mode))
        and (prev.type != T_FILE or (prev.block is not None and prev.block.span == st.st_size))
    )


def default_file_blockifier(path: str, store, name: str, mime_type: str | None, size: int) -> Block:
    """Blockify one file's content with the format-aware chunker.

    A file under the chunker's buffer size is read whole, in one `read`, and
    chunked in the calling worker thread: a reader thread, a stream window and a
    4 MiB buffer per file would cost more than the file itself (small-file trees
    pack 3x faster this way).
    """
    from vtstore.chunking.blockify import BUFFER_SIZE, blockify

    if size >= BUFFER_SIZE:
        return blockify(path, store, name=name, mime_type=mime_type)
    return blockify(
        read_small_file(path, size), store, name=name, mime_type=mime_type, threaded=False
    )


def read_small_file(path: str, size: int) -> bytes:
    """The whole content of a small file, with as few system calls as possible.

    `os.open` + `os.read` instead of `open()`: no fstat, lseek or isatty ioctl,
    which were a third of the system calls of a small-file pack.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        # the file grew since its lstat: take what is there now
        parts = [data]
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


class Importer:
    """One import run: a store, a thread pool, hard-link groups, statistics."""

    def __init__(
        self,
        store,
        workers: int | None = None,
        blockifier=default_file_blockifier,
        on_file: Callable[[ImportStats], None] | None = None,
        one_filesystem: bool = False,
    ):
        self.store = store
        self.workers = workers or max(2, (os.cpu_count() or 2))
        self.blockifier = blockifier
        self.on_file = on_file
        self.one_filesystem = one_filesystem
        self.stats = ImportStats()
        self._inodes: dict[tuple[int, int], int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._root_dev: int | None = None

    def import_path(
        self, path: str, previous: Dirent | None = None, name: str | None = None
    ) -> Dirent:
        """Import the object at `path` (a file, directory, ...) and return its dirent."""
        st = os.lstat(path)
        self._root_dev = st.st_dev
        if name is None:
            name = fsdec(os.fsencode(os.path.basename(os.path.normpath(path))))
            if name in ("", ".", "..", "/"):
                name = ""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="vt-import") as pool:
            self._pool = pool
            try:
                fut = self._entry(path, name, st, previous)
                return fut.result() if isinstance(fut, Future) else fut
            finally:
                self._pool = None

    def _error(self, path: str, e: BaseException) -> None:
        msg = f"{path}: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
        log.warning("skipped %s", msg)
        with self.stats.lock:
            self.stats.errors.append(msg)

    def _entry(self, path: str, name: str, st, previous: Dirent | None):
        """A dirent, or a Future of one for regular files."""
        mode = st.st_mode
        if statmod.S_ISDIR(mode):
            return self._dir(path, name, st, previous)
        if previous is not None and st.st_nlink == 1 and _unchanged(previous, st):
            # same ctime: neither content, metadata nor xattrs changed since the
            # previous state, so its dirent stands as it is (no read, no listxattr)
            with self.stats.lock:
                if previous.type == T_FILE:
                    self.stats.files += 1
                    self.stats.files_reused += 1
                    self.stats.bytes_reused += st.st_size
                else:
                    self.stats.others += 1
            if self.on_file and previous.type == T_FILE:
                self.on_file(self.stats)
            return previous
        xattrs = read_xattrs(path)
        meta = meta_of(st, xattrs)
        if statmod.S_ISREG(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                gid = self._inodes.get(key)
                if gid is not None:
                    with self.stats.lock:
                        self.stats.files += 1
                    return Dirent(T_HARDLINK, name=name, ino=gid)
                gid = self._inodes[key] = len(self._inodes) + 1
            else:
                gid = None
            return self._file(path, name, st, meta, gid, previous)
        with self.stats.lock:
            self.stats.others += 1
        if statmod.S_ISLNK(mode):
            target = fsdec(os.readlink(os.fsencode(path)))
            return Dirent(T_SYMLINK, name=name, meta=meta, target=target)
        if statmod.S_ISCHR(mode) or statmod.S_ISBLK(mode):
            kind = "c" if statmod.S_ISCHR(mode) else "b"
            return Dirent(
                T_DEVICE,
                name=name,
                meta=meta,
                rdev=(kind, os.major(st.st_rdev), os.minor(st.st_rdev)),
            )
        if statmod.S_ISFIFO(mode):
            return Dirent(T_FIFO, name=name, meta=meta)
        if statmod.S_ISSOCK(mode):
            return Dirent(T_SOCKET, name=name, meta=meta)
        raise OSError(f"unsupported file type {statmod.S_IFMT(mode):o}")

    def _file(self, path, name, st, meta, gid, previous):
        prev = previous if previous is not None and previous.type == T_FILE else None
        if (
            prev is not None
            and prev.block is not None
            and prev.meta is not None
            and prev.block.span == st.st_size
            and prev.meta.mtime_ns == st.st_mtime_ns
            and prev.meta.ctime_ns == st.st_ctime_ns
        ):
            with self.stats.lock:
                self.stats.files += 1
                self.stats.files_reused += 1
                self.stats.bytes_reused += st.st_size
            if self.on_file:
                self.on_file(self.stats)
            return Dirent(T_FILE, name=name, meta=meta, block=prev.block, ino=gid)

        def work():
            block = self.blockifier(path, self.store, name, meta.mime_type, st.st_size)
            with self.stats.lock:
                self.stats.files += 1
                self.stats.bytes_read += block.span
            if self.on_file:
                self.on_file(self.stats)
            return Dirent(T_FILE, name=name, meta=meta, block=block, ino=gid)

        if st.st_size < INLINE_FILE_SIZE:
            # small files: handing them to a thread costs more than chunking them
            # (GIL hand-offs measured 50% slower on a tree of 8 KiB files)
            return work()
        return self._pool.submit(work)

    def _dir(self, path: str, name: str, st, previous: Dirent | None) -> Dirent:
        prev_entries: dict[str, Dirent] = {}
        if previous is not None and previous.is_dir:
            try:
                prev_entries = {e.name: e for e in dir_entries(previous, self.store)}
            except Exception as e:  # a damaged previous state only costs reuse
                log.warning("%s: previous state unreadable (%s); reading everything", path, e)
        xattrs = read_xattrs(path)
        meta = meta_of(st, xattrs)
        try:
            with os.scandir(os.fsencode(path)) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            self._error(path, e)
            names = []
        pending: list = []
        for bname in names:
            sub = os.path.join(path, fsdec(bname))
            subpath = os.path.join(os.fsencode(path), bname)
            ename = fsdec(bname)
            try:
                sst = os.lstat(subpath)
                if (
                    self.one_filesystem
                    and statmod.S_ISDIR(sst.st_mode)
                    and sst.st_dev != self._root_dev
                ):
                    continue
                pending.append(
                    (sub, self._entry(fsdec(subpath), ename, sst, prev_entries.get(ename)))
                )
            except OSError as e:
                self._error(sub, e)
        entries = []
        for sub, item in pending:
            if isinstance(item, Future):
                try:
                    item = item.result()
                except OSError as e:
                    self._error(sub, e)
                    continue
            entries.append(item)
        with self.stats.lock:
            self.stats.dirs += 1
        if previous is not None and previous.block is not None and prev_entries:
            if entries == list(prev_entries.values()):
                # nothing below changed: the previous encoding is this one too
                return Dirent(T_DIR, name=name, meta=meta, block=previous.block)
        return make_dir(entries, self.store, name=name, meta=meta)


def import_tree(
    path: str, store, previous: Dirent | None = None, **kw
) -> tuple[Dirent, ImportStats]:
    """Import `path` into `store`; return its dirent and the import statistics."""
    imp = Importer(store, **kw)
    d = imp.import_path(path, previous)
    return d, imp.stats
