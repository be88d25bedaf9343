"""`PackStore`: blocks in `.vtd` packs with index objects, over any backend.

The layout under the store's prefix (docs/STORES.md, "Object storage")::

    config              JSON: {"layout": "packs", "hashclass", "uuid", "version"}
    data/<id>           a pack: a `.vtd` data file (docs/FORMATS.md), header uuid <id>
    index/<id>          the pack's index object (`encode_pack_index`)
    archives/NAME/KEY   archive states, one object each (`archives.py`)

`<id>` is 32 random hex digits chosen by the writer, so writers on different
machines never pick the same name; both objects are created with a
conditional create and never rewritten.  A pack's data object is complete
before its index object exists: a reader trusts only index objects.

Writing: blocks go through the datadir's `RecordWriter` (frames, zstd) into a
local spool file; at the size target, or at `flush`, the spool is sealed and
uploaded by a pool of threads (retried with back-off by `Retrying`) while
adding goes on into the next spool.  `flush` returns only when every pack and
index object holding a block added so far is acknowledged by the server: that
is the crash guarantee.  A sealed spool whose upload a crash cut off is
uploaded by the next writable open (same cache directory); an unsealed one
held nothing `flush` acknowledged and is removed.

Reading: a local LMDB index (`LMDBIndex`, the datadir's) in the cache directory
maps digests to (pack, record, span).  It is filled from the index objects
not yet loaded (a listing of `index/` at open, and again on a miss, at most
every `REFRESH_EVERY` seconds).  A block is read by a ranged GET of its record
and the records after it up to `readahead` octets, kept in a bounded cache of
records, so a tree read in order costs one request per `readahead`; the next
window is prefetched (8 MiB windows restored 1 GiB in 16 s where 2 MiB ones
took 25-30 s: PERFORMANCE.md).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import shutil
import threading
import time
import uuid as uuidmod
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from vtstore.codec import encode_varint
from vtstore.errors import (
    CorruptBlockError,
    FormatError,
    StoreError,
)
from vtstore.hashes import HashCode
from vtstore.stores.backends.base import Backend
from vtstore.stores.backends.layout import LayoutStore
from vtstore.stores.backends.packindex import (
    MAX_INDEX_OBJECT,
    decode_pack_index,
    encode_pack_index,
    with_filenum,
)
from vtstore.stores.index import IndexEntry, LMDBIndex, iter_index_and_pending
from vtstore.stores.lmdbenv import IndexDamagedError
from vtstore.stores.readcache import FrameCache, read_block
from vtstore.stores.vtd import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_ZSTD_LEVEL,
    TYPE_BLOCKS,
    TYPE_MASK,
    decode_payload,
    encode_header,
    parse_record_at,
)
from vtstore.stores.writer import RecordWriter

log = logging.getLogger(__name__)

DEFAULT_PACK_SIZE = 32 * 1024 * 1024
DEFAULT_UPLOADS = 4
DEFAULT_DOWNLOADS = 8
DEFAULT_READAHEAD = 8 * 1024 * 1024
DEFAULT_READ_CACHE = 64 * 1024 * 1024
REFRESH_EVERY = 2.0
#: windows being prefetched at most (reading in order needs one)
MAX_PREFETCH = 4
#: partial records kept from the ends of windows for the next ones: at most
#: this many, of at most `MAX_TAIL_BYTES` in all (the oldest go first)
MAX_TAILS = 32
MAX_TAIL_BYTES = 16 << 20


def _cut_at_end(why: str, left: int) -> bool:
    """Whether a walk that stopped `left` octets before the end of its buffer,
    for reason `why`, stopped at a record the buffer cuts short (not damage:
    the next window reads it whole, and finds damage if there is any)."""
    return "runs past the end" in why or (left < 11 and why.startswith("bad record header"))


# -- spools ------------------------------------------------------------------------


class _Spool:
    """One pack being written locally, then uploaded."""

    def __init__(self, path: str, pid: str, fd: int):
        self.path = path
        self.id = pid
        self.fd = fd
        self.writer: RecordWriter | None = None
        self.pairs: list[tuple[bytes, bytes]] = []
        self.nbytes = 0
        self.end = 0
        self.seq = 0  # the frame cache's file number for it (negative: a spool)

    def committed(self, pairs, nbytes, end) -> None:
        self.pairs.extend(pairs)
        self.nbytes += nbytes
        self.end = end


class PackStore(LayoutStore):
    """A store of packs and index objects on `backend`, with its local index
    and spool in `cache_dir` (see the module docstring)."""

    add_copies = True
    layout = "packs"

    def __init__(
        self,
        backend: Backend,
        cache_dir,
        *,
        pack_size: int = DEFAULT_PACK_SIZE,
        uploads: int = DEFAULT_UPLOADS,
        frame_size: int = DEFAULT_FRAME_SIZE,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        compress: bool = True,
        readahead: int = DEFAULT_READAHEAD,
        read_cache: int = DEFAULT_READ_CACHE,
        spool: str = "disk",
        downloads: int = DEFAULT_DOWNLOADS,
        **common,
    ):
        """`common`: `LayoutStore`'s hashclass, default_hashclass, readonly,
        name and config.  `downloads`: ranged GETs at once in `get_many`."""
        super().__init__(backend, **common)
        self.pack_size = pack_size
        if spool not in ("disk", "memory"):
            raise ValueError(f"spool is disk or memory, not {spool!r}")
        #: where packs are built: files in the cache directory (a sealed pack a
        #: crash kept from the server is uploaded by the next open), or memory
        #: (memfd: no disk writes; what a crash cut off was never acknowledged)
        self.spool = spool
        self.frame_size = frame_size
        self.zstd_level = zstd_level
        self.compress = compress
        self.readahead = readahead
        self.downloads = max(1, downloads)
        self._getters: ThreadPoolExecutor | None = None  # get_many's requests
        self.cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
        self._lock = threading.RLock()  # the spool being written
        self._slock = threading.Lock()  # `_spooled`
        self._ilock = threading.Lock()  # a pack moving from `_spooled` to the index
        self._frames = FrameCache(read_cache)
        self._readers: ThreadPoolExecutor | None = None  # prefetching
        #: prefetches in flight: (pack, window start) -> (future, window end)
        self._inflight: dict[tuple[int, int], tuple[Future, int]] = {}
        #: the partial record a window ended in: (pack, its start) -> its octets
        self._tails: dict[tuple[int, int], bytes] = {}
        self._tail_bytes = 0
        self._tlock = threading.Lock()
        self._trigger: dict[tuple[int, int], tuple[str, int, int]] = {}
        self._spool: _Spool | None = None
        self._sealing: list[_Spool] = []  # sealed, their writers finishing
        self._spooled: dict[bytes, tuple[_Spool, bytes]] = {}
        self._uploads: list[Future] = []
        self._pool = ThreadPoolExecutor(max_workers=max(1, uploads), thread_name_prefix="vt-up")
        self._max_sealed = max(1, uploads) + 1
        self._failed: BaseException | None = None
        self._last_refresh = 0.0
        self._packs: dict[int, tuple[str, int]] = {}
        self._spool_seq = 0
        os.makedirs(os.path.join(self.cache_dir, "spool"), mode=0o700, exist_ok=True)
        self.index = self._open_cache()
        try:
            self._check_cache()
            self.refresh(force=True)
            if not self.readonly:
                self._recover_spools()
        except BaseException:
            self._pool.shutdown(wait=False)
            self.index.close()
            raise

    # -- config and the local cache ------------------------------------------------

    def _config_created(self) -> None:
        self._check_cache()

    def _check_cache(self) -> None:
        """Empty the local index if it was built for another store at this place."""
        if self.config is None:
            return
        mark = os.path.join(self.cache_dir, "store")
        try:
            with open(mark) as f:
                known = f.read().strip()
        except FileNotFoundError:
            known = None
        if known != self.config["uuid"]:
            if known is not None:
                log.info("%s: the cache belongs to another store; rebuilding it", self.cache_dir)
                self.index.clear()
            with open(mark + ".tmp", "w") as f:
                f.write(self.config["uuid"] + "\n")
            os.replace(mark + ".tmp", mark)

    def _open_cache(self) -> LMDBIndex:
        """The local index; a damaged one is only a cache: removed and rebuilt."""
        path = os.path.join(self.cache_dir, "index")
        try:
            return LMDBIndex(path)
        except IndexDamagedError as e:
            log.warning("%s; it is a cache: rebuilding it from the index objects", e)
            shutil.rmtree(path, ignore_errors=True)
            return LMDBIndex(path)

    def rebuild_cache(self) -> int:
        """Empty the local index and load it again from the index objects
        (`vt fsck --repair`); return how many index objects were loaded."""
        with self._ilock:
            self.index.clear()
            self._packs.clear()
            self._frames.clear()
            return self.refresh(force=True)

    def refresh(self, force: bool = False) -> int:
        """Load the index objects not in the local index yet; return how many.
        Without `force`, at most once every `REFRESH_EVERY` seconds."""
        now = time.monotonic()
        if not force and now - self._last_refresh < REFRESH_EVERY:
            return 0
        self._last_refresh = now
        known = {fi.uuid for fi in self.index.files().values()}
        listed = [
            o.name[len("index/") :]
            for o in self.backend.list("index/")
            if len(o.name) == len("index/") + 32
        ]
        if force and known and not known.issubset(listed):
            # packs a gc (on any machine) deleted: a cache that still named
            # them would send reads to missing objects, and a writer would
            # deduplicate against blocks that are gone.  Load it all again.
            with self._ilock:
                self.index.clear()
                self._packs.clear()
                self._frames.clear()
            known = set()
        new = [pid for pid in listed if pid not in known]
        if not new:
            return 0
        with ThreadPoolExecutor(max_workers=min(16, len(new))) as ex:
            for pid, body in zip(
                new, ex.map(lambda p: self.backend.get(f"index/{p}"), new), strict=True
            ):
                if body is None:
                    continue
                if len(body) > MAX_INDEX_OBJECT:
                    log.warning("%s/index/%s: too large, skipped", self.backend.url, pid)
                    continue
                try:
                    pairs, size = decode_pack_index(body, self.hashclass.digest_size)
                except FormatError as e:
                    log.warning("%s/index/%s: %s; skipped (see vt fsck)", self.backend.url, pid, e)
                    continue
                self._index_pack(pid, pairs, size)
        return len(new)

    def _index_pack(self, pid: str, pairs, size: int, nbytes: int | None = None) -> None:
        """Enter one uploaded pack into the local index."""
        fi = self.index.new_file(pid, size)
        vals = [(d, with_filenum(v, fi.num)) for d, v in pairs]
        if nbytes is None:
            nbytes = sum(IndexEntry.decode(v).data_length for _, v in pairs)
        self.index.commit_values(vals, nbytes)

    def _pack_of(self, num: int) -> tuple[str, int]:
        p = self._packs.get(num)
        if p is None:
            fi = self.index.file_info(num)
            if fi is None:
                raise StoreError(f"{self.name}: the local index names an unknown pack {num}")
            p = self._packs[num] = (fi.uuid, fi.indexed_to)
        return p

    # -- writing -------------------------------------------------------------------

    def _new_spool(self) -> _Spool:
        pid = uuidmod.uuid4().hex
        path = os.path.join(self.cache_dir, "spool", f"{pid}.vtd")
        if self.spool == "memory":
            fd = os.memfd_create(f"vt-spool-{pid}", os.MFD_CLOEXEC)
            path = f"memory:{pid}.vtd"
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # so that another process's recovery leaves it be
        header = encode_header(self.hashclass.hashname, pid)
        os.pwrite(fd, header, 0)
        sp = _Spool(path, pid, fd)
        self._spool_seq += 1
        sp.seq = -self._spool_seq  # frame cache key space of its own
        sp.writer = RecordWriter(
            fd,
            path,
            0,
            len(header),
            lambda pairs, nbytes, end: self._committed(sp, pairs, nbytes, end),
            frame_size=self.frame_size,
            zstd_level=self.zstd_level,
            compress=self.compress,
            commit_count=1 << 40,
            commit_bytes=1 << 60,
            direct=False,
        )
        return sp

    def _committed(self, sp: _Spool, pairs, nbytes: int, end: int) -> None:
        """The writer's commit: its blocks move to `_spooled` before it drops
        them from its pending ones, so a lookup or listing never misses them."""
        with self._slock:
            sp.committed(pairs, nbytes, end)
            for d, v in pairs:
                self._spooled[d] = (sp, v)

    def add_many(self, datas: Sequence) -> list[HashCode]:
        return self.add_many_reporting(datas)[0]

    def add_tree_many(self, datas: Sequence) -> list[HashCode]:
        return self._add(datas, tree=True)[0]

    def add_tree_many_reporting(self, datas: Sequence):
        return self._add(datas, tree=True)

    def add_many_reporting(self, datas: Sequence):
        return self._add(datas, tree=False)

    def _add(self, datas: Sequence, tree: bool):
        datas, hs = self._start_add(datas)
        if not datas:
            return hs, []
        present = self.index.contains_many([bytes(h) for h in hs])
        new = [False] * len(hs)
        todo = [i for i, p in enumerate(present) if not p and bytes(hs[i]) not in self._spooled]
        with self._lock:
            k = 0
            while k < len(todo):
                if self._spool is None:
                    self._spool = self._new_spool()
                idx = todo[k:]
                taken, fresh, size = self._spool.writer.add_many(
                    [hs[i] for i in idx], [datas[i] for i in idx], self.pack_size, tree
                )
                for i, f in zip(idx[:taken], fresh, strict=True):
                    new[i] = f
                k += taken
                if size >= self.pack_size:
                    self._seal()
        return hs, new

    def _seal(self) -> None:
        """Detach the spool being written and queue its sealing and upload
        (with `_lock`): the writer's last frames, its sync and the upload run
        on the upload threads while adding goes on into a new spool."""
        sp = self._spool
        if sp is None:
            return
        with self._slock:  # never in neither place for a lookup or listing
            self._sealing.append(sp)
            self._spool = None
        # no more than a few sealed packs wait: adding waits for the uploads
        self._uploads = [f for f in self._uploads if not f.done() or f.exception()]
        while len(self._uploads) >= self._max_sealed:
            self._uploads.pop(0).result()
        self._uploads.append(self._pool.submit(self._finish, sp))

    def _finish(self, sp: _Spool) -> None:
        """Seal spool `sp` (an upload thread), then upload it."""
        w = sp.writer
        try:
            try:
                w.flush()
            finally:
                w.close()
            with self._slock:
                self._sealing.remove(sp)
        except BaseException as e:
            with self._slock:
                if sp in self._sealing:
                    self._sealing.remove(sp)
            if self._failed is None:
                self._failed = e
            raise
        if not sp.pairs:
            self._drop_spool(sp)
            return
        body = encode_pack_index(sp.pairs, sp.end)
        if self.spool == "disk":
            # the index beside the spool marks it sealed: recovery uploads it
            with open(sp.path[: -len(".vtd")] + ".idx", "wb") as f:
                f.write(body)
                os.fsync(f.fileno())
        self._upload(sp, body)

    def _live(self) -> list[_Spool]:
        """The spools whose writers may hold blocks not in `_spooled` yet."""
        with self._slock:
            return self._live_locked()

    def _live_locked(self) -> list[_Spool]:
        sp = self._spool
        return [*self._sealing, sp] if sp is not None else list(self._sealing)

    def _pending_digests(self) -> set[bytes]:
        """Every block added and not yet in the local index, in one consistent look."""
        with self._slock:
            out = set(self._spooled)
            for sp in self._live_locked():
                out.update(bytes(h) for h in sp.writer.pending_keys())
        return out

    def _upload(self, sp: _Spool, body: bytes) -> None:
        try:
            if os.fstat(sp.fd).st_size < sp.end:
                raise StoreError(f"{sp.path}: spool file is short")
            # mapped, not read: the client sends from the page cache, no copy here
            with mmap.mmap(sp.fd, sp.end, prot=mmap.PROT_READ) as mm:
                view = memoryview(mm)
                try:
                    self.backend.put_if_absent(f"data/{sp.id}", view)
                finally:
                    view.release()  # else closing the map fails, hiding the error
            self.backend.put_if_absent(f"index/{sp.id}", body)
        except BaseException as e:
            if self._failed is None:
                self._failed = e
            raise
        # not `_lock`: `_seal` holds it while it waits for uploads; `_ilock`
        # so that `len` sees the pack in the index or in `_spooled`, once
        with self._ilock:
            self._index_pack(sp.id, sp.pairs, sp.end, sp.nbytes)
            with self._slock:
                for d, _ in sp.pairs:
                    if self._spooled.get(d, (None,))[0] is sp:
                        del self._spooled[d]
        self._drop_spool(sp)

    def _drop_spool(self, sp: _Spool) -> None:
        for suffix in (".idx", ".vtd") if self.spool == "disk" else ():
            try:
                os.unlink(sp.path[: -len(".vtd")] + suffix)
            except FileNotFoundError:
                pass
        self._frames.discard_file(sp.seq)
        os.close(sp.fd)
        sp.fd = -1

    def _recover_spools(self) -> None:
        """Upload spools sealed by a writer that died; remove unsealed ones."""
        d = os.path.join(self.cache_dir, "spool")
        for f in sorted(os.listdir(d)):
            if not f.endswith(".vtd") or len(f) != 36:
                continue
            path = os.path.join(d, f)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live writer's
                continue
            sp = _Spool(path, f[:32], fd)
            sp.seq = 0
            try:
                with open(path[:-4] + ".idx", "rb") as fi:
                    body = fi.read()
                sp.pairs, sp.end = decode_pack_index(body, self.hashclass.digest_size)
            except (FileNotFoundError, FormatError):
                log.info("%s: removing an unsealed spool (nothing flushed was in it)", path)
                self._drop_spool(sp)
                continue
            log.info("%s: uploading a pack a previous writer sealed", path)
            self._upload(sp, body)

    def flush(self) -> None:
        """Return when every block added so far is in a pack and index object
        the server acknowledged (and in the local index)."""
        if self.readonly or self.closed:
            return
        with self._lock:
            self._check_failed()
            self._seal()
            pending, self._uploads = self._uploads, []
        for f in pending:
            f.result()
        self._check_failed()

    def _close(self) -> None:
        try:
            with self._lock:
                sp, self._spool = self._spool, None
            if sp is not None:  # unflushed (close after a failure): not kept
                sp.writer.close()
                self._drop_spool(sp)
        finally:
            self._pool.shutdown(wait=True)
            for pool in (self._readers, self._getters):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            spools = [s for s, _ in self._spooled.values()] + self._sealing
            for sp in {id(s): s for s in spools}.values():
                if sp.fd >= 0:  # a failed upload's: the next open uploads it
                    os.close(sp.fd)
                    sp.fd = -1
            self._spooled.clear()
            self.index.close()
            self.backend.close()

    # -- reading ----------------------------------------------------------------

    def _contains(self, h: HashCode) -> bool:
        d = bytes(h)
        if d in self._spooled or self.index.contains(d):
            return True
        return any(sp.writer.is_pending(h) for sp in self._live())

    def contains_many(self, hashcodes) -> list[bool]:
        self._check_open()
        hs = [h if type(h) is self.hashclass else None for h in hashcodes]
        got = self.index.contains_many([bytes(h) for h in hs if h is not None])
        it = iter(got)
        out = []
        live = self._live()
        for h in hs:
            if h is None:
                out.append(False)
                continue
            ok = next(it) or bytes(h) in self._spooled
            out.append(ok or any(sp.writer.is_pending(h) for sp in live))
        return out

    def _get(self, h: HashCode) -> bytes | None:
        d = bytes(h)
        for sp in self._live():
            x = sp.writer.lookup(h)
            if isinstance(x, bytes):
                return x
            if x is not None:
                return read_block(sp.fd, self._frames, h, x._replace(filenum=sp.seq))
        got = self._spooled.get(d)
        if got is not None:
            sp, v = got
            try:
                e = IndexEntry.decode(v)._replace(filenum=sp.seq)
                return read_block(sp.fd, self._frames, h, e)
            except OSError:
                pass  # uploaded and dropped meanwhile: it is in the index now
        e = self.index.get(d)
        if e is None and self.refresh():
            e = self.index.get(d)
        if e is None:
            return None
        return self._read_remote(h, e)

    def get_many(self, hashcodes) -> list[bytes]:
        """The data of each hashcode, in order: a batch becomes parallel ranged
        GETs, several records a request (`vtstore.stores.backends.packread`)."""
        from vtstore.stores.backends.packread import get_many

        return get_many(self, hashcodes)

    def _read_remote(self, h: HashCode, e: IndexEntry) -> bytes:
        key = (e.filenum, e.payload_offset)
        payload = self._frames.get(key)
        if payload is None:
            payload = self._fetch(h, e)
        else:
            after = self._trigger.pop(key, None)
            if after is not None:  # reading into a prefetched window: get the next
                self._prefetch(e.filenum, *after)
        data = payload[e.data_offset : e.data_offset + e.data_length]
        if len(data) != e.data_length or not h.check(data):
            raise CorruptBlockError(h, f"pack {self._pack_of(e.filenum)[0]} does not hold it")
        return data

    def _window(self, num: int, pid: str, start: int, end: int):
        """GET octets `[start, end)` of pack `pid` (beginning at a record),
        cache the payload of every whole record in them; return the cache keys,
        where the first record not taken begins, why it was not (if not for
        the end of the window), and the first payload (which a small cache
        may not keep).

        A window rarely ends at a record boundary: the octets of the record it
        cuts are kept (`_tails`) and the next window begins with them instead
        of asking for them again (else every window fetched half a frame
        twice: 20% more octets with 1 MiB windows)."""
        buf = self._get_range(num, pid, start, end)
        payloads, pos, why = self._cache_records(num, start, buf, 0)
        size = self._pack_of(num)[1]
        if why is not None and start + len(buf) == end < size and _cut_at_end(why, len(buf) - pos):
            with self._tlock:
                tails = self._tails
                old = tails.pop((num, start + pos), b"")
                tails[(num, start + pos)] = bytes(memoryview(buf)[pos:])
                self._tail_bytes += len(buf) - pos - len(old)
                while len(tails) > MAX_TAILS or self._tail_bytes > MAX_TAIL_BYTES:
                    self._tail_bytes -= len(tails.pop(next(iter(tails))))
            why = None
        keys = list(payloads)
        return keys, start + pos, why, payloads[keys[0]] if keys else None

    def _get_range(self, num: int, pid: str, start: int, end: int):
        """Octets `[start, end)` of pack `pid`; those of a record a window cut
        short at `start` (`_tails`) are not asked for again."""
        with self._tlock:
            tail = self._tails.pop((num, start), b"")
            self._tail_bytes -= len(tail)
        if len(tail) >= end - start:
            return tail[: end - start]
        got = self.backend.get_range(f"data/{pid}", start + len(tail), end)
        return tail + got if tail else got

    def _inflight_at(self, num: int, at: int) -> tuple[tuple[int, int], Future] | None:
        """The prefetch in flight whose window of pack `num` holds offset `at`."""
        for key, (f, end) in list(self._inflight.items()):
            if key[0] == num and key[1] <= at < end:
                return key, f
        return None

    def _cache_records(self, num: int, start: int, buf, pos: int):
        """Decode and cache the whole records of `buf` (octets of pack `num`
        from `start`) from `pos` on: `({key: payload}, where the walk stopped,
        why if not at the end)`."""
        out = {}
        why = None
        while pos < len(buf):
            r = parse_record_at(buf, pos, len(buf))
            if isinstance(r, str):
                why = r
                break
            if r.flags & TYPE_MASK == TYPE_BLOCKS:
                try:
                    payload = decode_payload(
                        r.flags,
                        memoryview(buf)[r.payload_offset : r.payload_offset + r.payload_length],
                    )
                except FormatError as x:
                    why = str(x)
                    break
                key = (num, start + r.payload_offset)
                self._frames.put(key, payload)
                out[key] = payload
            pos = r.end
        return out, pos, why

    def _fetch(self, h: HashCode, e: IndexEntry) -> bytes:
        """Get the record `e` lies in and the records after it, up to
        `readahead` octets (from a prefetch if one is on its way); cache them
        all; start the prefetch of the next window; return `e`'s payload."""
        num = e.filenum
        pid, size = self._pack_of(num)
        head = len(encode_varint(e.flags)) + len(encode_varint(e.payload_length))
        start = e.payload_offset - head
        key = (num, e.payload_offset)
        # a prefetch on its way whose window holds the record (a tree block a
        # little ahead of the leaves being read): wait for it, do not fetch
        # its octets a second time
        found = self._inflight_at(num, start)
        if found is not None:
            wkey, fut = found
            if wkey[1] == start:
                self._inflight.pop(wkey, None)
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - fetched again below, errors and all
                pass
            payload = self._frames.get(key)
            if payload is not None:
                after = self._trigger.pop(key, None)
                if after is not None:
                    self._prefetch(num, *after)
                return payload
        need = head + e.payload_length + 4
        end = min(max(start + need, start + self.readahead), max(size, start + need))
        keys, after, why, payload = self._window(num, pid, start, end)
        if not keys or keys[0] != key:
            raise CorruptBlockError(h, f"pack {pid} at {start}: {why or 'no record'}")
        self._prefetch(num, pid, after, size)
        return payload

    def _prefetch(self, num: int, pid: str, start: int, size: int) -> None:
        """Fetch the window at `start` of a pack in the background (reading in
        order then waits for one request at most, not one per window)."""
        if start >= size or self.closed or self._inflight_at(num, start) is not None:
            return
        if len(self._inflight) >= MAX_PREFETCH:
            for k, (f, _) in list(self._inflight.items()):
                if f.done():
                    self._inflight.pop(k, None)
            if len(self._inflight) >= MAX_PREFETCH:
                return
        if self._readers is None:
            self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vt-readahead")
        end = min(size, start + self.readahead)

        def fetch():
            keys, after, _, _ = self._window(num, pid, start, end)
            if keys:
                self._trigger[keys[0]] = (pid, after, size)

        self._inflight[(num, start)] = (self._readers.submit(fetch), end)

    def __len__(self) -> int:
        self._check_open()
        with self._ilock:
            extra = list(self._pending_digests())
            missing = [
                d for d, ok in zip(extra, self.index.contains_many(extra), strict=True) if not ok
            ]
            return self.index.count() + len(missing)

    def pending_keys(self) -> list:
        """Blocks added and not yet in the local index (spooled or being written)."""
        return [self.hashclass(d) for d in self._pending_digests()]

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        return iter_index_and_pending(
            self.hashclass, self.index, self, None if start is None else bytes(start)
        )

    # -- info and checking ----------------------------------------------------

    def info(self) -> dict:
        """What `vt info` shows."""
        return {
            "type": "packs",
            "name": self.name,
            "url": self.backend.url,
            "hashclass": self.hashclass.hashname,
            "blocks": len(self),
            "packs": len(self.index.files()),
            "cache": self.cache_dir,
            "uuid": (self.config or {}).get("uuid"),
        }

    def fsck(self, repair: bool = False, progress=None):
        """Check every pack against its index object (`packcheck.check_packs`)."""
        from vtstore.stores.backends.packcheck import check_packs

        return check_packs(self, repair=repair, progress=progress)

    # -- garbage collection (`vtstore.lifecycle.gc_objects`) -----------------------

    def write_copies(self, hashcodes: Sequence[HashCode], datas: Sequence) -> None:
        """Write blocks into new packs although the index places them in a
        pack already: gc's copies of the live blocks of a pack it rewrites
        (`add_many` would skip them as present).  The caller has checked the
        data; `flush` uploads the copies and the local index then names them."""
        self._check_writable()
        self._check_failed()
        hs, datas = list(hashcodes), list(datas)
        with self._lock:
            k = 0
            while k < len(hs):
                if self._spool is None:
                    self._spool = self._new_spool()
                taken, _, size = self._spool.writer.add_many(
                    hs[k:], datas[k:], self.pack_size, False
                )
                k += taken
                if size >= self.pack_size:
                    self._seal()

    def forget_packs(self, nums) -> int:
        """Drop packs (local file numbers) from the local index: every entry
        still naming them and their file table entry.  Return the entries
        dropped.  For packs whose objects are gone (a gc deleted them)."""
        nums = set(nums)
        if not nums:
            return 0
        by_pack: dict[int, list[bytes]] = {n: [] for n in nums}
        for d, e in self.index.iter_items():
            if e.filenum in by_pack:
                by_pack[e.filenum].append(d)
        n = 0
        for num, digests in by_pack.items():
            n += self.index.delete_file_entries(num, digests)
            self._packs.pop(num, None)
            self._frames.discard_file(num)
        return n

    def reload_packs(self, nums) -> None:
        """Point the local index at packs `nums` for every block their index
        objects list, replacing entries that name another pack (loading keeps
        an entry present): after gc's copies, before the originals go."""
        for num in nums:
            fi = self.index.file_info(num)
            body = None if fi is None else self.backend.get(f"index/{fi.uuid}")
            if body is None:
                raise StoreError(f"{self.name}: pack {num} has no index object")
            pairs, _ = decode_pack_index(body, self.hashclass.digest_size)
            entries = [(d, IndexEntry.decode(with_filenum(v, num))) for d, v in pairs]
            self.index.commit(entries, replace=True)

    def drop_gone_packs(self) -> int:
        """If packs of the local index no longer have an index object (a gc on
        any machine deleted them), rebuild the local index from the index
        objects listed now; return how many were gone.  A cache that still
        named them would send reads to missing objects, and a writer would
        deduplicate against blocks that are gone."""
        listed = {o.name[len("index/") :] for o in self.backend.list("index/")}
        gone = [num for num, fi in self.index.files().items() if fi.uuid not in listed]
        if gone:
            with self._ilock:
                self.index.clear()
                self._packs.clear()
                self.refresh(force=True)
        return len(gone)
