"""Bounded read-side caches for data files: open descriptors and decoded frames.

`FDCache` keeps at most `max_fds` read descriptors open, closing the least
recently used; a descriptor in use by another thread is closed only when that
thread releases it, so eviction can never close an fd under a `pread`.
`FrameCache` keeps recently decoded frames (up to a byte cap) so that reading the
blocks of one frame in turn decompresses it once.  `FrameDecoder` decodes the
zstd frames of a batch on two threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack, contextmanager


class _Handle:
    __slots__ = ("fd", "users", "evicted")

    def __init__(self, fd: int):
        self.fd = fd
        self.users = 0
        self.evicted = False


class FDCache:
    """An LRU of read-only descriptors, keyed by anything (a file number)."""

    def __init__(self, opener: Callable[[object], str], max_fds: int = 64):
        self._path_of = opener
        self.max_fds = max_fds
        self._lock = threading.Lock()
        self._handles: OrderedDict[object, _Handle] = OrderedDict()

    @contextmanager
    def fd(self, key):
        """Context manager yielding an open read fd for `key`."""
        with self._lock:
            h = self._handles.get(key)
            if h is not None:
                self._handles.move_to_end(key)
                h.users += 1
        if h is None:
            fd = os.open(self._path_of(key), os.O_RDONLY | os.O_CLOEXEC)
            with self._lock:
                h = self._handles.get(key)
                if h is None:
                    h = _Handle(fd)
                    self._handles[key] = h
                    fd = -1
                h.users += 1
                self._evict()
            if fd >= 0:
                os.close(fd)
        try:
            yield h.fd
        finally:
            with self._lock:
                h.users -= 1
                if h.evicted and h.users == 0:
                    os.close(h.fd)
                    h.fd = -1

    def _evict(self) -> None:
        while len(self._handles) > self.max_fds:
            _, old = self._handles.popitem(last=False)
            old.evicted = True
            if old.users == 0:
                os.close(old.fd)
                old.fd = -1

    def forget(self, key) -> None:
        """Close the descriptor for `key` (a file was removed or rewritten)."""
        with self._lock:
            h = self._handles.pop(key, None)
            if h is not None:
                h.evicted = True
                if h.users == 0:
                    os.close(h.fd)
                    h.fd = -1

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Close every descriptor not in use (all of them, once readers are done)."""
        with self._lock:
            while self._handles:
                _, h = self._handles.popitem()
                h.evicted = True
                if h.users == 0:
                    os.close(h.fd)
                    h.fd = -1


class FrameCache:
    """An LRU of decoded frame payloads with a byte cap."""

    def __init__(self, max_bytes: int = 8 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._frames: OrderedDict[object, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key) -> bytes | None:
        with self._lock:
            v = self._frames.get(key)
            if v is None:
                self.misses += 1
            else:
                self.hits += 1
                self._frames.move_to_end(key)
            return v

    def put(self, key, payload: bytes) -> None:
        if len(payload) > self.max_bytes:
            return
        with self._lock:
            old = self._frames.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._frames[key] = payload
            self._bytes += len(payload)
            while self._bytes > self.max_bytes:
                _, v = self._frames.popitem(last=False)
                self._bytes -= len(v)

    def discard_file(self, filenum: int) -> None:
        """Drop every frame of one file (its keys are `(filenum, offset)`)."""
        with self._lock:
            for k in [k for k in self._frames if k[0] == filenum]:
                self._bytes -= len(self._frames.pop(k))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0


class FrameDecoder:
    """Decodes the zstd frames of a batch (`read_many`) on two threads: the
    caller's and a worker of its own, started at the first batch worth it and
    stopped by `close` (its owner, a `DataDir`, closes it with the store).
    python-zstandard releases the GIL while it decompresses, so a batch of
    frames takes about half the wall time on two free cores.  Closed (or
    with `threads=1`), it decodes in the calling thread.
    """

    #: A batch of fewer frames and fewer stored octets is decoded in the
    #: calling thread (handing work to the worker costs ~50 us; a frame of
    #: text can decode to 30 times its stored size, hence the count too).
    MIN_FRAMES = 4
    MIN_OCTETS = 128 * 1024

    def __init__(self, threads: int = 2):
        self.threads = threads
        self._lock = threading.Lock()
        self._pool = None
        self._closed = False

    def decode(self, frames: list) -> list:
        """For each `(flags, stored)` in `frames`, its decoded payload, or None
        where the frame does not decode (damage: the one-block path names it)."""
        big = sum(len(f[1]) for f in frames) >= self.MIN_OCTETS
        return self.map(_decode_or_none, frames, big)

    def map(self, fn, items: list, big: bool = False) -> list:
        """`[fn(x) for x in items]`, every other item on the worker when there
        are `MIN_FRAMES` items or `big` says they are worth it."""
        pool = None
        if len(items) > 1 and self.threads > 1 and (big or len(items) >= self.MIN_FRAMES):
            pool = self._worker()
        if pool is None:
            return [fn(x) for x in items]
        # every other item to the worker: neighbours are of about one size
        fut = pool.submit(_map, fn, items[1::2])
        try:
            mine = _map(fn, items[0::2])
        finally:
            theirs = fut.result()
        out = [None] * len(items)
        out[0::2] = mine
        out[1::2] = theirs
        return out

    def _worker(self):
        with self._lock:
            if self._pool is None and not self._closed:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="vt-frame-decode")
            return self._pool

    def close(self) -> None:
        """Stop the worker (waiting for a batch it decodes); later batches are
        decoded in the calling thread."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True)


def _decode_or_none(frame):
    from vtstore.errors import FormatError
    from vtstore.stores.vtd import decode_payload

    try:
        return decode_payload(*frame)
    except FormatError:
        return None


def _map(fn, items: list) -> list:
    return [fn(x) for x in items]


def read_block(fd: int, frames: FrameCache, h, e) -> bytes:
    """Read and verify the block `h` that index entry `e` places in the open
    data file `fd`; raise `CorruptBlockError` if it does not match."""
    from vtstore.errors import CorruptBlockError, FormatError
    from vtstore.stores.vtd import ENC_MASK, ENC_PLAIN, MAX_BLOCK_SIZE, MAX_PAYLOAD, decode_payload

    # an entry from a damaged index must not ask for a huge read
    if (
        e.data_length > MAX_BLOCK_SIZE
        or e.payload_length > MAX_PAYLOAD
        or e.data_offset > MAX_PAYLOAD
        or e.payload_offset >= 1 << 48
    ):
        raise CorruptBlockError(h, f"index entry out of bounds {tuple(e)} (damaged index?)")
    if e.flags & ENC_MASK == ENC_PLAIN:
        data = os.pread(fd, e.data_length, e.payload_offset + e.data_offset)
    else:
        key = (e.filenum, e.payload_offset)
        payload = frames.get(key)
        if payload is None:
            stored = os.pread(fd, e.payload_length, e.payload_offset)
            if len(stored) != e.payload_length:
                raise CorruptBlockError(h, f"data file {e.filenum} is truncated")
            try:
                payload = decode_payload(e.flags, stored)
            except FormatError as x:
                raise CorruptBlockError(
                    h, f"record at {e.filenum}:{e.payload_offset}: {x}"
                ) from None
            frames.put(key, payload)
        data = payload[e.data_offset : e.data_offset + e.data_length]
    if len(data) != e.data_length:
        raise CorruptBlockError(h, f"data file {e.filenum} is truncated")
    if not h.check(data):
        raise CorruptBlockError(h, f"data at {e.filenum}:{e.payload_offset} does not match")
    return data


#: Threads a `DataDir` decodes a batch's zstd frames with.  1: on this
#: project's shared 2-core machine (load 2-5) two threads measured slower, not
#: faster (get_many of compressible blocks 0.243 -> 0.268 s, the same CPU; vt
#: unpack no better), as the second core is rarely free; 2 where cores are.
DECODE_THREADS = 1
#: Octets of stored data one `read_many` call reads at once (a bound on what it
#: holds besides its result; a single larger block is read alone).
READ_BATCH_BYTES = 8 << 20
#: Threads a large batch is read and checked with (the calling one included).
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
_FIELDS = 6


def read_many(
    fds: FDCache, frames: FrameCache, hs: list, values: list, decoder: FrameDecoder | None = None
) -> list:
    """Read the blocks `hs` whose raw index values are `values` (None: not
    indexed), natively and in a batch (`vtstore.stores._vtdread`): spans sorted
    by (file, offset) and coalesced into few preads, each zstd frame decoded
    once (through `frames`; by `decoder` on two threads if given, else in this
    one), every block checked against its hashcode.

    Returns, for each block, its verified bytes, or None where the batch could
    not serve it (not indexed, its data file gone, damage): the caller reads
    those one at a time, which retries or names the damage
    (`CorruptBlockError`).  A malformed value raises `ValueError`.
    """
    from vtstore.hashes import Hash_BLAKE3
    from vtstore.stores import _vtdread
    from vtstore.stores.vtd import ENC_MASK, ENC_ZSTD

    packed, filenums = _vtdread.decode_entries(values)
    m = memoryview(packed).cast("Q")
    blake3 = len(hs) > 0 and type(hs[0]) is Hash_BLAKE3
    out: list = [None] * len(hs)
    with ExitStack() as st:
        # a file evicted or rewritten since the lookup is left out: the single path retries
        fdmap = _open_fds(st, fds, filenums)
        flags = m[1::_FIELDS].tolist()
        zstd = [i for i, f in enumerate(flags) if f & ENC_MASK == ENC_ZSTD and f != _NONE]
        # what to read at once: about READ_BATCH_BYTES of stored octets
        sizes = m[5::_FIELDS].tolist()
        for i in zstd:
            sizes[i] = 0  # counted per frame below
        cached: dict = {}
        skip = None
        if zstd:
            skip = bytearray(len(hs))
            pay = m[3::_FIELDS].tolist()
            for i in zstd:
                key = (m[i * _FIELDS], m[i * _FIELDS + 2])
                p = cached.get(key)
                if p is None and key not in cached:
                    p = frames.get(key)
                    cached[key] = p
                    if p is None:
                        sizes[i] = pay[i]
                if p is not None:
                    skip[i] = 1
        start = 0
        n = len(hs)
        while start < n:
            end, acc = start, 0
            while end < n and (end == start or acc + sizes[end] <= READ_BATCH_BYTES):
                acc += sizes[end]
                end += 1
            _read_batch(
                hs, m, packed, start, end, fdmap, skip, cached, frames, decoder, blake3, out
            )
            start = end
    return out


_NONE = (1 << 64) - 1
_SERIAL = FrameDecoder(threads=1)
_SKIP: list = []  # a frame _read_batch leaves to the single path


def _open_fds(st: ExitStack, fds: FDCache, filenums) -> dict:
    """`{filenum: fd}` of the data files that can be opened, held open by `st`."""
    fdmap = {}
    for num in filenums:
        try:
            fdmap[num] = st.enter_context(fds.fd(num))
        except FileNotFoundError:
            pass
    return fdmap


def _read_batch(
    hs, m, packed, start, end, fdmap, skip, cached, frames, decoder, blake3, out
) -> None:
    """`read_many` for `hs[start:end]`, into `out`."""
    from vtstore.stores import _vtdread

    sub = hs[start:end]
    got = _vtdread.read_entries(
        packed[start * 48 : end * 48],
        fdmap,
        b"".join(sub) if blake3 else None,
        None if skip is None else skip[start:end],
        threads=READ_THREADS,
    )
    # the fields as lists, once (indexing the memoryview per entry costs more)
    lo, hi = start * _FIELDS, end * _FIELDS
    fls = m[lo + 1 : hi : _FIELDS].tolist()
    fns = m[lo:hi:_FIELDS].tolist()
    pos = m[lo + 2 : hi : _FIELDS].tolist()
    # the frames to serve: key -> [flags, stored (to decode) or None, payload, [j, ...]]
    groups: dict = {}
    key = g = None
    for j, x in enumerate(got):
        tx = type(x)
        if tx is int:  # damage: the single path names it
            continue
        fl = fls[j]
        if fl & 3 == 0:  # plain: read and (blake3) checked natively
            if tx is bytes:
                out[start + j] = x
            continue
        if fl == _NONE:
            continue
        if key is None or key[0] != fns[j] or key[1] != pos[j]:
            key = (fns[j], pos[j])  # a frame's blocks mostly come one after another
            g = groups.get(key)
            if g is None:
                p = cached.get(key)
                # a frame found damaged, or neither cached nor read (its file gone)
                skip_it = p is False or (p is None and x is None)
                g = groups[key] = _SKIP if skip_it else [fl, x if p is None else None, p, []]
        if g is not _SKIP:
            g[3].append(j)
    todo = [(k, g) for k, g in groups.items() if g is not _SKIP]
    dos = m[lo + 4 : hi : _FIELDS].tolist()
    dls = m[lo + 5 : hi : _FIELDS].tolist()

    def serve(item) -> tuple[list, list]:
        # decode a frame and cut its blocks right away, while it is in the CPU's cache
        k, (fl, stored, payload, js) = item
        if payload is None:
            payload = _decode_or_none((fl, stored))
            if payload is None:
                cached[k] = False  # damaged: the single path names it
                return [], []
            cached[k] = payload
            frames.put(k, payload)
        ci, cd = [], []
        for j in js:
            do, dl = dos[j], dls[j]
            data = payload[do : do + dl]
            if len(data) == dl:
                ci.append(start + j)
                cd.append(data)
        return ci, cd

    big = sum(len(g[1]) for _, g in todo if g[1] is not None) >= FrameDecoder.MIN_OCTETS
    cut_i, cut_d = [], []  # blocks cut out of frames, to check
    for ci, cd in (decoder or _SERIAL).map(serve, todo, big):
        cut_i += ci
        cut_d += cd
    if blake3:
        if cut_d:
            ok = _vtdread.check_blake3(b"".join([hs[i] for i in cut_i]), cut_d, READ_THREADS)
            for i, d, good in zip(cut_i, cut_d, ok, strict=True):
                if good:
                    out[i] = d
        return
    for i, d in zip(cut_i, cut_d, strict=True):
        out[i] = d
    for i in range(start, end):
        d = out[i]
        if d is not None and not hs[i].check(d):
            out[i] = None


def read_joined(
    fds: FDCache, hs: list, values: list, check: bool = True, buffer=None
) -> tuple[bytes, list] | None:
    """The data of the blocks `hs` (raw index values `values`) end to end, as
    one bytes object, and the length of each block, read natively (`_vtdread.read_joined`: coalesced preads
    straight into the result, BLAKE3 checked without the GIL): no bytes object
    per block and no join, for a file streamed out whole.

    None when the fast path does not apply (a block not indexed, compressed,
    not BLAKE3, its data file gone) or anything in it is wrong: the caller then
    reads the blocks the usual way, which decodes frames, retries and names
    the damage.  A malformed value raises `ValueError`.  `check=False` leaves
    the hashing out, for a reader that checks every block itself (a short
    read still gives None).  `buffer(size)`: a writable buffer to read into
    (a buffer used again: no fresh memory to fault in), returned as the data.
    """
    from vtstore.hashes import Hash_BLAKE3
    from vtstore.stores import _vtdread

    if not hs or (check and type(hs[0]) is not Hash_BLAKE3) or None in values:
        return None
    packed, filenums = _vtdread.decode_entries(values)
    with ExitStack() as st:
        fdmap = _open_fds(st, fds, filenums)
        if len(fdmap) != len(filenums):
            return None
        lengths = memoryview(packed).cast("Q")[5::_FIELDS].tolist()
        into = None if buffer is None else buffer(sum(lengths))
        data = _vtdread.read_joined(
            packed, fdmap, b"".join(hs), threads=READ_THREADS, verify=check, into=into
        )
    if data is None:
        return None
    return data, lengths
