"""blockify: bytes, a file or a stream in; leaf blocks into a store; the top block out.

The pipeline, with bounded memory whatever the input size:

    read a buffer (4 MiB) -> format scanner proposes boundaries
                          -> chunker cuts (C, GIL released), LOOKAHEAD behind
                          -> chunks copied out as bytes, constant runs marked
    ---- queue (a few buffers deep: back-pressure) ----
    store.add_many(batch) (hashing releases the GIL) -> leaf blocks
                          -> IndirectBuilder -> top block

The first half runs in a worker thread (`_Cutter`), the second in the
caller's, so chunking the next buffer overlaps hashing the current one.
Consecutive chunks that are one repeated byte value become a single
`RLEBlock`, so a run of any length costs no storage (only the at most two
chunks that straddle its ends are stored).  The bytes the blocks hold are
always exactly the input: scanners only choose where cuts go.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from vtstore.blocks import MAX_LITERAL, HashCodeBlock, IndirectBuilder, LiteralBlock, RLEBlock
from vtstore.buffers import HUGE_PAGE, fresh_buffer, is_immutable
from vtstore.chunking._cdc import run_bytes
from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams
from vtstore.chunking.scanners.base import LOOKAHEAD, GuardedScanner, Scanner
from vtstore.chunking.scanners.detect import SNIFF_BYTES, scanner_for
from vtstore.errors import VTError

__all__ = ["blockify", "chunks_of", "BlockifyStats", "BUFFER_SIZE", "open_source"]

log = logging.getLogger(__name__)

#: bytes read per buffer
BUFFER_SIZE = 4 << 20
#: buffers in flight between the cutter thread and the store
QUEUE_DEPTH = 3


@dataclass
class BlockifyStats:
    """What blockify (or `chunks_of`) did: filled in as it runs."""

    scanner: str | None = None
    scanner_failed: str | None = None
    proposed: int = 0
    length: int = 0
    #: cuts by kind: hash, format, max, end, and proposals dropped
    cuts: dict = field(default_factory=dict)
    #: chunk sizes in order, if asked for (`keep_sizes=True`)
    sizes: list[int] | None = None
    #: leaves by kind
    stored: int = 0
    rle: int = 0
    literal: int = 0


# -- sources -------------------------------------------------------------------


class _Reader:
    """Reads a source into a reusable window, chunk data copied out as bytes."""

    def __init__(self, fileobj=None, data=None, close=False):
        self._f = fileobj
        self._close = close
        self._data = memoryview(data).cast("B") if data is not None else None
        self._readinto = getattr(fileobj, "readinto", None) if fileobj is not None else None

    def read_into(self, mv: memoryview) -> int:
        """Fill as much of `mv` as one read gives; 0 at the end."""
        f = self._f
        if self._readinto is not None:
            n = self._readinto(mv)
        else:
            b = f.read(len(mv))
            n = len(b)
            mv[:n] = b
        return n or 0

    def close(self):
        if self._close and self._f is not None:
            self._f.close()


def open_source(source):
    """(reader-or-None, in-memory data-or-None, name-or-None) for a blockify source."""
    if isinstance(source, (bytes, bytearray, memoryview)) or _is_mmap(source):
        return None, source, None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
        except FileNotFoundError as e:
            raise SourceError(f"{path}: no such file") from e
        except IsADirectoryError as e:
            raise SourceError(f"{path}: is a directory") from e
        except PermissionError as e:
            raise SourceError(f"{path}: permission denied") from e
        except OSError as e:
            raise SourceError(f"{path}: {e.strerror or e}") from e
        return _Reader(f, close=True), None, path
    if hasattr(source, "readinto") or hasattr(source, "read"):
        return _Reader(source), None, getattr(source, "name", None)
    raise TypeError(f"cannot blockify {type(source).__name__}: give bytes, a path or a stream")


def _is_mmap(obj) -> bool:
    import mmap

    return isinstance(obj, mmap.mmap)


class SourceError(VTError):
    """The input of blockify could not be read."""


# -- the cutter ------------------------------------------------------------------


#: read buffers a recycling pool may have out at once: the queue's, the
#: consumer's, and the cutter's current and next one
POOL_LIMIT = QUEUE_DEPTH + 3


class _Buffers:
    """Where the cutter's read buffers come from.

    `recycle`: the store copies what it keeps, so a buffer goes back to the
    pool once its batch is stored and is filled again (warm memory, no page
    faults).  Otherwise every buffer is a new `ImmutableBuffer` that is never
    written after its chunks are handed out, so the store may keep views of
    it (the memory store does: zero copies from the file to the store).
    """

    def __init__(self, recycle: bool, stop: threading.Event | None = None):
        self.recycle = recycle
        self.stop = stop
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._made = 0

    def take(self, size: int):
        if not self.recycle:
            return fresh_buffer(size)
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._made < POOL_LIMIT:
            self._made += 1
            return bytearray(size)
        while True:  # all out: wait for the consumer to give one back
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                if self.stop is not None and self.stop.is_set():
                    raise _Stopped from None

    def give_back(self, buf) -> None:
        if self.recycle and buf is not None:
            self._free.put(buf)


class _Stopped(Exception):
    """The consumer went away while the cutter waited for a buffer."""


class _Cutter:
    """Scanner + chunker over a source; yields batches of chunks.

    A batch is `(chunks, runs, buf)`: the chunks in order as memoryviews of
    `buf` (give it back with `buffers.give_back` once they are stored), and
    `runs`, None if no chunk in the batch is one repeated byte, else a list
    giving each chunk's byte value or -1.  A batch's buffer is never written
    again by the cutter.
    """

    def __init__(
        self,
        reader: _Reader | None,
        data,
        params: ChunkParams,
        scanner: Scanner | None,
        stats: BlockifyStats,
        buffer_size: int = BUFFER_SIZE,
        label: str = "",
    ):
        self.reader = reader
        self.data = data
        self.params = params
        self.chunker = params.chunker()
        self.guard = GuardedScanner(scanner, label) if scanner is not None else None
        self.stats = stats
        self.buffer_size = buffer_size
        self.buffers = _Buffers(recycle=False)
        # the lag: with no scanner, nothing to wait for
        self.lag = LOOKAHEAD if scanner is not None else 0

    def _scan(self, new, floor: int, final: bool, end: int) -> None:
        """Give the scanner the `new` bytes; pass its proposals to the chunker."""
        if self.guard is None:
            return
        props = self.guard.feed(new, floor) if len(new) else []
        if final:
            props += self.guard.finish(floor, end)
        if props:
            self.chunker.feed(b"", props)

    @staticmethod
    def _emit(mv, wstart: int, start: int, cuts: list[int], buf):
        offs = [start - wstart, *(c - wstart for c in cuts)]
        chunks = [mv[a:b] for a, b in zip(offs, offs[1:], strict=False)]
        return chunks, run_bytes(mv, start, cuts, wstart), buf

    def batches(self) -> Iterator[tuple[list[memoryview], list[int] | None, object]]:
        """The chunks of the whole source, a buffer's worth at a time."""
        if self.data is not None:
            return self._batches_memory()
        return self._batches_stream()

    def _batches_memory(self):
        mv = memoryview(self.data).cast("B")
        n = len(mv)
        ch = self.chunker
        start = pos = 0  # the last cut; bytes given to the scanner
        while True:
            end = min(n, pos + self.buffer_size)
            final = end == n
            self._scan(mv[pos:end], ch.position, final, n)
            pos = end
            upto = n if final else max(ch.position, pos - self.lag)
            cuts = ch.feed(mv[ch.position : upto])
            if final:
                cuts += ch.finish()
            if cuts:
                yield self._emit(mv, 0, start, cuts, None)
                start = cuts[-1]
            if final:
                self.stats.length = n
                return

    def _batches_stream(self):
        bs = self.buffer_size
        # a buffer holds stream bytes [wstart, wend): from the last cut to what
        # was read; after each round less than max_size + lag remain, and they
        # move to the next buffer (the batch's own buffer is never written again)
        # (rounded up to whole huge pages, and filled: see vtstore.buffers)
        # (the carry is under max_size + lag: a buffer of `bs` rounded up
        # holds it and reads at least bs - max_size - lag new octets; rounding
        # bs + max_size + lag up made 4 MiB buffers 6 MiB, 1.5x the memory)
        carry_max = self.params.max_size + self.lag
        cap = -(-max(bs, 2 * carry_max) // HUGE_PAGE) * HUGE_PAGE
        buffers = self.buffers
        buf = buffers.take(cap)
        mv = memoryview(buf)
        wstart = wend = start = 0
        ch = self.chunker
        carry = None  # (previous buffer's view, offset, length) still to move
        while True:
            w = wend - wstart
            n = self.reader.read_into(mv[w:])
            if carry is not None:
                # after the read: it faulted the new buffer's pages in without
                # the GIL, so this copy does not fault them in holding it
                old, at, keep = carry
                mv[:keep] = old[at : at + keep]
                carry = old = None
            final = n == 0
            self._scan(mv[w : w + n], ch.position, final, wend + n)
            wend += n
            upto = wend if final else max(ch.position, wend - self.lag)
            cuts = ch.feed(mv[ch.position - wstart : upto - wstart])
            if final:
                cuts += ch.finish()
            if final:
                self.stats.length = wend
            if not cuts:
                if final:
                    buffers.give_back(buf)
                    return
                continue
            batch = self._emit(mv, wstart, start, cuts, buf)
            start = cuts[-1]
            if not final:
                # the bytes after the last cut move to the next buffer (taken
                # now, so the batch's buffer is only ever read from again)
                carry = (mv, start - wstart, wend - start)
                buf = buffers.take(cap)
                mv = memoryview(buf)
                wstart = start
            yield batch
            if final:
                return


def _run_cutter(cutter: _Cutter, q: queue.Queue, stop: threading.Event) -> None:
    try:
        for batch in cutter.batches():
            while not stop.is_set():
                try:
                    q.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        q.put(None)
    except _Stopped:
        return
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
        q.put(e)


def _batches_threaded(cutter: _Cutter) -> Iterator:
    q: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()
    cutter.buffers.stop = stop
    t = threading.Thread(target=_run_cutter, args=(cutter, q, stop), name="vt-cutter", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()


# -- the public functions ----------------------------------------------------------


def _choose_scanner(scanner, name, mime_type, head, params):
    if scanner is None or scanner is False:
        return None
    if scanner == "auto":
        cls = scanner_for(name=name, mime_type=mime_type, head=head)
        return cls(params) if cls is not None else None
    if isinstance(scanner, str):
        from vtstore.chunking.scanners.detect import SCANNERS

        try:
            return SCANNERS[scanner](params)
        except KeyError:
            raise VTError(f"unknown scanner {scanner!r}: one of {', '.join(SCANNERS)}") from None
    if isinstance(scanner, type):
        return scanner(params)
    return scanner  # an instance


class _Peeked:
    """A stream with its first bytes already read."""

    def __init__(self, head: bytes, f):
        self._head = memoryview(head)
        self._f = f
        self.name = getattr(f, "name", None)

    def read(self, n=-1):
        if self._head:
            h, self._head = self._head[:n], self._head[n:]
            return bytes(h)
        return self._f.read(n)


def _prepare(source, params, scanner, name, mime_type, stats, buffer_size):
    reader, data, src_name = open_source(source)
    try:
        return _prepare_opened(
            reader, data, src_name, params, scanner, name, mime_type, stats, buffer_size
        )
    except BaseException:
        if reader is not None:
            reader.close()
        raise


def _prepare_opened(reader, data, src_name, params, scanner, name, mime_type, stats, buffer_size):
    name = name if name is not None else src_name
    head = b""
    if scanner == "auto":
        if data is not None:
            head = bytes(memoryview(data).cast("B")[:SNIFF_BYTES])
        elif reader is not None and not isinstance(reader._f, io.TextIOBase):
            f = reader._f
            if hasattr(f, "seek") and getattr(f, "seekable", lambda: False)():
                here = f.tell()
                head = f.read(SNIFF_BYTES) or b""
                f.seek(here)
            else:
                head = f.read(SNIFF_BYTES) or b""
                reader = _Reader(_Peeked(head, f))
    try:
        sc = _choose_scanner(scanner, name, mime_type, head, params)
    except VTError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken scanner factory
        log.warning("scanner for %s could not start: %r", name or "input", e)
        sc = None
    stats.scanner = getattr(sc, "name", None)
    return _Cutter(reader, data, params, sc, stats, buffer_size, label=name or ""), reader


def chunks_of(
    source,
    params: ChunkParams = DEFAULT_PARAMS,
    *,
    scanner="auto",
    name: str | None = None,
    mime_type: str | None = None,
    stats: BlockifyStats | None = None,
    buffer_size: int = BUFFER_SIZE,
) -> Iterator[bytes]:
    """The chunks of `source` (bytes, a path or a binary stream), as bytes, in order.

    Same cuts as `blockify` makes; nothing is stored.  `scanner`: "auto"
    (detect from `name`, `mime_type` and the first bytes), None (hash cuts
    only), a scanner name, class or instance.
    """
    stats = stats if stats is not None else BlockifyStats()
    cutter, reader = _prepare(source, params, scanner, name, mime_type, stats, buffer_size)
    try:
        for chunks, _runs, _buf in cutter.batches():
            for c in chunks:
                yield bytes(c)
    finally:
        _finish_stats(cutter, stats)
        if reader is not None:
            reader.close()


def _finish_stats(cutter: _Cutter, stats: BlockifyStats) -> None:
    stats.cuts = cutter.chunker.counts
    if cutter.guard is not None:
        stats.proposed = cutter.guard.proposed
        stats.scanner_failed = cutter.guard.failed


def blockify(
    source,
    store,
    params: ChunkParams | None = None,
    *,
    scanner="auto",
    name: str | None = None,
    mime_type: str | None = None,
    max_block_size: int | None = None,
    stats: BlockifyStats | None = None,
    buffer_size: int = BUFFER_SIZE,
    threaded: bool = True,
):
    """Store `source` in `store` as content-defined blocks; return the top block.

    `source`: bytes-like (bytes, bytearray, memoryview, mmap), a path, or a
    binary stream.  `params`: the chunker parameters (default: the store's
    `chunk_params` if it has them, else the defaults).  `scanner`: as for
    `chunks_of`.  `max_block_size`: fan-out limit of the indirect blocks
    (default `params.max_size`).  Memory stays bounded (a few buffers) for any
    input size; the result's `data(store)` is exactly the input.
    """
    if params is None:
        params = getattr(store, "chunk_params", None) or DEFAULT_PARAMS
    stats = stats if stats is not None else BlockifyStats()
    cutter, reader = _prepare(source, params, scanner, name, mime_type, stats, buffer_size)
    builder = IndirectBuilder(store, max_block_size or max(params.max_size, 256))
    add_many = store.add_many
    copies = bool(getattr(store, "add_copies", False))
    # zero copy: every store gets immutable read buffers it may keep views of.
    # The memory store keeps them; the datadir's writer keeps them until their
    # frame is written, where recycled buffers (reused as soon as add_many
    # returns) made it copy every block: 12-18% of the CPU of packing the
    # tarball and MP4 data sets.  A store that copies anyway pays a fresh
    # (huge-page) mapping per read buffer instead of a recycled one.
    cutter.buffers = _Buffers(recycle=False)
    give_back = cutter.buffers.give_back
    run_octet = -1
    run_span = 0
    batches = _batches_threaded(cutter) if threaded else cutter.batches()
    try:
        for chunks, runs, buf in batches:
            if not copies and buf is None:  # views of the caller's data
                chunks = [c if is_immutable(c) else bytes(c) for c in chunks]
            if runs is None and run_span == 0 and min(map(len, chunks)) > MAX_LITERAL:
                # the common case: every chunk is stored
                hashes = add_many(chunks)
                builder.add_leaves(hashes, [len(c) for c in chunks])
                stats.stored += len(chunks)
                give_back(buf)
                continue
            if runs is None:
                runs = [-1] * len(chunks)
            leaves: list = []  # blocks, or an int: the index of a chunk to store
            to_store = []
            for c, r in zip(chunks, runs, strict=True):
                if r >= 0:
                    if r == run_octet:
                        run_span += len(c)
                        continue
                    if run_span:
                        leaves.append(_run_block(run_octet, run_span, stats))
                    run_octet, run_span = r, len(c)
                    continue
                if run_span:
                    leaves.append(_run_block(run_octet, run_span, stats))
                    run_octet, run_span = -1, 0
                if len(c) <= MAX_LITERAL:
                    leaves.append(LiteralBlock(bytes(c)))
                    stats.literal += 1
                else:
                    leaves.append(len(to_store))
                    to_store.append(c)
            hashes = add_many(to_store) if to_store else []
            give_back(buf)
            stats.stored += len(to_store)
            builder.add_many(
                HashCodeBlock(hashes[x], len(to_store[x])) if type(x) is int else x for x in leaves
            )
        if run_span:
            builder.add(_run_block(run_octet, run_span, stats))
        return builder.close()
    finally:
        batches.close()  # stops and joins the cutter thread now, even on an error
        _finish_stats(cutter, stats)
        if reader is not None:
            reader.close()


def _run_block(octet: int, span: int, stats: BlockifyStats):
    if span <= MAX_LITERAL:
        stats.literal += 1
        return LiteralBlock(bytes((octet,)) * span)
    stats.rle += 1
    return RLEBlock(span, octet)
