"""Export dirents to a real filesystem, safely, and past damage.

This module holds the walk, the policy (names, limits, damage, hard links,
metadata and its order) and the public API (`export_tree`, `Exporter`,
`ExportStats`, `damaged_name`, ...); the writer half (file jobs, batches, the
pool of writing threads, pwrite/pwritev) is in `vtstore.tree.fswrite`.

Export never writes outside its target: every object is created relative to an
open directory descriptor with `O_NOFOLLOW`/`O_EXCL` semantics, names were checked
when the dirents were decoded (no `/`, NUL, `.` or `..`), and symlinks are never
followed while writing.  Holes (RLE zero leaves) are recreated as holes.
Metadata is restored as far as the running user may: owner by name first, then by
number (root only), then mode (after chown, which clears setuid), xattrs and ACLs,
and times last (directories after their contents).

Speed: the walk runs ahead of the writing.  It gathers the stored leaves of the
next files (across many small files, up to `BATCH_LEAVES` leaves or
`BATCH_BYTES`) and reads them with one `store.get_many` (`salvage.fetch_leaves`:
past damage leaf by leaf, so a bad leaf still costs only its range); a small
pool of threads (`threads`, both cores: the GIL is released in the system calls)
creates the files, writes each contiguous run with one `pwrite`/`pwritev` of the
fetched buffers (no copies; holes are skipped), and sets metadata on the open fd,
leaving out calls that would change nothing.  Order is kept where it matters: a
directory's metadata is set after its last file is written (by whichever thread
finishes it), a hard link waits for its target, and the bytes in flight are
bounded (`MAX_IN_FLIGHT`), so memory does not grow with file or tree size.

Damage (a missing or corrupt block, a directory block that does not decode) does
not stop a restore: a file whose content cannot all be read is written as
`NAME.vt-damaged`, every readable range in place and every unreadable one a hole
(reads as zeros); a directory whose entries cannot all be read gets the entries
that can; each is recorded in `ExportStats.damaged`.  Errors of the target (a
full disk, a read-only filesystem) stop the restore.  The walk is iterative and
keeps a bounded number of directories open, so depth is limited only by the
filesystem.  Limits on entries and bytes are checked before anything is written
(see `tree_totals`), so a tree whose directories share children cannot expand
to millions of files on disk.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat as statmod
import threading
from dataclasses import dataclass, field

from vtstore.errors import FormatError, VTError
from vtstore.tree.dirent import (
    GROUP_TYPES,
    T_DEVICE,
    T_DIR,
    T_FIFO,
    T_FILE,
    T_HARDLINK,
    T_SOCKET,
    T_SYMLINK,
    T_WHITEOUT,
    Dirent,
    fsdec,
    fsenc,
)

# the writer half (its constants are importable from here as before)
from vtstore.tree.fswrite import (
    _NOFOLLOW,
    BATCH_BYTES,  # noqa: F401
    BATCH_ENTRIES,
    BATCH_LEAVES,  # noqa: F401
    DEFAULT_THREADS,
    FATAL_ERRNOS,
    FETCH_THREADS,
    MAX_IN_FLIGHT,  # noqa: F401
    MAX_OPEN_FILES,  # noqa: F401
    FileWriter,
    _FileJob,
    _Pool,
)
from vtstore.tree.meta import cached_lookup
from vtstore.tree.salvage import (
    BAD,
    DAMAGE,
    DATA,
    FILL,
    LEAF,
    Damage,
    LimitError,
    iter_content,
    read_entries,
    tree_totals,
)

log = logging.getLogger(__name__)

_WRITE_BUFFER = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
#: directories kept open on the way down; deeper ones are reopened by name
_MAX_OPEN_DIRS = 64
#: the suffix of a file restored with unreadable ranges
DAMAGED_SUFFIX = ".vt-damaged"
#: the prefix of a file being rewritten by --resume (renamed over the old one)
PART_PREFIX = ".vt-part-"
#: default --max-files
DEFAULT_MAX_FILES = 10_000_000
#: xattr namespaces `safe` restores none of (file capabilities are security.capability)
UNSAFE_XATTR_PREFIXES = ("security.", "trusted.")


class ExportError(VTError):
    """The target cannot be written (exists, not empty, not a directory...)."""


@dataclass
class ExportStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    skipped: int = 0  # --resume: already in place
    unsafe_skipped: int = 0  # safe: device nodes not created
    errors: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return self.files + self.dirs + self.others

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "others": self.others,
            "bytes": self.bytes,
            "skipped": self.skipped,
            "unsafe_skipped": self.unsafe_skipped,
            "errors": self.errors,
            "damaged": [
                {"path": d.path, "kind": d.kind, "what": d.what, "lost_bytes": d.lost_bytes}
                for d in self.damaged
            ],
        }


# -- the exporter ----------------------------------------------------------------

#: directory data kept from measuring the tree (`tree_totals`) for the walk, at most
KEEP_DIR_BYTES = 16 << 20


class _KeptBlocks:
    """The store, keeping the blocks read through it (up to `KEEP_DIR_BYTES`)
    until they are read again: a restore measures the tree before it writes
    (its limits), then walks it, and each directory's data is read once, not
    twice.  Blocks come verified from the store; only single reads (a
    directory's leaves) are kept."""

    def __init__(self, store):
        self.store = store
        self.kept: dict = {}
        self.room = KEEP_DIR_BYTES
        self.keeping = True  # off once measured: the walk only takes back

    def __getitem__(self, h):
        data = self.kept.pop(h, None)
        if data is None:
            data = self.store[h]
            if self.keeping and len(data) <= self.room:
                self.kept[h] = data
                self.room -= len(data)
        else:
            self.room += len(data)  # read twice: measured, then walked
        return data

    def __getattr__(self, name):
        return getattr(self.store, name)


class _Frame:
    """A directory on the way down: its fd (None when closed to save fds), and
    its files still being written (its metadata waits for them)."""

    __slots__ = (
        "fd", "dirent", "rel", "entries", "i", "pending", "walked", "is_root", "slot", "perm",
    )  # fmt: skip
    _count = 0

    def __init__(self, fd, dirent, rel, entries, perm=None):
        _Frame._count += 1
        self.perm = perm  # the mode it was made with by this export (None: it was there)
        self.slot = _Frame._count  # which writing thread creates its files
        self.fd = fd
        self.dirent = dirent
        self.rel = rel
        self.entries = entries
        self.i = 0
        self.pending = 0
        self.walked = False
        self.is_root = False


class Exporter(FileWriter):
    """One export run into a target directory.

    `resume`: None (the target must be empty), "quick" (complete an existing
    target: files of the same size and mtime, symlinks with the same target,
    ... are kept, others rewritten under a temporary name and renamed into place)
    or "verify" (also compare kept files' content with the tree's hashcodes).
    `safe`: create no device nodes, clear setuid/setgid on non-directories and
    restore no `security.*`/`trusted.*` xattrs (file capabilities among them).
    `links`: an object with `resolve(ino) -> Dirent | None` giving the content of
    a hard-link group whose first name is outside the exported subtree.
    `max_files`/`max_size`: limits on entries and file bytes (None: no limit).
    `filters` (`vtstore.tree.filters.Filters`): restore only what its rules keep.
    `on_total(nbytes)`: told the tree's file bytes before anything is written
    (a progress bar's total; not with `filters`).
    `threads`: threads writing files beside the walk (0: none, all inline).
    """

    def __init__(
        self,
        store,
        numeric_ids: bool = False,
        on_file=None,
        *,
        resume: str | None = None,
        safe: bool = False,
        links=None,
        max_files: int | None = None,
        max_size: int | None = None,
        filters=None,
        on_total=None,
        threads: int = DEFAULT_THREADS,
    ):
        if resume not in (None, "quick", "verify"):
            raise ValueError(f"resume must be None, 'quick' or 'verify', not {resume!r}")
        self.store = store
        self.numeric_ids = numeric_ids
        self.is_root = os.geteuid() == 0
        self.stats = ExportStats()
        self.on_file = on_file
        self.resume = resume
        self.safe = safe
        self.resolver = links
        self.max_files = max_files
        self.max_size = max_size
        self.filters = filters
        self.on_total = on_total
        # inode group -> (path of its first name from the root, restored damaged)
        self._links: dict[int, tuple[tuple[bytes, ...], bool]] = {}
        self._root_fd: int | None = None
        # per export: the user databases may change between runs, not during one
        self._uid_of = cached_lookup(lambda name: pwd.getpwnam(name).pw_uid)
        self._gid_of = cached_lookup(lambda name: grp.getgrnam(name).gr_gid)
        self.threads = max(0, threads)
        self._euid, self._egid = os.geteuid(), os.getegid()
        self._umask = _current_umask()
        # a new file's owner and mode are known (no setgid directory, no default
        # ACL above it, nothing there before): calls that would not change them
        # are left out; decided per export in _start
        self._fresh_meta = False
        self._pool: _Pool | None = None
        self._fetcher: _Pool | None = None  # reads batches while the walk goes on
        self._dir_blocks: _KeptBlocks | None = None
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._fatal: BaseException | None = None
        self._cur: _Frame | None = None  # the directory the walk is in
        self._waiting: set[_Frame] = set()  # walked, files still being written
        self._jobs_open = 0
        self._pending_files = 0
        self._pending_bytes = 0
        self._in_flight = 0
        self._seq = 0
        self._damaged: list[tuple[int, Damage]] = []
        self._batch: list[tuple] = []
        self._batch_leaves = 0
        self._batch_bytes = 0
        self._ahead: dict = {}  # indirect blocks read ahead (FileWriter._indirect_data)

    # -- entry point ------------------------------------------------------

    def export(self, dirent: Dirent, target: str) -> ExportStats:
        """Write `dirent` at `target`: a directory's contents go into `target`."""
        if self.filters is not None and self.resolver is None and dirent.is_dir:
            from vtstore.tree.links import LinkResolver

            # a hard link's first name may be left out: its group is looked up
            self.resolver = LinkResolver(dirent, self.store)
        if self.max_files is not None or self.max_size is not None or self.on_total:
            # the directories read to measure the tree are kept for the walk
            self._dir_blocks = _KeptBlocks(self.store)
            _, nbytes = tree_totals(dirent, self._dir_blocks, self.max_files, self.max_size)
            self._dir_blocks.keeping = False
            if self.on_total is not None and self.filters is None:
                self.on_total(nbytes)  # a progress bar's total (rules would make it less)
        target_b = os.fsencode(target)
        if dirent.is_dir:
            try:
                os.mkdir(target_b, 0o700)
            except FileExistsError:
                if not os.path.isdir(target_b) or os.path.islink(target_b):
                    raise ExportError(f"{target} exists and is not a directory") from None
                if not self.resume and os.listdir(target_b):
                    raise ExportError(f"{target} is not empty (--resume completes it)") from None
            fd = os.open(target_b, _DIR_FLAGS)
            self._root_fd = fd
            try:
                self._start(fd)
                try:
                    self._walk(fd, dirent)
                finally:
                    self._stop()
            finally:
                os.close(fd)
                self._root_fd = None
        else:
            parent, name = os.path.split(os.path.abspath(target_b))
            if os.path.lexists(target_b) and not self.resume:
                raise ExportError(f"{target} already exists")
            try:
                fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as e:
                raise ExportError(f"{os.fsdecode(parent)}: {e.strerror}") from None
            self._root_fd = fd
            try:
                if dirent.type == T_HARDLINK:
                    raise ExportError("a hard link on its own cannot be exported")
                self._start(fd)
                try:
                    self._cur = _Frame(fd, None, (), [])
                    self._cur.is_root = True
                    self._create(fd, name, dirent, (name,))
                    self._drain()
                finally:
                    self._stop()
            finally:
                os.close(fd)
                self._root_fd = None
        return self.stats

    # -- the writing pool ------------------------------------------------------

    def _start(self, fd: int) -> None:
        """Start the pool; decide whether new files' owner and mode are known."""
        st = os.fstat(fd)
        self._fresh_meta = (
            not self.resume and not st.st_mode & statmod.S_ISGID and not _has_default_acl(fd)
        )
        if self.threads:
            self._pool = _Pool(self.threads, self._fail)
            self._fetcher = _Pool(FETCH_THREADS, self._fail)

    def _stop(self) -> None:
        """Wait for every thread (after an error: they skip their work), close what
        an error left open and put the damage found in walk order."""
        if self._fatal is None and self._batch:
            self._fatal = RuntimeError("restore stopped")  # not reached in a clean run
        self._batch = []
        if self._fetcher is not None:  # first: it hands work to the pool
            self._fetcher.shutdown()
            self._fetcher = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for f in self._waiting:  # walked, but a file of theirs never went out
            if not f.is_root and f.fd is not None:
                os.close(f.fd)
                f.fd = None
        self._waiting.clear()
        self._damaged.sort(key=lambda x: x[0])
        self.stats.damaged = [d for _, d in self._damaged]

    def _add_damage(self, seq: int, d: Damage) -> None:
        with self._lock:
            self._damaged.append((seq, d))

    # -- the walk ------------------------------------------------------------

    def _entries(self, d: Dirent, rel: tuple[bytes, ...]) -> list[Dirent]:
        entries, problems = read_entries(d, self._dir_blocks or self.store)
        if problems:
            shown = _shown(rel) or "."
            log.warning("directory %s is damaged: %s", shown, "; ".join(problems[:3]))
            self._add_damage(self._next_seq(), Damage(shown, problems, kind="dir"))
        if self.filters is not None:
            entries = self.filters.keep_entries(entries, "/".join(fsdec(n) for n in rel))
        return entries

    def _sweep(self, fd: int, entries: list[Dirent]) -> None:
        """--resume: remove what earlier runs left that the tree does not hold: the
        temporary files of a killed rewrite, and damaged files (written again
        below if still damaged, else restored whole under their own names)."""
        keep = {fsenc(e.name) for e in entries}
        part, damaged = PART_PREFIX.encode(), DAMAGED_SUFFIX.encode()
        for n in os.listdir(fd):
            name = os.fsencode(n)
            if (name.startswith(part) or name.endswith(damaged)) and name not in keep:
                if not statmod.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                    os.unlink(name, dir_fd=fd)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _walk(self, root_fd: int, root: Dirent) -> None:
        frames = [_Frame(root_fd, root, (), self._entries(root, ()))]
        frames[0].is_root = True
        if self.resume:
            self._sweep(root_fd, frames[0].entries)
        try:
            while frames:
                self._check_fatal()
                f = frames[-1]
                self._cur = f
                if f.i < len(f.entries):
                    e = f.entries[f.i]
                    f.i += 1
                    name = fsenc(e.name)
                    rel = f.rel + (name,)
                    dfd = self._fd_of(frames, len(frames) - 1)
                    try:
                        if e.type == T_DIR:
                            sub, perm = self._make_dir(dfd, name, e, rel)
                            if sub is not None:
                                entries = self._entries(e, rel)
                                frames.append(_Frame(sub, e, rel, entries, perm))
                                if self.resume:
                                    self._sweep(sub, frames[-1].entries)
                                self._check_limits()
                                if len(frames) > _MAX_OPEN_DIRS:
                                    old = frames[len(frames) - _MAX_OPEN_DIRS]
                                    if old.fd is not None:
                                        self._wait_idle(old)  # its files use the fd
                                        os.close(old.fd)
                                        old.fd = None
                        else:
                            self._create(dfd, name, e, rel)
                    except OSError as err:
                        self._os_error(rel, err)
                else:
                    self._fd_of(frames, len(frames) - 1)
                    frames.pop()
                    with self._lock:
                        f.walked = True
                        ready = f.pending == 0
                        if not ready:
                            self._waiting.add(f)
                    if ready:
                        self._finish_dir(f)
                    if not frames:
                        self._drain()
        except BaseException as err:
            self._fail(err)  # the pool's threads skip what is left
            raise
        finally:  # an error that stops the restore leaves no directory open
            for f in frames[1:]:
                if f.fd is not None and not f.pending:
                    os.close(f.fd)
                    f.fd = None
                elif f.fd is not None:
                    with self._lock:
                        f.walked = True
                        self._waiting.add(f)

    def _finish_dir(self, f: _Frame) -> None:
        """A directory's metadata, once its entries are all there; close its fd."""
        try:
            self._apply_meta(f.fd, None, f.dirent, created=f.perm)
        except OSError as err:
            self._os_error(f.rel, err)
        finally:
            if not f.is_root:
                os.close(f.fd)
                f.fd = None

    def _wait_idle(self, f: _Frame) -> None:
        """Wait until no file of directory `f` is being written."""
        if not f.pending:
            return
        self._flush()
        with self._cv:
            while f.pending and self._fatal is None:
                self._cv.wait()
        self._check_fatal()

    def _fd_of(self, frames: list[_Frame], j: int) -> int:
        """The fd of directory `frames[j]`, reopened by name from an open ancestor."""
        if frames[j].fd is not None:
            return frames[j].fd
        i = j
        while frames[i].fd is None:
            i -= 1
        for k in range(i + 1, j + 1):
            frames[k].fd = os.open(frames[k].rel[-1], _DIR_FLAGS, dir_fd=frames[k - 1].fd)
            # keep only the last few of a long chain open: a 10,000-level tree
            # must not need 10,000 fds on the way back up
            if i < k - 1 <= j - _MAX_OPEN_DIRS:
                os.close(frames[k - 1].fd)
                frames[k - 1].fd = None
        return frames[j].fd

    def _os_error(self, rel: tuple[bytes, ...], err: OSError) -> None:
        if err.errno in FATAL_ERRNOS:
            raise err
        msg = f"{_shown(rel)}: {err.strerror or err}"
        log.warning("could not restore %s", msg)
        with self._lock:
            self.stats.errors.append(msg)

    def _check_limits(self) -> None:
        # counts the files still being written: limits hold whatever the pool does
        st = self.stats
        if self.max_files is not None and st.entries + self._pending_files > self.max_files:
            raise LimitError(f"more than {self.max_files:,} entries restored (--max-files)")
        if self.max_size is not None and st.bytes + self._pending_bytes > self.max_size:
            raise LimitError(f"more than {self.max_size:,} bytes restored (--max-size)")

    # -- objects -----------------------------------------------------------

    def _make_dir(self, dfd: int, name: bytes, e: Dirent, rel) -> tuple[int | None, int | None]:
        """Make directory `name`: its fd and the mode it was made with (None
        when --resume found it there).  Made with its final mode when that
        lets us work in it (u+rwx) and has no special bits (a setgid
        directory would pass its group on before its contents are there):
        the chmod after its contents is then often a call that changes
        nothing, and is left out; else 0700 until then."""
        meta = e.meta
        perm = 0o700
        if meta is not None and meta.mode is not None and not self.resume:
            mode = meta.mode & 0o7777
            if mode & 0o700 == 0o700 and not mode & 0o7000:
                perm = mode
        try:
            os.mkdir(name, perm, dir_fd=dfd)
        except FileExistsError:
            if not self.resume:
                raise
            st = os.lstat(name, dir_fd=dfd)
            if not statmod.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dfd)
                os.mkdir(name, 0o700, dir_fd=dfd)
            perm = None  # (a new one here too: --resume sets all of its metadata)
        with self._lock:  # counted under the lock: the pool's threads update the same stats
            self.stats.dirs += 1
        return os.open(name, _DIR_FLAGS, dir_fd=dfd), perm

    def _create(self, dfd: int, name: bytes, e: Dirent, rel: tuple[bytes, ...]) -> None:
        t = e.type
        if t == T_WHITEOUT:
            return
        if t == T_HARDLINK:
            self._hardlink(dfd, name, e, rel)
            return
        if t == T_DEVICE and self.safe:
            self.stats.unsafe_skipped += 1
            log.info("%s: device node not created (safe)", _shown(rel))
            if e.ino is not None:
                self._links.setdefault(e.ino, None)  # its other names are skipped too
            return
        replace = False
        if self.resume:
            st = _lstat(dfd, name)
            if st is not None:
                if self._matches(st, dfd, name, e):
                    self.stats.skipped += 1
                    self._count(e)
                    if e.ino is not None:
                        self._links.setdefault(e.ino, (rel, False))
                    return
                if statmod.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
                replace = True
        if t == T_FILE:
            self._file(dfd, name, e, rel, replace)
            return
        if replace:
            os.unlink(name, dir_fd=dfd)
        meta = e.meta
        mode = meta.mode if meta is not None and meta.mode is not None else None
        if t == T_SYMLINK:
            os.symlink(fsenc(e.target or ""), name, dir_fd=dfd)
        elif t in (T_DEVICE, T_FIFO, T_SOCKET):
            perm = 0o600 if mode is None else mode & 0o7777
            if t == T_FIFO:
                os.mkfifo(name, perm, dir_fd=dfd)
            elif t == T_SOCKET:
                os.mknod(name, perm | statmod.S_IFSOCK, dir_fd=dfd)
            else:
                kind, major, minor = e.rdev
                ftype = statmod.S_IFCHR if kind == "c" else statmod.S_IFBLK
                os.mknod(name, perm | ftype, os.makedev(major, minor), dir_fd=dfd)
        self._apply_meta(None, (dfd, name), e)
        self._count(e)
        if e.ino is not None:  # the first name of a link group of a non-file
            self._links.setdefault(e.ino, (rel, False))

    def _count(self, e: Dirent) -> None:
        with self._lock:
            if e.type in (T_FILE, T_HARDLINK):
                self.stats.files += 1
                if self.on_file:
                    self.on_file(self.stats)
            else:
                self.stats.others += 1

    def _file(self, dfd: int, name: bytes, e: Dirent, rel, replace: bool) -> None:
        """Plan a regular file: its pieces join the batch; the pool writes it
        (under a temporary name when it replaces one)."""
        size = e.size or 0
        if self.max_size is not None and (
            self.stats.bytes + self._pending_bytes + size > self.max_size
        ):
            raise LimitError(
                f"{_shown(rel)}: restoring it would pass {self.max_size:,} bytes (--max-size)"
            )
        tmp = PART_PREFIX.encode() + os.urandom(6).hex().encode() if replace else name
        meta = e.meta
        # created with its final permissions (0600 if it has none): fchmod is
        # then often a call that changes nothing
        perm = meta.mode & 0o777 if meta is not None and meta.mode is not None else 0o600
        frame = self._cur
        job = _FileJob(frame, dfd, name, tmp, e, rel, replace, perm, self._next_seq())
        with self._lock:
            frame.pending += 1
            self._jobs_open += 1
            self._pending_files += 1
            self._pending_bytes += size
        if e.ino is not None:
            self._links.setdefault(e.ino, job)
        job.size = 0 if e.block is None else self._plan_content(job, e.block)
        self._batch.append((job, None, None, 0, None))  # its last chunk is in this batch
        if len(self._batch) >= BATCH_ENTRIES:
            self._flush()
        self._check_limits()

    def _complete(self, job: _FileJob) -> None:
        fd = self._job_fd(job)  # an empty file is opened only here
        dfd, name, tmp, rel = job.dfd, job.name, job.tmp, job.rel
        if job.end < job.size:  # ends with a hole: make the file as long as it is
            os.ftruncate(fd, job.size)
        self._apply_meta(fd, None, job.e, created=job.perm)
        job.fd = None
        os.close(fd)
        final = name
        bad = [text for _, text in sorted(job.bad)]
        if bad:
            final = damaged_name(name)
            shown = _shown(rel)
            log.warning("%s is damaged: %s", shown, "; ".join(bad[:3]))
            self._add_damage(job.seq, Damage(shown, bad, kind="file", lost_bytes=job.lost))
            if self.resume and _lstat(dfd, final) is not None:
                os.unlink(final, dir_fd=dfd)
            try:
                _rename_noreplace(dfd, tmp, final)
            except OSError:
                # never leave it under its own name: with its final mtime it
                # would pass for a whole file (and --resume would keep it)
                os.unlink(tmp, dir_fd=dfd)
                raise
            if job.replace:  # the old, non-matching file must not pass for a good one
                os.unlink(name, dir_fd=dfd)
        elif job.replace:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        job.final = final
        with self._lock:
            self.stats.bytes += job.size
            self.stats.files += 1
            if self.on_file:
                self.on_file(self.stats)

    def _hardlink(self, dfd: int, name: bytes, e: Dirent, rel) -> None:
        if e.ino in self._links and self._links[e.ino] is None:
            self.stats.unsafe_skipped += 1  # another name of a device left out (safe)
            return
        src = self._links.get(e.ino)
        if isinstance(src, _FileJob):  # its target is being written: wait for it
            job = src
            if not job.done:
                self._flush()
                with self._cv:
                    while not job.done and self._fatal is None:
                        self._cv.wait()
            self._check_fatal()
            src = None if job.failed else (job.rel[:-1] + (job.final,), bool(job.bad))
            if src is None:
                del self._links[e.ino]
            else:
                self._links[e.ino] = src
        if src is None:
            first = self.resolver.resolve(e.ino) if self.resolver is not None else None
            if first is None or first.type not in GROUP_TYPES:
                raise FormatError(
                    f"hard link {e.name!r} to inode group {e.ino} which no earlier file has"
                )
            # the group's first name is outside this subtree: this name carries the content
            self._create(dfd, name, first.with_changes(name=e.name, ino=e.ino), rel)
            return
        path, damaged = src
        if damaged:
            name = damaged_name(name)
            self._add_damage(
                self._next_seq(),
                Damage(_shown(rel), [f"a hard link to the damaged {_shown(path)}"]),
            )
        if self.resume:
            st = _lstat(dfd, name)
            if st is not None:
                pst = self._lstat_path(path)
                if pst is not None and (st.st_ino, st.st_dev) == (pst.st_ino, pst.st_dev):
                    self.stats.skipped += 1
                    self._count(e)
                    return
                if statmod.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
                os.unlink(name, dir_fd=dfd)
        pfd = self._open_parent(path)
        try:
            os.link(path[-1], name, src_dir_fd=pfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            if pfd != self._root_fd:
                os.close(pfd)
        self._count(e)

    def _open_parent(self, path: tuple[bytes, ...]) -> int:
        """An fd of the directory holding `path` (from the root, following nothing)."""
        fd = self._root_fd
        for part in path[:-1]:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != self._root_fd:
                os.close(fd)
            fd = nfd
        return fd

    def _lstat_path(self, path: tuple[bytes, ...]):
        try:
            pfd = self._open_parent(path)
        except OSError:
            return None
        try:
            return _lstat(pfd, path[-1])
        finally:
            if pfd != self._root_fd:
                os.close(pfd)

    # -- --resume ------------------------------------------------------------

    def _matches(self, st: os.stat_result, dfd: int, name: bytes, e: Dirent) -> bool:
        """Whether the existing object `st` at `name` is already `e`."""
        t = e.type
        m = st.st_mode
        if t == T_FILE:
            if not statmod.S_ISREG(m) or st.st_size != e.size:
                return False
            mtime = e.meta.mtime_ns if e.meta is not None else None
            if self.resume == "quick" and mtime is not None:
                return st.st_mtime_ns == mtime
            if mtime is not None and st.st_mtime_ns != mtime:
                return False
            return self._same_content(dfd, name, e)
        if t == T_SYMLINK:
            return statmod.S_ISLNK(m) and os.readlink(name, dir_fd=dfd) == fsenc(e.target or "")
        if t == T_FIFO:
            return statmod.S_ISFIFO(m)
        if t == T_SOCKET:
            return statmod.S_ISSOCK(m)
        if t == T_DEVICE:
            kind, major, minor = e.rdev
            isdev = statmod.S_ISCHR(m) if kind == "c" else statmod.S_ISBLK(m)
            return isdev and st.st_rdev == os.makedev(major, minor)
        return False

    def _same_content(self, dfd: int, name: bytes, e: Dirent) -> bool:
        """Compare a file with `e`'s content: stored leaves by their hashcodes (only
        the tree's indirect blocks are read from the store), runs by their bytes."""
        if e.block is None:
            return True
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=dfd)
        try:
            pos = 0
            for kind, n, value in iter_content(e.block, self.store, fetch_leaves=False):
                if kind == BAD:
                    return False
                if kind == LEAF:
                    leaf, s, end = value
                    data = os.pread(fd, n, pos)
                    if s == 0 and end == leaf.span:
                        if type(leaf.hashcode).from_data(data) != leaf.hashcode:
                            return False
                    else:
                        try:
                            if data != leaf.leaf_data(self.store, s, end):
                                return False
                        except DAMAGE:
                            return False
                elif kind == DATA:  # a literal carried in the ref
                    if os.pread(fd, n, pos) != value:
                        return False
                else:
                    octet = value if kind == FILL else 0
                    done = 0
                    while done < n:
                        k = min(n - done, _WRITE_BUFFER)
                        if os.pread(fd, k, pos + done).strip(bytes((octet,))):
                            return False
                        done += k
                pos += n
            return True
        finally:
            os.close(fd)

    # -- metadata ------------------------------------------------------------

    def _apply_meta(
        self, fd: int | None, at: tuple[int, bytes] | None, e: Dirent, created: int | None = None
    ) -> None:
        """Restore metadata on an open fd, or on `(dir_fd, name)` without following.

        `created`: the permission bits a file was just created with by this
        export; calls that would not change its owner or mode are left out."""
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
        fresh = created is not None and self._fresh_meta
        if fresh and uid in (-1, self._euid) and gid in (-1, self._egid):
            uid = gid = -1  # a new file is ours already
        if (uid != -1 or gid != -1) and (self.is_root or uid in (-1, self._euid)):
            try:
                os.chown(path, uid, gid, **kw)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EINVAL):
                    raise
        if meta.mode is not None and not e.is_symlink:
            mode = meta.mode
            if self.safe and not e.is_dir:
                mode &= ~(statmod.S_ISUID | statmod.S_ISGID)
            if not (fresh and uid == -1 and gid == -1 and mode == created & ~self._umask):
                os.chmod(path, mode, **kw)
        if meta.xattrs:
            xpath = path if fd is not None else f"/proc/self/fd/{at[0]}/".encode() + at[1]
            for xname, value in meta.xattrs:
                if self.safe and xname.startswith(UNSAFE_XATTR_PREFIXES):
                    log.info("xattr %s not restored (safe)", xname)
                    continue
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


def damaged_name(name: bytes) -> bytes:
    """`NAME.vt-damaged`, NAME shortened when the whole would pass NAME_MAX (255)."""
    suffix = DAMAGED_SUFFIX.encode()
    return name[: 255 - len(suffix)] + suffix


def _shown(rel: tuple[bytes, ...]) -> str:
    return b"/".join(rel).decode("utf-8", "replace")


def _lstat(dfd: int, name: bytes):
    try:
        return os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None


def _rename_noreplace(dfd: int, src: bytes, dst: bytes) -> None:
    """Rename within `dfd`, failing (EEXIST) rather than replacing `dst`."""
    if src == dst:
        return
    os.link(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    os.unlink(src, dir_fd=dfd)


def _current_umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment,
    for every thread)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o7777  # unknown: every chmod is made


def _has_default_acl(fd: int) -> bool:
    """Whether new files in directory `fd` take their mode from a default ACL."""
    try:
        os.getxattr(fd, "system.posix_acl_default")
    except OSError:
        return False
    return True


def export_tree(dirent: Dirent, store, target: str, **kw) -> ExportStats:
    """Export `dirent` (its contents, for a directory) to `target`."""
    return Exporter(store, **kw).export(dirent, target)
