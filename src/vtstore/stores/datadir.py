"""The datadir: the default local store.

Layout of a datadir directory::

    datadir.json        metadata: format, version, uuid, hash class, chunker sizes
    lock                flock'd shared by every open store, exclusively by reindex/repair
    data/<uuid>.vtd     append-only data files (format: `vtstore.stores.vtd`)
    index/              the LMDB block index (`vtstore.stores.index`)
    NAME.vt             archives: the store's `exports`

Each process that writes takes an exclusive `flock` on one data file (adopting an
unsealed file no live process holds, else creating one), so several processes can
add to one datadir at once.  A data file is sealed when it reaches
`data_file_size`.  A writer that died leaves a tail of unindexed records and maybe
a torn record: the next writer to adopt the file indexes the complete records and
truncates the torn one.  The index can always be rebuilt from the data files
(`reindex`).  With `max_size` the datadir is a cache: the oldest sealed data files
are evicted to keep it under the cap.

A damaged index (truncated, overwritten, missing while data files exist) does
not stop the datadir from opening: `index_damage` says what is wrong, every
use of the index raises it (one line naming `vt reindex`), and `reindex` /
`fsck(repair=True)` build a new index from the data files.  A `readonly`
datadir writes nothing: on read-only media or without write permission it
takes no lock (the `lock` file is opened read-only if it can be) and reads the
index without LMDB's lock file.  Everything a datadir creates is private to its
owner: directories 0700, files 0600.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb

from vtstore.errors import (
    CorruptBlockError,
    FormatError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
    StoreError,
)
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.stores.base import Store
from vtstore.stores.index import (
    FileInfo,
    IndexEntry,
    LMDBIndex,
    iter_index_and_pending,
    probe_index,
)
from vtstore.stores.lmdbenv import IndexDamagedError
from vtstore.stores.params import DEFAULT_CHUNKER, ChunkerParams
from vtstore.stores.readcache import (
    DECODE_THREADS,
    FDCache,
    FrameCache,
    FrameDecoder,
    read_block,
    read_joined,
    read_many,
)
from vtstore.stores.vtd import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_ZSTD_LEVEL,
    MAX_BLOCK_SIZE,
)

TYPE_CHECKING = False  # (no `typing` import at start-up)
if TYPE_CHECKING:
    # imported where used: a reading command loads no writer (start-up time)
    from vtstore.stores.writer import RecordWriter

log = logging.getLogger(__name__)

METADATA = "datadir.json"
FORMAT_NAME = "vtstore-datadir"
FORMAT_VERSION = 1
#: Data files are sealed at 64 MiB: gc collects whole files, so smaller files
#: free space sooner for less copying (forget+prune of half of 20 states of a
#: 1 GiB tree: 1 GiB files rewrote the whole store, 6.2 s; 64 MiB, 4.5 s).
DEFAULT_DATA_FILE_SIZE = 64 << 20
#: hashcodes `get_many` looks up in one index transaction (and reads as a batch)
GET_MANY_LOOKUPS = 1024
# what may already sit in a directory that becomes a datadir on first write
_ALLOWED_BEFORE_INIT = (".vt", ".sock")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _oserror(what: str, e: OSError) -> StoreError:
    return StoreError(f"{what}: {e.strerror or e}")


def _naming_class(name: str) -> type[HashCode]:
    """The class naming a datadir's blocks: a content hash class, or for the
    backend of a crypt store (format 2) the tag each encrypted block carries
    (`crypt-blake3`, ...; `vtstore.stores.crypt.names`, a leaf module)."""
    if isinstance(name, str) and name.startswith("crypt-"):
        from vtstore.stores.crypt.names import tag_class_by_name

        return tag_class_by_name(name)
    return hashclass_by_name(name)


#: datadir uuid -> path, for each datadir this process opened (see `open_datadir_path`)
_OPEN_PATHS: dict[str, Path] = {}


def open_datadir_path(uuid_hex: str) -> Path | None:
    """The path of the datadir with this uuid if this process opened one: how
    an archive update finds the datadir to register the archive with (the
    archive knows only the uuid; see `vtstore.lifecycle.registry`)."""
    return _OPEN_PATHS.get(uuid_hex)


class DataDir(Store):
    """A directory of append-only data files with an LMDB index.

    `hashclass` and `chunker`, when given, must match what the datadir recorded at
    creation (else `HashClassMismatchError` / `StoreError`); when omitted, an
    existing datadir's own are used and a new one gets `default_hashclass` (else
    `$VT_HASHCLASS`, else blake3) and the default chunker.  The directory is
    created on the first write.
    """

    #: blocks are copied into the frame being built (see RecordWriter.add_many)
    add_copies = True

    def __init__(
        self,
        path,
        hashclass: type[HashCode] | None = None,
        chunker: ChunkerParams | None = None,
        readonly: bool = False,
        *,
        name: str | None = None,
        default_hashclass: type[HashCode] | None = None,
        data_file_size: int | None = None,
        frame_size: int = DEFAULT_FRAME_SIZE,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        compress: bool = True,
        max_size: int | None = None,
        max_fds: int = 64,
        frame_cache_bytes: int = 8 * 1024 * 1024,
    ):
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self.max_size = max_size
        if data_file_size is None:
            data_file_size = DEFAULT_DATA_FILE_SIZE
            if max_size:
                data_file_size = min(data_file_size, max(max_size // 8, 64 * 1024))
        self.data_file_size = data_file_size
        self.frame_size = frame_size
        self.zstd_level = zstd_level
        self.compress = compress
        self._want_hashclass = hashclass
        chunker = None if chunker is None else ChunkerParams.coerce(chunker)
        self._want_chunker = chunker
        self.meta: dict | None = None
        self._index: LMDBIndex | None = None
        #: why the index cannot be used (None when it can); see `reset_index`
        self.index_damage: IndexDamagedError | None = None
        self._lockfd = -1
        self._writer: RecordWriter | None = None
        self._wrote = False  # this store opened a writer (see _compact_index)
        self._wfd = -1
        self._wfile: FileInfo | None = None
        self._files: dict[int, FileInfo] = {}
        self._wlock = threading.RLock()
        self._clock = threading.Lock()
        self._dup = [0, 0]  # adds of blocks already present: count, bytes (unpersisted)
        self._fds = FDCache(self._file_path, max_fds)
        self._frames = FrameCache(frame_cache_bytes)
        self._decoder = FrameDecoder(DECODE_THREADS)  # its thread stopped in _close
        self.chunker = chunker or DEFAULT_CHUNKER
        super().__init__(
            name=name or str(self.path),
            hashclass=hashclass or default_hashclass,
            readonly=readonly,
        )
        self.chunker.validate()
        if (self.path / METADATA).exists():
            self._open_existing()
        elif self.path.exists():
            self._check_creatable()

    # -- opening and creating --------------------------------------------------

    @property
    def initialized(self) -> bool:
        """Whether the datadir exists on disk (it is created on first write)."""
        return self.meta is not None

    @property
    def chunker_params(self) -> ChunkerParams:
        """The chunker sizes blocks for this store should be cut with."""
        return self.chunker

    @property
    def chunk_params(self):
        """The same as the chunking layer's `ChunkParams` (None if that layer's
        extension is not built)."""
        try:
            from vtstore.chunking.params import ChunkParams
        except ImportError:
            return None
        c = self.chunker
        try:
            return ChunkParams(min_size=c.min, avg_size=c.avg, max_size=c.max)
        except (TypeError, ValueError):
            return None

    def name_blocks_with(self, hashclass: type[HashCode]) -> None:
        """Before the datadir exists on disk: make it name its blocks with
        `hashclass` (a crypt store makes its backend name blocks by their tag:
        `vtstore.stores.crypt.names`).  An existing datadir keeps its own."""
        if self.meta is None:
            self.hashclass = self._want_hashclass = hashclass

    def create(self) -> None:
        """Create the datadir on disk now rather than at the first write."""
        self._check_writable()
        self._ensure_initialized()

    def _check_creatable(self) -> None:
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is not a directory, so it cannot be a datadir")
        odd = [
            p.name
            for p in self.path.iterdir()
            if not p.name.startswith(".") and not p.name.endswith(_ALLOWED_BEFORE_INIT)
        ]
        if odd:
            hint = " (its metadata is missing)" if {"data", "index"} & set(odd) else ""
            raise StoreError(
                f"{self.path} is not a datadir{hint}: it has no {METADATA} and is not empty"
            )

    def _load_meta(self) -> dict:
        p = self.path / METADATA
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{p}: unreadable datadir metadata: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise StoreError(f"{p}: not datadir metadata")
        if meta.get("version") != FORMAT_VERSION:
            raise StoreError(f"{p}: unsupported datadir version {meta.get('version')!r}")
        return meta

    def _open_existing(self) -> None:
        meta = self._load_meta()
        try:
            hc = _naming_class(meta["hashclass"])
            ch = ChunkerParams.from_dict(meta["chunker"])
        except (KeyError, FormatError) as e:
            raise StoreError(f"{self.path / METADATA}: bad metadata: {e}") from None
        want = self._want_hashclass
        # a crypt store's backend asked for by its plaintext class names its blocks by tag
        if want is not None and want is not hc and getattr(hc, "plain", None) is not want:
            raise HashClassMismatchError(
                f"datadir {self.path} holds {hc.hashname} blocks,"
                f" not {self._want_hashclass.hashname}"
            )
        if self._want_chunker is not None and tuple(self._want_chunker) != tuple(ch):
            raise StoreError(
                f"datadir {self.path} was made with chunker {ch},"
                f" not {ChunkerParams(*self._want_chunker)}"
            )
        self.hashclass = hc
        self.chunker = ch
        self._take_shared_lock()
        try:
            self._open_index()
        except IndexDamagedError as e:
            self.index_damage = e
        except StoreError:
            self._release_lock()
            raise
        self.meta = meta
        _OPEN_PATHS[str(meta.get("uuid"))] = self.path

    def _take_shared_lock(self) -> None:
        """flock `lock` shared.  A read-only store creates nothing: it opens the
        lock file read-only (flock needs no write permission) and goes without
        a lock if even that fails, as on read-only media with no lock file."""
        lock = self.path / "lock"
        fd = -1
        try:
            if not self.readonly:
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as e:
                    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                        raise
            if fd < 0:
                try:
                    fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM):
                        raise
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_SH)
                self._lockfd = fd
        except OSError as e:
            if fd >= 0:
                os.close(fd)
            raise _oserror(f"locking {self.path}", e) from None

    def _open_index(self) -> None:
        """Open the index; an index that is gone while data files exist is
        damage (LMDB would make an empty one and every block would read as
        missing)."""
        ipath = self.path / "index"
        mdb = ipath / "data.mdb"
        try:
            empty = not mdb.exists() or mdb.stat().st_size == 0
        except OSError:
            empty = False  # not a directory, say: the index checks say what
        if empty and (ipath.is_dir() or not ipath.exists()):
            n = sum(1 for _ in self._data_files())
            if n:
                raise IndexDamagedError(
                    str(ipath), f"missing or empty while data/ holds {n} data files"
                )
        self._index = LMDBIndex(str(ipath), readonly=self.readonly)

    def data_bytes(self) -> int:
        """The size of every data file: what a check or reindex reads (from the
        directory alone, so it is safe whatever state the index is in)."""
        return sum(_size(p) for p in self._data_files())

    def _data_files(self) -> Iterator[Path]:
        try:
            return iter(sorted((self.path / "data").glob("*.vtd")))
        except OSError:
            return iter(())

    def _release_lock(self) -> None:
        if self._lockfd >= 0:
            os.close(self._lockfd)
            self._lockfd = -1

    def _refresh(self) -> bool:
        """Pick up a datadir another process created since we looked."""
        if self.index_damage is not None:
            raise self.index_damage
        if self.meta is None and (self.path / METADATA).exists():
            self._open_existing()
        return self.meta is not None

    def _ensure_initialized(self) -> None:
        if self.index_damage is not None:
            raise self.index_damage
        if self.meta is not None or self._refresh():
            return
        import uuid

        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "uuid": uuid.uuid4().hex,
            "hashclass": self.hashclass.hashname,
            "chunker": self.chunker.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            if self.path.exists():
                try:
                    self._check_creatable()
                except StoreError:
                    if self._refresh():  # another process created it meanwhile
                        return
                    raise
            # metadata first, then data/: another process looking in meanwhile
            # sees an empty directory (or hidden temporary files), never a
            # data/ without metadata
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.mkdir(mode=0o700, exist_ok=True)
            tmp = self.path / f".{METADATA}.{os.getpid()}.{threading.get_ident()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path / METADATA)  # atomic: the first creator wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            (self.path / "data").mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self.path)
        except OSError as e:
            raise _oserror(f"creating datadir {self.path}", e) from None
        self._open_existing()

    # -- data files --------------------------------------------------------

    def data_file_path(self, fi: FileInfo) -> Path:
        """Where the data file described by `fi` lives."""
        return self.path / "data" / f"{fi.uuid}.vtd"

    def _file_info(self, num: int) -> FileInfo:
        fi = self._files.get(num)
        if fi is None:
            self._files = self._index.files()
            fi = self._files.get(num)
            if fi is None:
                raise StoreError(f"datadir {self.path}: index names unknown data file {num}")
        return fi

    def _file_path(self, num: int) -> str:
        return str(self.data_file_path(self._file_info(num)))

    def _open_writer(self) -> RecordWriter:
        from vtstore.stores.recovery import adopt_or_create
        from vtstore.stores.writer import RecordWriter

        self._ensure_initialized()
        try:
            (self.path / "data").mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise _oserror(f"datadir {self.path}", e) from None
        fd, fi, end = adopt_or_create(self)
        self._wfd, self._wfile = fd, fi
        self._wrote = True
        self._writer = RecordWriter(
            fd,
            str(self.data_file_path(fi)),
            fi.num,
            end,
            self._commit_batch,
            frame_size=self.frame_size,
            zstd_level=self.zstd_level,
            compress=self.compress,
        )
        return self._writer

    def new_data_file(self) -> tuple[int, FileInfo]:
        """Create, lock and register a new data file; return `(fd, info)`.

        The file is written under a temporary name and renamed into place with
        its header, so no process ever sees a data file without one.
        """
        import uuid

        from vtstore.stores.vtd import encode_header

        u = uuid.uuid4().hex
        ddir = self.path / "data"
        p = ddir / f"{u}.vtd"
        tmp = ddir / f".{u}.vtd.tmp"
        hdr = encode_header(self.hashclass.hashname, u, datadir=self.meta["uuid"])
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise _oserror(f"creating {p}", e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, hdr, 0)
            os.fdatasync(fd)
            os.rename(tmp, p)
            _fsync_dir(ddir)
            fi = self._index.new_file(u, len(hdr))
        except OSError as e:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            p.unlink(missing_ok=True)
            raise _oserror(f"creating {p}", e) from None
        except StoreError:
            os.close(fd)
            p.unlink(missing_ok=True)
            raise
        return fd, fi

    def _take_counters(self) -> dict[str, int]:
        with self._clock:
            c = {"adds_dup": self._dup[0], "bytes_dup": self._dup[1]}
            self._dup = [0, 0]
        return c

    def _commit_batch(self, pairs: list[tuple[bytes, bytes]], nbytes: int, end: int) -> None:
        fi = self._wfile
        fi.indexed_to = end
        self._index.commit_values(pairs, nbytes, files=[fi], counters=self._take_counters())

    def _close_writer(self, seal: bool) -> None:
        w = self._writer
        if w is None:
            return
        try:
            if w.failed is None:
                w.flush()
        finally:
            w.close()
            self._writer = None
            fi = self._wfile
            try:
                if seal and w.failed is None:
                    fi.sealed = True
                    self._index.commit(files=[fi])
            finally:
                os.close(self._wfd)
                self._wfd = -1
                self._wfile = None

    def _rollover(self) -> None:
        self._close_writer(seal=True)
        if self.max_size:
            from vtstore.stores.recovery import evict_oldest

            evict_oldest(self)

    # -- the Store core ------------------------------------------------------

    def _read_entry(self, h: HashCode, e: IndexEntry, retry: bool = True) -> bytes:
        try:
            with self._fds.fd(e.filenum) as fd:
                return read_block(fd, self._frames, h, e)
        except FileNotFoundError:
            # evicted or rewritten by another process since we looked it up
            self._fds.forget(e.filenum)
            self._files.pop(e.filenum, None)
            e2 = self._index.get(h)
            if e2 is None:
                raise KeyError(h) from None
            if retry and e2 != e:
                return self._read_entry(h, e2, retry=False)
            raise CorruptBlockError(h, f"data file {e.filenum} is missing") from None
        except OSError as x:
            raise _oserror(f"reading datadir {self.path}", x) from None

    def _lookup(self, h: HashCode):
        w = self._writer
        if w is not None:
            x = w.lookup(h)
            if x is not None:
                return x
        if self._index is None and not self._refresh():
            return None
        return self._index.get(h)

    def _get(self, h: HashCode) -> bytes | None:
        x = self._lookup(h)
        if x is None or isinstance(x, bytes):
            return x
        try:
            return self._read_entry(h, x)
        except KeyError:
            return None

    def get_many(self, hashcodes) -> list[bytes]:
        """The data for each hashcode, in order (as `Store.get_many`: the first
        missing one raises `MissingBlockError`, a damaged one
        `CorruptBlockError` naming it).

        Read as a batch: one index transaction per `GET_MANY_LOOKUPS`
        hashcodes, blocks still in the open writer served from it, the rest
        read natively by `readcache.read_many` (sorted, coalesced preads, each
        frame decoded once, the frames of a batch on two threads, checked in a
        batch without the GIL).  Whatever the
        batch cannot serve goes through the one-block path, which retries a
        file evicted meanwhile and names the damage.
        """
        self._check_open()
        hs = hashcodes if isinstance(hashcodes, list) else list(hashcodes)
        hc = self.hashclass
        for h in hs:
            if type(h) is not hc:
                self.check_hashcode(h)
        # each block read once however often it is asked for (in first-asked
        # order, so the first missing or damaged one is still the one raised)
        uniq = list(dict.fromkeys(hs))
        out: list = []
        for i in range(0, len(uniq), GET_MANY_LOOKUPS):
            out.extend(self._get_batch(uniq[i : i + GET_MANY_LOOKUPS]))
        if len(uniq) == len(hs):
            return out
        found = dict(zip(uniq, out, strict=True))
        return [found[h] for h in hs]

    def read_joined(self, hashcodes, lengths: bool = False, check: bool = True, buffer=None):
        """The data of the blocks `hashcodes`, end to end: what
        `b"".join(self.get_many(hashcodes))` returns, and raising as it does;
        `lengths`: `(data, [length of each block])`.

        For a file streamed out (`vt httpd`): a run of plain (uncompressed)
        BLAKE3 blocks is read straight into one result and checked without the
        GIL (`readcache.read_joined`), with no bytes object per block and no
        join; anything else (compressed frames, blocks still in the writer,
        damage) goes through `get_many`.  At most `GET_MANY_LOOKUPS` hashcodes
        take the fast path in one call.  `buffer(size)`: a writable buffer
        to read that run into (one used again), returned as the data.

        `check=False` leaves the hash check out, for a reader that checks
        every block itself (vt httpd's `b/get?joined&unchecked`): the
        hashcodes may then be bare digests (what the index is keyed by) of
        any class, and where the fast path does not apply the answer is None
        (the caller then reads them checked).
        """
        self._check_open()
        hs = hashcodes if isinstance(hashcodes, list) else list(hashcodes)
        w = self._writer
        if (
            0 < len(hs) <= GET_MANY_LOOKUPS
            and (not check or all(type(h) is self.hashclass for h in hs))
            and (w is None or not w.pending_keys())
            and (self._index is not None or self._refresh())
        ):
            try:
                got = read_joined(
                    self._fds, hs, self._index.get_many_raw(hs), check=check, buffer=buffer
                )
            except (ValueError, TypeError, OSError):
                got = None  # get_many names what is wrong
            if got is not None:
                return got if lengths else got[0]
        if not check:
            return None
        datas = self.get_many(hs)
        data = b"".join(datas)
        return (data, [len(d) for d in datas]) if lengths else data

    def _get_batch(self, hs: list) -> list[bytes]:
        if self._index is None and not self._refresh():
            values = [None] * len(hs)
        else:
            values = self._index.get_many_raw(hs)
        held = {}
        w = self._writer
        if w is not None:
            for i, h in enumerate(hs):
                if w.is_pending(h):
                    x = w.lookup(h)
                    if isinstance(x, IndexEntry):
                        values[i] = x.encode()
                    elif x is not None:
                        held[i] = x
                        values[i] = None
        try:
            datas = read_many(self._fds, self._frames, hs, values, self._decoder)
        except ValueError as e:
            raise IndexDamagedError(self._index.path, str(e)) from None
        except OSError as x:
            raise _oserror(f"reading datadir {self.path}", x) from None
        for i, d in enumerate(datas):
            if d is None:
                d = held.get(i)
                if d is None:
                    d = self._get(hs[i])
                    if d is None:
                        raise MissingBlockError(hs[i], self.name)
                datas[i] = d
        return datas

    def _contains(self, h: HashCode) -> bool:
        w = self._writer
        if w is not None and w.is_pending(h):
            return True
        if self._index is None and not self._refresh():
            return False
        return self._index.contains(h)

    def contains_many(self, hashcodes) -> list[bool]:
        """For each hashcode, whether the store holds it (one index transaction)."""
        self._check_open()
        hs = list(hashcodes)
        if self._index is None and not self._refresh():
            return [False] * len(hs)
        ok = [type(h) is self.hashclass for h in hs]
        found = self._index.contains_many([h for h, good in zip(hs, ok, strict=True) if good])
        it = iter(found)
        w = self._writer
        out = []
        for h, good in zip(hs, ok, strict=True):
            if not good:
                out.append(False)
                continue
            f = next(it)
            out.append(f or (w is not None and w.is_pending(h)))
        return out

    def add(self, data) -> HashCode:
        """Store `data`; return its hashcode."""
        self._check_writable()
        n = len(data)
        if n > MAX_BLOCK_SIZE:
            raise StoreError(f"block of {n} octets exceeds the maximum of {MAX_BLOCK_SIZE}")
        h = self.hashclass.from_data(data)
        with self._wlock:
            w = self._writer or self._open_writer()
            size = -1 if self._index.contains(h) else w.add(h, data)
            if size < 0:
                with self._clock:
                    self._dup[0] += 1
                    self._dup[1] += n
            elif size >= self.data_file_size:
                self._rollover()
        return h

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Store each of `datas`; return their hashcodes in order."""
        return self.add_many_reporting(datas)[0]

    def add_tree_many(self, datas: Sequence) -> list[HashCode]:
        """`add_many` for tree blocks (directories): they go into frames of
        their own, so a walk of the tree reads few frames."""
        return self.add_many_reporting(datas, tree=True)[0]

    def add_tree_many_reporting(self, datas: Sequence) -> tuple[list[HashCode], list[bool]]:
        """`add_tree_many`, also saying for each block whether it was new."""
        return self.add_many_reporting(datas, tree=True)

    def add_many_reporting(
        self, datas: Sequence, tree: bool = False
    ) -> tuple[list[HashCode], list[bool]]:
        """`add_many`, also saying for each block whether it was new."""
        self._check_writable()
        for d in datas:
            if len(d) > MAX_BLOCK_SIZE:
                raise StoreError(
                    f"block of {len(d)} octets exceeds the maximum of {MAX_BLOCK_SIZE}"
                )
        hs = self.hashclass.from_data_many(datas)
        with self._wlock:
            w = self._writer or self._open_writer()
            present = self._index.contains_many(hs)
            new = [False] * len(hs)
            todo = [i for i, p in enumerate(present) if not p]
            while todo:
                w = self._writer or self._open_writer()
                taken, fresh, size = w.add_many(
                    [hs[i] for i in todo], [datas[i] for i in todo], self.data_file_size, tree
                )
                for i, f in zip(todo, fresh, strict=False):
                    new[i] = f
                todo = todo[taken:]
                if size >= self.data_file_size:
                    self._rollover()
                    # what the old file held is in the index now
                    if todo:
                        again = self._index.contains_many([hs[i] for i in todo])
                        todo = [i for i, p in zip(todo, again, strict=True) if not p]
            dups = [len(d) for d, f in zip(datas, new, strict=True) if not f]
            if dups:
                with self._clock:
                    self._dup[0] += len(dups)
                    self._dup[1] += sum(dups)
        return hs, new

    def __len__(self) -> int:
        self._check_open()
        if self._index is None and not self._refresh():
            return 0
        n = self._index.count()
        w = self._writer
        if w is not None:
            pend = w.pending_keys()
            if pend:
                n += sum(1 for p in self._index.contains_many(pend) if not p)
        return n

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        if self._index is None and not self._refresh():
            return iter(())
        return iter_index_and_pending(self.hashclass, self._index, self._writer, start)

    def flush(self) -> None:
        """Make every block added so far durable: fsync data, then commit the index."""
        if self.readonly or self.closed:
            return
        with self._wlock:
            if self._writer is not None:
                self._writer.flush()
            if self._index is not None and any(self._dup):
                self._index.commit(counters=self._take_counters())

    def _close(self) -> None:
        try:
            with self._wlock:
                self._close_writer(seal=False)
        finally:
            self._decoder.close()
            self._fds.close()
            self._frames.clear()
            if self._index is not None:
                if not self._compact_index():
                    self._index.close()
                self._index = None
            self._release_lock()

    def _compact_index(self) -> bool:
        """After writing, rewrite a bloated index without its free pages (only
        if no other process has the datadir open).  Random keys leave an LMDB
        file about 3x its live pages; a pack of a GiB tree left 31 MiB for
        11 MiB of entries.  Return whether the index was closed doing it."""
        if self.readonly or not self._wrote or self._lockfd < 0 or self._index is None:
            return False
        try:
            pages, packed = self._index.bloat()
        except (lmdb.Error, StoreError):
            return False
        if pages < 1.5 * packed + 256:
            return False
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # in use elsewhere: compact another time
        return self._index.close_compacted()

    # -- exclusive operations ----------------------------------------------

    def lock_exclusive(self) -> None:
        """Take the datadir lock exclusively (no other open store anywhere)."""
        self._check_open()
        self._ensure_initialized()
        self._flock_exclusive()

    def _flock_exclusive(self) -> None:
        """Close this store's writer and take the datadir lock exclusively, or
        say in one line that another store or process has it open."""
        with self._wlock:
            self._close_writer(seal=False)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(
                    f"datadir {self.path} is in use by another store or process; close it first"
                ) from None
            raise _oserror(f"locking {self.path}", e) from None

    def check_can_write(self, what: str) -> None:
        """Raise `ReadOnlyError` (one line) if this process cannot write the
        datadir: a read-only store, read-only media, no write permission."""
        self._check_writable()
        lack = [
            p
            for p in (self.path, self.path / "data", self.path / "index")
            if p.is_dir() and not os.access(p, os.W_OK)
        ]
        if lack or (self._index is not None and not self._index.writable):
            raise ReadOnlyError(
                f"cannot {what}: datadir {self.path} is not writable"
                " (read-only media or no write permission)"
            )

    def reset_index(self) -> None:
        """Replace the index, whatever state it is in (damaged, missing, a file),
        with an empty one, for `reindex` to fill; takes the datadir lock
        exclusively (release it with `unlock_exclusive`).  The dedup counters
        are carried over when the old index can still be read."""
        self.check_can_write("rebuild the index")
        if self.meta is None:
            self._ensure_initialized()
        self._flock_exclusive()
        keep = {}
        if self._index is not None:
            try:
                if self.index_damage is not None or probe_index(self._index.path):
                    raise StoreError("unreadable")
                c = self._index.counters()
                keep = {k: c[k] for k in ("adds_dup", "bytes_dup") if c.get(k)}
            except StoreError:
                pass
            self._index.close()
            self._index = None
        self._fds.close()
        self._frames.clear()
        self._files = {}
        ipath = self.path / "index"
        try:
            if ipath.is_dir() and not ipath.is_symlink():
                import shutil

                shutil.rmtree(ipath)
            elif os.path.lexists(ipath):
                ipath.unlink()
            ipath.mkdir(mode=0o700)
        except OSError as e:
            raise _oserror(f"replacing the index {ipath}", e) from None
        self._index = LMDBIndex(str(ipath))
        self.index_damage = None
        if keep:
            self._index.commit(counters=keep)

    def unlock_exclusive(self) -> None:
        """Go back to the shared lock every open store holds."""
        if self._lockfd >= 0:
            fcntl.flock(self._lockfd, fcntl.LOCK_SH)

    def fsck(self, repair: bool = False, progress=None):
        """Check every record of every data file and every index entry; see
        `vtstore.stores.fsck.fsck_datadir`."""
        from vtstore.stores.fsck import fsck_datadir

        return fsck_datadir(self, repair=repair, progress=progress)

    def reindex(self, progress=None):
        """Rebuild the index from the data files alone; see
        `vtstore.stores.fsck.reindex_datadir`."""
        from vtstore.stores.fsck import reindex_datadir

        return reindex_datadir(self, progress=progress)

    def hash_of_hashcodes(self, start=None, after=False, length=None):
        """`Store.hash_of_hashcodes`; a crypt store's backend, whose names are
        tags and not a hash that `hashlib` knows, hashes its windows its own way
        (`vtstore.stores.crypt.names.hash_of_names`)."""
        of_names = getattr(self.hashclass, "hash_of_names", None)
        if of_names is None:
            return super().hash_of_hashcodes(start, after, length)
        window = list(self.hashcodes(start=start, after=after, length=length))
        return of_names(window), (window[-1] if window else None)

    # -- description ----------------------------------------------------------

    @property
    def exports(self) -> dict[str, Path]:
        """The archives kept beside the data: `NAME.vt` files, by NAME."""
        if not self.path.is_dir():
            return {}
        return {p.name[:-3]: p for p in sorted(self.path.glob("*.vt")) if p.is_file()}

    def archive_path(self, name: str) -> Path:
        """Where the archive called `name` lives (it need not exist yet)."""
        if not name or "/" in name or "\0" in name or name.startswith("."):
            raise StoreError(f"bad archive name {name!r}")
        return self.path / f"{name}.vt"

    def info(self) -> dict:
        """A description for `vt info`."""
        d = {
            "type": "datadir",
            "path": str(self.path),
            "hashclass": self.hashclass.hashname,
            "chunker": self.chunker.to_dict(),
            "initialized": self.initialized,
        }
        if not self.initialized:
            return d
        if self.index_damage is None:
            try:
                return self._info(d)
            except IndexDamagedError as e:
                self.index_damage = e
        # what a check or a reindex needs to size its progress bar
        d.update(
            index_damage=str(self.index_damage),
            bytes_on_disk=self.data_bytes(),
        )
        return d

    def _info(self, d: dict) -> dict:
        self.flush()
        files = self._index.files()
        sizes = []
        for fi in files.values():
            try:
                sizes.append(self.data_file_path(fi).stat().st_size)
            except OSError:
                sizes.append(0)
        c = self._index.counters()
        idx = self.path / "index" / "data.mdb"
        d.update(
            uuid=self.meta.get("uuid"),
            created=self.meta.get("created"),
            blocks=len(self),
            bytes_stored=c.get("bytes_added", 0),
            bytes_on_disk=sum(sizes),
            index_bytes=idx.stat().st_size if idx.exists() else 0,
            data_files=len(files),
            sealed_files=sum(1 for fi in files.values() if fi.sealed),
            adds_dup=c.get("adds_dup", 0),
            bytes_dup=c.get("bytes_dup", 0),
            max_size=self.max_size,
            exports=sorted(self.exports),
        )
        return d
