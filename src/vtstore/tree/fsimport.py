"""Import a real filesystem tree into a store, as dirents.

Every kind of object is kept: regular files (content through the format-aware
chunker, holes as RLE zero blocks), directories, symlinks, hard links (one inode
group per linked inode; later names become hard-link dirents and are not read
again), devices, fifos and sockets, with their full metadata and xattrs (POSIX
ACLs included).

With a previous state of the same tree, a file whose size, mtime_ns and ctime_ns
are unchanged reuses the previous dirent's content block without reading the file
(the "stat cache"; ctime changes on any write, chmod or rename of the inode).  A
directory whose own ctime and mtime are unchanged keeps its stored metadata the
same way, and one whose entries are all unchanged too is kept as it is.  The
previous directories are read as `EncodedEntry`s (`vtstore.tree.dirscan`): only
what the comparison needs is decoded, and an unchanged entry in a changed
directory is written back as the octets it was stored as.  So the re-import of an
unchanged tree lstats every object but decodes no dirent, reads no file, xattr or
user name, and stores nothing.

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

from vtstore.blocks import Block, LiteralBlock, leaf_block, leaf_blocks
from vtstore.codec import encode_varint
from vtstore.errors import VTError
from vtstore.tree.dir import DIR_VERSION, encode_dir_entries, read_dir_data
from vtstore.tree.dirent import (
    F_BLOCK,
    F_META,
    F_NAME,
    T_DEVICE,
    T_DIR,
    T_FIFO,
    T_FILE,
    T_HARDLINK,
    T_SOCKET,
    T_SYMLINK,
    Dirent,
    fsdec,
    fsenc,
)
from vtstore.tree.dirscan import PLAIN_DIR_FIELDS, EncodedEntry, scan_dir_data

try:  # a plain file's dirent encoded natively, without Meta and Dirent objects
    from vtstore.tree._treecodec import file_dirent as _file_dirent
except ImportError:  # not built (or built before it had it): the objects' way
    _file_dirent = None
from vtstore.tree.filters import Filters
from vtstore.tree.meta import Meta, cached_lookup

log = logging.getLogger(__name__)

MIME_XATTR = "user.mime_type"
#: files smaller than this are blockified in the walking thread, bigger ones in the pool
INLINE_FILE_SIZE = 4 << 20
#: whole small files wait in a batch for one `store.add_many` until their
#: directory closes or the batch holds this many octets or files
SMALL_BATCH_BYTES = 8 << 20
SMALL_BATCH_FILES = 2048
#: blocks queued for the store (`_DeferredAdds`) go to it at this many octets
DEFERRED_BYTES = 1 << 20


@dataclass
class ImportStats:
    """What an import did, for progress lines and tests."""

    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes_read: int = 0
    bytes_reused: int = 0
    files_reused: int = 0
    #: entries left out by the filters (an excluded directory counts once)
    excluded: int = 0
    #: files read because they are new, or changed since the previous state
    files_new: int = 0
    files_changed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_user_name = cached_lookup(lambda uid: pwd.getpwuid(uid).pw_name)
_group_name = cached_lookup(lambda gid: grp.getgrgid(gid).gr_name)


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


def _unchanged(prev: EncodedEntry, st) -> bool:
    """Whether `prev` still describes the (non-directory, unlinked) object of `st`.

    Any write, chmod, chown, xattr change or rename of an inode updates its
    ctime, so equal ctime, mtime, size and type mean the stored dirent is exact.
    """
    return (
        prev.ctime_ns == st.st_ctime_ns
        and prev.mtime_ns == st.st_mtime_ns
        and not prev.has_ino
        and prev.type == _TYPE_OF_MODE.get(statmod.S_IFMT(st.st_mode))
        and (prev.type != T_FILE or prev.span == st.st_size)
    )


def _same_file(prev: EncodedEntry | None, st) -> bool:
    """Whether `prev` is a file of the size, mtime and ctime of `st`: its
    content block stands (its name or link group may have changed)."""
    return (
        prev is not None
        and prev.type == T_FILE
        and prev.span == st.st_size
        and prev.mtime_ns == st.st_mtime_ns
        and prev.ctime_ns == st.st_ctime_ns
    )


_NAME_BIT = 1 << 1
_PLAIN_FILE_FIELDS = (1 << F_NAME) | (1 << F_META) | (1 << F_BLOCK)
_EMPTY_DIR = LiteralBlock(encode_varint(DIR_VERSION) + encode_varint(0))


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
    data = read_small_file(path, size)
    if len(data) <= WHOLE_FILE_MAX:
        return leaf_block(data, store)
    return blockify(data, store, name=name, mime_type=mime_type, threaded=False)


#: files up to this size are one block each, not chunked.  Cutting a 20 KiB
#: file into three blocks saves a few KiB when it is edited, and costs an
#: indirect block of hashcodes, index entries and per-block work for every
#: file.  On our 33,000-file benchmark tree (median file 5 KB) whole files up
#: to 32 KiB made the repository 3.5% smaller (683 -> 656 MiB, with the index
#: compacted) and the first pack 35% faster than chunking them all; restic and
#: borg never cut files this small either (their minimum chunk is 512 KiB).
#: Larger files get content-defined, format-aware cuts as always.
WHOLE_FILE_MAX = 32 * 1024


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


class _DeferredAdds:
    """The store as the walk's small files and directory blocks see it: their
    hashcodes now, the blocks stored later, many directories' worth at a time.

    Directories in real trees are small (the git data set of bench_peers: 3,611
    files in 2,426 directories), so batching per directory made two store
    calls a directory (its files', then its own block), each with a hash call,
    an index transaction and a writer round.  Nothing reads these blocks before
    the import ends (the previous state's blocks are stored already), and
    `flush` stores them before `import_path` returns.  The store hashes them
    again as it adds them (cheap: native BLAKE3), and its hashcodes must be
    these (checked).
    """

    def __init__(self, store, limit_bytes: int, limit_count: int):
        self.store = store
        self._from_data_many = store.hashclass.from_data_many
        self.limit_bytes = limit_bytes
        self.limit_count = limit_count
        self._blocks: list = []  # (hashcodes, datas) of plain blocks
        self._trees: list = []  # and of tree blocks
        self._bytes = 0
        self._count = 0

    def _queue(self, into: list, datas) -> list:
        datas = datas if isinstance(datas, list) else list(datas)
        hs = self._from_data_many(datas)
        into.append((hs, datas))
        self._bytes += sum(map(len, datas))
        self._count += len(datas)
        if self._bytes >= self.limit_bytes or self._count >= self.limit_count:
            self.flush()
        return hs

    def add_many(self, datas) -> list:
        """Queue plain blocks; their hashcodes."""
        return self._queue(self._blocks, datas)

    def add(self, data):
        """Queue one plain block; its hashcode."""
        return self._queue(self._blocks, [data])[0]

    def add_tree_many(self, datas) -> list:
        """Queue tree blocks (directories); their hashcodes."""
        return self._queue(self._trees, datas)

    def tree_view(self) -> _DeferredTreeAdds:
        """What `encode_dir_entries` adds directory blocks through."""
        return _DeferredTreeAdds(self)

    @property
    def chunk_params(self):
        """The store's chunking parameters (blockify cuts with them)."""
        return getattr(self.store, "chunk_params", None)

    def flush(self) -> None:
        """Store everything queued: one `add_many` and one `add_tree_many`."""
        for queued, add in ((self._blocks, self.store.add_many), (self._trees, None)):
            if not queued:
                continue
            if add is None:
                add = self.store.add_tree_many
            hs = [h for q in queued for h in q[0]]
            datas = [d for q in queued for d in q[1]]
            queued.clear()
            if list(add(datas)) != hs:
                raise VTError("the store named blocks other than by their hash (import bug)")
        self._bytes = self._count = 0


class _DeferredTreeAdds:
    """`_DeferredAdds` seen as a tree view: its adds are tree-block adds."""

    __slots__ = ("_d",)

    def __init__(self, deferred: _DeferredAdds):
        self._d = deferred

    def add(self, data):
        return self._d.add_tree_many([data])[0]

    def add_many(self, datas) -> list:
        return self._d.add_tree_many(datas)

    def tree_view(self) -> _DeferredTreeAdds:
        return self


class Importer:
    """One import run: a store, a thread pool, hard-link groups, statistics."""

    def __init__(
        self,
        store,
        workers: int | None = None,
        blockifier=default_file_blockifier,
        on_file: Callable[[ImportStats], None] | None = None,
        one_filesystem: bool = False,
        filters: Filters | None = None,
        salt: bytes | None = None,
        reuse_dir_blocks: bool = True,
    ):
        self.store = store
        # salted directories (FORMATS.md §7): every directory block carries chaff
        # from `salt`; reuse_dir_blocks=False when the previous state's salt differs
        self.salt = salt
        self.reuse_dir_blocks = reuse_dir_blocks
        self.workers = workers or max(2, (os.cpu_count() or 2))
        self.blockifier = blockifier
        self.on_file = on_file
        self.one_filesystem = one_filesystem
        # None when nothing can be excluded: the walk then never builds a path
        self.filters = filters if filters is not None and filters.active else None
        self.stats = ImportStats()
        self._inodes: dict[tuple[int, int], int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._root_dev: int | None = None
        # small files read and waiting for one store.add_many (default blockifier only)
        self._batch: list[_SmallFile] = []
        self._batch_bytes = 0
        self._batching = blockifier is default_file_blockifier
        # small files and directory blocks: stored many directories at a time,
        # in batches of DEFERRED_BYTES (8 MiB ones may leave the compressing
        # thread idle while the walk goes on: the mixed tree's first pack fell
        # from 148 to 123 MB/s at the same CPU)
        self._adds = (
            _DeferredAdds(store, DEFERRED_BYTES, SMALL_BATCH_FILES)
            if hasattr(getattr(store, "hashclass", None), "from_data_many")
            else store
        )
        self._owner_names: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}

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
        prev = EncodedEntry.from_dirent(previous) if previous is not None else None
        with ThreadPoolExecutor(self.workers, thread_name_prefix="vt-import") as pool:
            self._pool = pool
            try:
                item = self._entry(os.fsencode(path), fsenc(name), st, prev)
                self._flush_small()
                if self._adds is not self.store:
                    self._adds.flush()
                if isinstance(item, Future):
                    item = item.result()
                elif type(item) is _SmallFile:
                    item = item.dirent
                return item.dirent() if isinstance(item, EncodedEntry) else item
            finally:
                self._pool = None

    def _error(self, path: str, e: BaseException) -> None:
        msg = f"{path}: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
        log.warning("skipped %s", msg)
        with self.stats.lock:
            self.stats.errors.append(msg)

    def _entry(self, bpath: bytes, key: bytes, st, previous: EncodedEntry | None):
        """The entry for the object at `bpath` named `key`: the previous entry
        itself when it is unchanged, else a Dirent or a Future of one (files)."""
        if statmod.S_ISDIR(st.st_mode):
            return self._dir(bpath, key, st, previous)
        if previous is not None and st.st_nlink == 1 and _unchanged(previous, st):
            # same ctime: neither content, metadata nor xattrs changed since the
            # previous state, so its dirent stands as it is (no read, no listxattr)
            stats = self.stats
            if previous.type == T_FILE:
                with stats.lock:
                    stats.files += 1
                    stats.files_reused += 1
                    stats.bytes_reused += st.st_size
                if self.on_file:
                    self.on_file(stats)
            else:
                with stats.lock:
                    stats.others += 1
            return previous
        return self._new_entry(fsdec(bpath), fsdec(key), st, previous)

    def _new_entry(self, path: str, name: str, st, previous: EncodedEntry | None):
        """A Dirent (or a Future of one) for a changed or new non-directory."""
        mode = st.st_mode
        xattrs = read_xattrs(path)
        if (
            not xattrs
            and _file_dirent is not None
            and st.st_nlink == 1
            and statmod.S_ISREG(mode)
            and not _same_file(previous, st)
        ):
            # most files: no xattrs, one name, new or changed.  Their dirent is
            # encoded natively from the stat result (a Meta, a Dirent and their
            # Python encoding were 40 us a file, a third of the walk's CPU)
            return self._file(path, name, st, None, None, previous)
        meta = meta_of(st, xattrs)
        gid = None
        if st.st_nlink > 1:
            # any non-directory may have several names: the first in walk order
            # carries the object and ino=GID, later ones are hard-link dirents
            key = (st.st_dev, st.st_ino)
            gid = self._inodes.get(key)
            if gid is not None:
                with self.stats.lock:
                    if statmod.S_ISREG(mode):
                        self.stats.files += 1
                    else:
                        self.stats.others += 1
                return Dirent(T_HARDLINK, name=name, ino=gid)
            gid = self._inodes[key] = len(self._inodes) + 1
        if statmod.S_ISREG(mode):
            return self._file(path, name, st, meta, gid, previous)
        with self.stats.lock:
            self.stats.others += 1
        if statmod.S_ISLNK(mode):
            target = fsdec(os.readlink(os.fsencode(path)))
            return Dirent(T_SYMLINK, name=name, meta=meta, target=target, ino=gid)
        if statmod.S_ISCHR(mode) or statmod.S_ISBLK(mode):
            kind = "c" if statmod.S_ISCHR(mode) else "b"
            return Dirent(
                T_DEVICE,
                name=name,
                meta=meta,
                rdev=(kind, os.major(st.st_rdev), os.minor(st.st_rdev)),
                ino=gid,
            )
        if statmod.S_ISFIFO(mode):
            return Dirent(T_FIFO, name=name, meta=meta, ino=gid)
        if statmod.S_ISSOCK(mode):
            return Dirent(T_SOCKET, name=name, meta=meta, ino=gid)
        raise OSError(f"unsupported file type {statmod.S_IFMT(mode):o}")

    def _file(self, path, name, st, meta: Meta | None, gid, previous: EncodedEntry | None):
        """The entry of a regular file (`meta` None: a plain file, see `_new_entry`)."""
        if _same_file(previous, st):
            with self.stats.lock:
                self.stats.files += 1
                self.stats.files_reused += 1
                self.stats.bytes_reused += st.st_size
            if self.on_file:
                self.on_file(self.stats)
            return Dirent(T_FILE, name=name, meta=meta, block=previous.block(), ino=gid)

        def work(store=self.store):
            mime = meta.mime_type if meta is not None else None
            block = self.blockifier(path, store, name, mime, st.st_size)
            with self.stats.lock:
                self.stats.files += 1
                self.stats.bytes_read += block.span
                if previous is None:
                    self.stats.files_new += 1
                else:
                    self.stats.files_changed += 1
            if self.on_file:
                self.on_file(self.stats)
            if meta is None:
                return self._plain_file_entry(fsenc(name), st, block)
            return Dirent(T_FILE, name=name, meta=meta, block=block, ino=gid)

        if self._batching and st.st_size <= WHOLE_FILE_MAX:
            return self._small_file(path, name, st, meta, gid, previous)
        if st.st_size < INLINE_FILE_SIZE:
            # small files: handing them to a thread costs more than chunking them
            # (GIL hand-offs measured 50% slower on a tree of 8 KiB files);
            # their blocks queue with the small files', in the order of old
            # (the frames, and so the repository's size, stay as they were)
            return work(self._adds if self._batching else self.store)
        return self._pool.submit(work)

    def _small_file(self, path, name, st, meta, gid, previous) -> _SmallFile | Dirent:
        """Read a file of one block now and queue it for the next batch add.

        The per-block work of the store (hashing, the index lookup, the writer's
        bookkeeping) then runs once per batch, not once per file: most files of
        a real tree are small (on /usr/share/doc + python3: 89% under 32 KiB).
        """
        data = read_small_file(path, st.st_size)
        if len(data) > WHOLE_FILE_MAX:  # it grew since its lstat: cut it as a big one
            from vtstore.chunking.blockify import blockify

            mime = meta.mime_type if meta is not None else None
            block = blockify(data, self.store, name=name, mime_type=mime, threaded=False)
            if meta is None:
                item = self._plain_file_entry(fsenc(name), st, block)
            else:
                item = Dirent(T_FILE, name=name, meta=meta, block=block, ino=gid)
        else:
            item = _SmallFile(name, meta, gid, data, st)
            self._batch.append(item)
            self._batch_bytes += len(data)
        stats = self.stats
        with stats.lock:
            stats.files += 1
            stats.bytes_read += len(data)
            if previous is None:
                stats.files_new += 1
            else:
                stats.files_changed += 1
        if self.on_file:
            self.on_file(stats)
        if self._batch_bytes >= SMALL_BATCH_BYTES or len(self._batch) >= SMALL_BATCH_FILES:
            self._flush_small()
        return item

    def _flush_small(self) -> None:
        """Add the queued small files to the store in one call; make their dirents."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._batch_bytes = 0
        for f, block in zip(batch, leaf_blocks([f.data for f in batch], self._adds), strict=True):
            if f.meta is None:
                f.dirent = self._plain_file_entry(fsenc(f.name), f.st, block)
            else:
                f.dirent = Dirent(T_FILE, name=f.name, meta=f.meta, block=block, ino=f.gid)
            f.data = None

    def _plain_file_entry(self, key: bytes, st, block: Block) -> EncodedEntry:
        """The entry of a file without xattrs or other names: the octets
        `Dirent.encode` would write, made natively (`_treecodec.file_dirent`)."""
        return self._plain_entry(T_FILE, key, st, block, _PLAIN_FILE_FIELDS)

    def _plain_entry(self, dtype: int, key: bytes, st, block: Block, fields: int) -> EncodedEntry:
        """The entry of a named file or directory without xattrs (nor other
        names): a file's and a directory's dirents then differ only in their
        first octet, the type (name, meta and block fields, in that order)."""
        ids = (st.st_uid, st.st_gid)
        names = self._owner_names.get(ids)
        if names is None:
            user, group = _user_name(st.st_uid), _group_name(st.st_gid)
            names = self._owner_names[ids] = (
                None if user is None else fsenc(user),
                None if group is None else fsenc(group),
            )
        ref = block.encode()
        raw = _file_dirent(
            key,
            statmod.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            names[0],
            names[1],
            st.st_mtime_ns,
            st.st_ctime_ns,
            ref,
        )
        if dtype != T_FILE:
            raw = bytes((dtype,)) + raw[1:]
        n = len(raw)
        return EncodedEntry(
            raw,
            dtype,
            key,
            fields,
            st.st_mtime_ns,
            st.st_ctime_ns,
            block.span,
            n - len(ref),
            n,
        )

    def _dir(self, bpath: bytes, key: bytes, st, previous: EncodedEntry | None):
        """The entry of the directory at `bpath` and everything below it.

        Depth first with an explicit stack of open directories, not recursion:
        a tree thousands of levels deep imports like a flat one.
        """
        stack = [self._open_dir(bpath, key, st, previous, "", None)]
        while True:
            frame = stack[-1]
            child = self._next_subdir(frame)
            if child is not None:
                try:
                    stack.append(self._open_dir(*child))
                except OSError as e:
                    self._error(fsdec(child[0]), e)
                continue
            item = self._close_dir(frame)
            stack.pop()
            if not stack:
                return item
            stack[-1].pending.append((frame.bpath, frame.key, item))

    def _open_dir(
        self, bpath: bytes, key: bytes, st, previous: EncodedEntry | None, rel: str, scope
    ) -> _DirFrame:
        """Start a directory: its previous entries, metadata and sorted names,
        and with filters the rules in force in it (`rel`: its path in the walk)."""
        f = _DirFrame(bpath, key, st, previous)
        f.rel = rel
        if previous is not None and previous.type == T_DIR:
            # the stat cache for the directory itself: its ctime changes with
            # any chmod, chown or xattr change, so its metadata is the stored one
            f.same_meta = (
                previous.ctime_ns == st.st_ctime_ns and previous.mtime_ns == st.st_mtime_ns
            )
            try:
                f.prev_block = previous.block()
                if f.prev_block is not None:
                    data = read_dir_data(f.prev_block, self.store)
                    entries, _ = scan_dir_data(data)
                    f.prev_entries = {e.key: e for e in entries}
            except Exception as e:  # a damaged previous state only costs reuse
                log.warning(
                    "%s: previous state unreadable (%s); reading everything", fsdec(bpath), e
                )
                f.prev_entries = {}
        if not f.same_meta:
            xattrs = read_xattrs(fsdec(bpath))
            if xattrs or _file_dirent is None or not key:
                f.meta = meta_of(st, xattrs)
            else:  # its dirent is made natively (`_plain_dir_entry`)
                f.plain = True
        try:
            f.names = sorted(os.listdir(bpath))
        except OSError as e:
            self._error(fsdec(bpath), e)
        if self.filters is not None:
            try:
                f.scope = self.filters.enter(scope, rel, {fsdec(n) for n in f.names}, fsdec(bpath))
            except VTError as e:  # a bad .vtignore: the directory is skipped, and said
                self._error(fsdec(bpath), e)
                f.names = []
        return f

    def _next_subdir(self, f: _DirFrame):
        """Take `f`'s entries in name order up to the next subdirectory; return
        that one's `(path, name, stat, previous)`, or None when all are taken."""
        names = f.names
        prefix = f.bpath if f.bpath.endswith(b"/") else f.bpath + b"/"
        one_fs = self.one_filesystem
        lstat = os.lstat
        entry = self._entry
        get_prev = f.prev_entries.get
        pending = f.pending
        flt = self.filters
        while f.next < len(names):
            bname = names[f.next]
            f.next += 1
            subpath = prefix + bname
            try:
                sst = lstat(subpath)
                if flt is not None:
                    name = fsdec(bname)
                    rel = f.rel + "/" + name if f.rel else name
                    if self._excluded(f, subpath, rel, name, sst):
                        continue
                if statmod.S_ISDIR(sst.st_mode):
                    if one_fs and sst.st_dev != self._root_dev:
                        continue
                    return subpath, bname, sst, get_prev(bname), rel if flt else "", f.scope
                pending.append((subpath, bname, entry(subpath, bname, sst, get_prev(bname))))
            except OSError as e:
                self._error(fsdec(subpath), e)
        return None

    def _excluded(self, f: _DirFrame, subpath: bytes, rel: str, name: str, st) -> bool:
        """Whether the filters leave out the entry `name` of directory `f`."""
        out = self.filters.leaves_out(f.scope, rel, name, subpath, st)
        if out:
            with self.stats.lock:
                self.stats.excluded += 1
        return out

    def _close_dir(self, f: _DirFrame):
        """Finish a directory whose entries are all taken: its entry."""
        get_prev = f.prev_entries.get
        prev_entries, prev_block, previous = f.prev_entries, f.prev_block, f.previous
        items: list = []
        same = len(f.pending) == len(prev_entries)
        self._flush_small()
        for subpath, bname, item in f.pending:
            if type(item) is _SmallFile:
                item = item.dirent
            elif isinstance(item, Future):
                try:
                    item = item.result()
                except OSError as e:
                    self._error(fsdec(subpath), e)
                    same = False
                    continue
            if same:
                prev = get_prev(bname)
                if prev is None:
                    same = False
                elif type(item) is EncodedEntry:
                    same = item is prev or item.raw == prev.encode()
                else:
                    same = item == prev.dirent()
            items.append((bname, item))
        with self.stats.lock:
            self.stats.dirs += 1
        if prev_block is not None and prev_entries and same and self.reuse_dir_blocks:
            # nothing below changed: the previous encoding is this one too
            block = prev_block
        elif items:
            # unchanged entries are written back as the octets they were read as
            block = encode_dir_entries(((k, e.encode()) for k, e in items), self._adds, self.salt)
        else:
            block = (
                _EMPTY_DIR if self.salt is None else encode_dir_entries((), self._adds, self.salt)
            )
        if (
            f.same_meta
            and block == prev_block
            and previous.fields | _NAME_BIT == PLAIN_DIR_FIELDS
            and previous.key == f.key
        ):
            return previous
        if f.plain:
            return self._plain_entry(T_DIR, f.key, f.st, block, PLAIN_DIR_FIELDS)
        meta = f.meta
        if meta is None:
            meta = previous.dirent().meta
        return Dirent(T_DIR, name=fsdec(f.key), meta=meta, block=block)


class _SmallFile:
    """A small file read and queued for the batch add; its dirent once added."""

    __slots__ = ("name", "meta", "gid", "data", "st", "dirent")

    def __init__(self, name: str, meta: Meta | None, gid: int | None, data: bytes, st):
        self.name = name
        self.meta = meta  # None: a plain file (see Importer._plain_file_entry)
        self.gid = gid
        self.data: bytes | None = data
        self.st = st
        self.dirent: Dirent | EncodedEntry | None = None


class _DirFrame:
    """A directory being imported: what `_open_dir` found, the entries taken so far."""

    __slots__ = (
        "bpath",
        "key",
        "st",
        "previous",
        "prev_block",
        "prev_entries",
        "same_meta",
        "meta",
        "names",
        "next",
        "pending",
        "rel",
        "scope",
        "plain",
    )

    def __init__(self, bpath: bytes, key: bytes, st, previous: EncodedEntry | None):
        self.bpath = bpath
        self.key = key
        self.st = st
        self.previous = previous
        self.prev_block: Block | None = None
        self.prev_entries: dict[bytes, EncodedEntry] = {}
        self.same_meta = False
        self.meta: Meta | None = None
        self.names: list[bytes] = []
        self.next = 0
        self.pending: list = []
        self.rel = ""
        self.scope = None
        self.plain = False  # no xattrs: its dirent made natively


def import_tree(
    path: str, store, previous: Dirent | None = None, **kw
) -> tuple[Dirent, ImportStats]:
    """Import `path` into `store`; return its dirent and the import statistics."""
    imp = Importer(store, **kw)
    d = imp.import_path(path, previous)
    return d, imp.stats
