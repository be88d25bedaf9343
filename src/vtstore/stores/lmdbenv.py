"""Opening an LMDB environment safely: damage checks, read-only media, map growth.

LMDB maps its file and trusts it: a `data.mdb` shorter than its meta pages say
kills the process with SIGBUS on the first page past the end.  `check_meta_pages`
reads the two meta pages with `pread` and checks them (magic, version, page
size, last page inside the file, roots inside the used pages) before LMDB maps
anything.  The layout (LMDB 0.9, 64-bit): a 16-octet page header, then
`mm_magic` u32 @16, `mm_version` u32 @20, `mm_mapsize` u64 @32, the free and
main `MDB_db` records @40 and @88 (48 octets each; `md_pad` of the first holds
the page size, `md_root` is @40 in a record), `mm_last_pg` u64 @136,
`mm_txnid` u64 @144.

An environment whose directory (or file) is not writable, as on read-only
media, is opened `readonly=True, lock=False`: LMDB cannot create or write
`lock.mdb` there.  Without the lock file there is no reader table, so a writer
of another user running at the same time could recycle pages a read is using;
reads are short (one transaction per call) and every value read is validated
and every block hash-checked, so that shows as an error, never as wrong data.

The map starts small (`initial_map_size`) and grows when a write finds it full.
`Gate` keeps every transaction of this process out while the map is remapped,
as `mdb_env_set_mapsize` requires.  `SharedEnv` is one process's open of an
environment (LMDB allows one), with its gate and its fault guard: a read that
a damaged page sends past the file ends the process with one line
(`vtstore.stores.vtdio.guard_map`) instead of SIGBUS.  `Reading` is a read
transaction that turns damage into `IndexDamagedError`; `probe_index` walks a
whole index in a child process, for fsck and reindex to survive the worst.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
import threading
import time
from threading import get_ident

import lmdb

from vtstore.errors import FormatError, StoreError
from vtstore.stores.vtdio import guard_map, unguard_map

log = logging.getLogger(__name__)

MDB_MAGIC = 0xBEEFC0DE
MDB_VERSION = 1
_P_META = 0x08
_P_INVALID = (1 << 64) - 1
#: the smallest map: address space costs nothing until used, and most indexes
#: never need more.  `$VT_INDEX_MAP_SIZE` (octets) lowers it for tests.
MIN_MAP_SIZE = 64 << 20
#: how long a map resize waits for this process's other transactions
RESIZE_WAIT = 60.0
#: LMDB errors that mean the file itself is bad, not the system
DAMAGE_ERRORS = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.BadValsizeError,
    lmdb.PageFullError,
    lmdb.PanicError,
    lmdb.IncompatibleError,
    lmdb.BadDbiError,
)


class IndexDamagedError(StoreError):
    """The index file is damaged (truncated, overwritten, not an index): the
    data files are intact and `vt reindex` rebuilds it from them."""

    def __init__(self, path: str, why: str):
        self.path = path
        self.why = why
        super().__init__(
            f"index {path} is damaged ({why}); run `vt reindex` (or `vt fsck --repair`)"
            " to rebuild it from the data files"
        )


def data_file_of(path: str, subdir: bool) -> str:
    """The LMDB data file of the environment at `path`."""
    return os.path.join(path, "data.mdb") if subdir else path


def lock_file_of(path: str, subdir: bool) -> str:
    """The LMDB lock file of the environment at `path`."""
    return os.path.join(path, "lock.mdb") if subdir else path + "-lock"


def check_meta_pages(path: str, subdir: bool = True) -> int:
    """Check the meta pages of the environment at `path` against its file's size;
    return that size (0 for a missing or empty file, which LMDB initialises).

    Raises `IndexDamagedError` for anything LMDB would trip over by mapping it.
    """
    f = data_file_of(path, subdir)
    if subdir and os.path.lexists(path) and not os.path.isdir(path):
        raise IndexDamagedError(path, "not a directory")
    try:
        fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    except IsADirectoryError:
        raise IndexDamagedError(path, f"{os.path.basename(f)} is a directory") from None
    except OSError as e:
        raise StoreError(f"index {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IndexDamagedError(path, f"{os.path.basename(f)} is not a regular file")
        size = st.st_size
        if size == 0:
            return 0
        head = os.pread(fd, 160, 0)
        if len(head) < 160:
            raise IndexDamagedError(path, f"file of {size} octets")
        psize = struct.unpack_from("<I", head, 40)[0]
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            raise IndexDamagedError(path, "bad page size in meta page 0")
        if size < 2 * psize:
            raise IndexDamagedError(path, f"file of {size} octets, shorter than its meta pages")
        for n in (0, 1):
            page = head if n == 0 else os.pread(fd, 160, psize)
            _check_meta(path, n, page, psize, size)
    except OSError as e:
        raise StoreError(f"index {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return size


def _check_meta(path: str, n: int, page: bytes, psize: int, size: int) -> None:
    pgno, _pad, flags = struct.unpack_from("<QHH", page, 0)
    magic, version = struct.unpack_from("<II", page, 16)
    if pgno != n or not flags & _P_META or magic != MDB_MAGIC:
        raise IndexDamagedError(path, f"meta page {n} is not an LMDB meta page")
    if version != MDB_VERSION:
        raise IndexDamagedError(path, f"meta page {n} has LMDB version {version}")
    if n and struct.unpack_from("<I", page, 40)[0] != psize:
        raise IndexDamagedError(path, "the meta pages disagree on the page size")
    last_pg = struct.unpack_from("<Q", page, 136)[0]
    if last_pg < 1 or (last_pg + 1) * psize > size:
        raise IndexDamagedError(
            path,
            f"meta page {n} claims {last_pg + 1} pages of {psize} octets,"
            f" the file has {size} octets (truncated?)",
        )
    for off in (80, 128):
        root = struct.unpack_from("<Q", page, off)[0]
        if root != _P_INVALID and not 2 <= root <= last_pg:
            raise IndexDamagedError(path, f"meta page {n} has a root page outside the file")


def initial_map_size(file_size: int) -> int:
    """The map size to open with: room for the file to double."""
    floor = MIN_MAP_SIZE
    env = os.environ.get("VT_INDEX_MAP_SIZE")
    if env:
        try:
            floor = max(int(env), 256 << 10)
        except ValueError:
            pass
    return _round(max(floor, 2 * file_size))


def _round(n: int) -> int:
    """Round up to a whole 64 KiB (a multiple of any page size)."""
    return -(-n // (64 << 10)) * (64 << 10)


def writable(path: str, subdir: bool) -> bool:
    """Whether this process may write the environment (its directory, and its
    files if they exist): false on read-only media and without permission."""
    d = path if subdir else (os.path.dirname(path) or ".")
    if os.path.isdir(d) and not os.access(d, os.W_OK):
        return False
    if not os.path.isdir(d):
        parent = os.path.dirname(os.path.abspath(d))
        return os.access(parent, os.W_OK)
    for f in (data_file_of(path, subdir), lock_file_of(path, subdir)):
        if os.path.exists(f) and not os.access(f, os.W_OK):
            return False
    return True


class Gate:
    """Many transactions at once, or one map resize alone.

    Each transaction of the process passes `enter`/`exit`; `resize` stops new
    ones, waits for the running ones, and runs its function alone.  A thread
    already inside may enter again even while a resize waits (it would wait for
    itself otherwise); a resize from a thread that is inside fails instead.
    The common path is one plain lock taken twice: every index call passes here.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._resizing = False
        self._depth: dict[int, int] = {}  # thread ident -> transactions it has open

    def enter(self) -> None:
        """A transaction begins."""
        tid = get_ident()
        with self._lock:
            if self._resizing and tid not in self._depth:
                while self._resizing:
                    self._cond.wait()
            self._active += 1
            d = self._depth
            d[tid] = d.get(tid, 0) + 1

    def exit(self) -> None:
        """A transaction ended."""
        tid = get_ident()
        with self._lock:
            self._active -= 1
            d = self._depth
            n = d[tid] - 1
            if n:
                d[tid] = n
            else:
                del d[tid]
            if self._resizing and not self._active:
                self._cond.notify_all()

    def resize(self, fn, what: str) -> None:
        """Run `fn` with no transaction of this process running."""
        with self._cond:
            if get_ident() in self._depth:
                raise StoreError(f"index {what}: cannot grow the map inside a transaction")
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            try:
                deadline = time.monotonic() + RESIZE_WAIT
                while self._active:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise StoreError(
                            f"index {what}: timed out waiting for readers to grow the map"
                        )
                    self._cond.wait(left)
                fn()
            finally:
                self._resizing = False
                self._cond.notify_all()


def open_env(path: str, subdir: bool, readonly: bool, **kw) -> tuple[lmdb.Environment, bool]:
    """Open the environment at `path` after checking its meta pages; return
    `(env, writable)`.  A read-only `readonly` open of an environment this
    process cannot write is lockless (see the module doc); a writable open of a
    missing one creates it, its directory mode 0700 and files 0600."""
    size = check_meta_pages(path, subdir)
    can_write = writable(path, subdir)
    if not can_write:
        if size == 0:
            raise IndexDamagedError(path, "missing or empty, and the store is read-only")
        env = lmdb.open(
            path,
            map_size=initial_map_size(size),
            subdir=subdir,
            readonly=True,
            lock=False,
            create=False,
            **kw,
        )
        return env, False
    if subdir:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # already there, or another process just made it
            pass
    env = lmdb.open(path, map_size=initial_map_size(size), subdir=subdir, mode=0o600, **kw)
    return env, True


def lmdb_error(path: str, e: Exception) -> StoreError:
    """The one-line error for an LMDB error on the index at `path`."""
    if isinstance(e, DAMAGE_ERRORS):
        return IndexDamagedError(path, str(e).split(": ")[-1])
    # LMDB reports a short write (a full disk) as EIO: say what it most likely is
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
        full = st.f_bavail * st.f_frsize < max(1 << 20, st.f_blocks * st.f_frsize // 100)
    except OSError:
        full = False
    if full and "No space left" not in str(e):
        return StoreError(f"index {path}: No space left on device ({e})")
    return StoreError(f"index {path}: {e}")


class SharedEnv:
    """One process's open of an environment: its tables, its gate, its guard."""

    def __init__(
        self, key: str, path: str, env: lmdb.Environment, writable: bool, subdir: bool = True
    ):
        self.key = key
        self.path = path
        self.env = env
        self.writable = writable
        self.refs = 0
        self.write_lock = threading.Lock()
        self.gate = Gate()
        self.data_file = data_file_of(path, subdir)
        self.guarded = 0
        self.guard()
        create = writable
        try:
            self.blocks = env.open_db(b"blocks", create=create)
            self.files = env.open_db(b"files", create=create)
            self.meta = env.open_db(b"meta", create=create)
        except lmdb.NotFoundError:
            self.unguard()
            raise IndexDamagedError(path, "a table is missing") from None
        except BaseException:
            self.unguard()
            raise

    def guard(self) -> None:
        """Register the map with the fault guard: a read a damaged page sends
        past the file ends the process with one line, not a signal."""
        addr, size = _map_of(self.data_file)
        if self.guarded and self.guarded != addr:
            unguard_map(self.guarded)
        msg = (
            f"vt: index {self.path} is damaged (a read went past its end); run `vt reindex`"
            " (or `vt fsck --repair`) to rebuild it from the data files\n"
        )
        guard_map(addr, size, msg.encode(errors="replace"))
        self.guarded = addr

    def unguard(self) -> None:
        if self.guarded:
            unguard_map(self.guarded)
            self.guarded = 0

    def begin(self, write: bool = False, db=None) -> lmdb.Transaction:
        """Begin a transaction; the caller has entered the gate.  Adopts a map
        another process grew (LMDB says MAP_RESIZED) and retries."""
        for _ in range(8):
            try:
                return self.env.begin(write=write, db=db)
            except lmdb.MapResizedError:
                self.gate.exit()
                try:
                    self.gate.resize(self._adopt_size, self.path)
                finally:
                    self.gate.enter()
        raise StoreError(f"index {self.path}: its map keeps being resized")

    def _adopt_size(self) -> None:
        self.env.set_mapsize(0)
        self.guard()

    def grow(self) -> None:
        """Double the map (a write found it full); the caller is outside the gate."""
        env = self.env

        def do():
            old = env.info()["map_size"]
            env.set_mapsize(max(2 * old, initial_map_size(0)))
            self.guard()
            log.debug("index %s: map grown from %d to %d octets", self.path, old, 2 * old)

        try:
            self.gate.resize(do, self.path)
        except lmdb.Error as e:
            raise lmdb_error(self.path, e) from None


def _map_of(path: str) -> tuple[int, int]:
    """`(address, size)` of this process's map of the file at `path` (LMDB does
    not say where it mapped it), or `(0, 0)`."""
    try:
        st = os.stat(path)
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and int(parts[4]) == st.st_ino:
                    if os.path.realpath(parts[5].rstrip("\n")) == os.path.realpath(path):
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        return lo, hi - lo
    except (OSError, ValueError):
        pass
    return 0, 0


class Reading:
    """`with Reading(shared, db) as txn`: one read transaction, in the gate;
    LMDB damage errors and undecodable values become `IndexDamagedError`."""

    __slots__ = ("sh", "db", "txn")

    def __init__(self, sh: SharedEnv, db=None):
        self.sh = sh
        self.db = db

    def __enter__(self) -> lmdb.Transaction:
        sh = self.sh
        sh.gate.enter()
        try:
            self.txn = sh.begin(db=self.db)
        except BaseException as e:
            sh.gate.exit()
            reraise(sh.path, e)
            raise
        return self.txn

    def __exit__(self, et, e, tb):
        try:
            self.txn.abort()
        finally:
            self.sh.gate.exit()
        if e is not None:
            reraise(self.sh.path, e)
        return False


def reraise(path: str, e: BaseException) -> None:
    """Raise the error a read inside a transaction should surface as, if not `e`."""
    if isinstance(e, DAMAGE_ERRORS):
        raise IndexDamagedError(path, str(e).split(": ")[-1]) from None
    if isinstance(e, FormatError):
        raise IndexDamagedError(path, str(e)) from None
    if isinstance(e, lmdb.Error):
        raise lmdb_error(path, e) from None


def probe_index(path: str, subdir: bool = True) -> str | None:
    """Read every page of the index at `path` in a child process; return None if
    it all reads and decodes, else what is wrong.

    A damaged page can make LMDB read past the file (see the map guard), and
    fsck and reindex must survive that to rebuild: the child takes the risk.
    """
    import subprocess
    import sys

    import vtstore

    src = os.path.dirname(os.path.dirname(os.path.abspath(vtstore.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from vtstore.stores.lmdbenv import _probe; sys.exit(_probe(sys.argv[1:]))"
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, path, "1" if subdir else "0"],
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
        )
    except OSError:
        return None  # no child here: the in-process walk (and the map guard) must do
    if r.returncode == 0:
        return None
    if r.returncode < 0:
        return f"reading it dies by signal {-r.returncode}"
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    last = lines[-1] if lines else f"exit status {r.returncode}"
    m = re.search(r"is damaged \((.*)\); run", last)
    return m.group(1) if m else last


def _probe(argv: list[str]) -> int:
    """The child of `probe_index`: walk and decode every table."""
    import sys

    from vtstore.stores.index import LMDBIndex

    path, subdir = argv[0], argv[1] == "1"
    try:
        idx = LMDBIndex(path, subdir=subdir, readonly=True)
        try:
            idx.counters()
            with idx.snapshot() as snap:
                snap.files()
                for _ in snap.items():
                    pass
        finally:
            idx.close()
    except StoreError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0
