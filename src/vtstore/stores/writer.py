"""Appending blocks to one data file, a frame at a time, off the caller's thread.

The caller hashes and de-duplicates; `RecordWriter.add_many` only gathers the
blocks into the frame being built.  A full frame of incompressible data goes
straight to the native `Appender` (`vtdio`): a thread of its own, outside
Python, that computes the record's CRC and writes it with one `pwritev` from
the blocks' buffers.  A frame that may compress goes through a Python writer
thread first (zstd releases the GIL for the whole frame), then to the same
appender.  The caller takes the written frames back (`_reap`) and encodes their
index entries in one call (`vtdio.index_values`).  Without the extension the
Python writer thread writes every record itself (`vtdio.write_record`).

Every few thousand blocks or tens of MiB a commit thread makes the batch
durable while appends go on: `fdatasync` of the data file first, then the
index transaction, so a committed index entry never points at data that a
power cut could lose.  Writeback of the appended octets is started every 8 MiB
(`sync_file_range`), so that `fdatasync` mostly finds them on the disk already.
Until it is committed a block is found by `lookup`: as bytes while its frame is
in memory, as an `IndexEntry` once written.

The bookkeeping is per frame, not per block: one dict maps each pending
hashcode to its frame and position, and a frame carries its blocks, then
(once written) their encoded index entries.

A failed write (a full disk) truncates the file back to its last good record
and leaves the writer failed: every later call raises `StoreError`.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from vtstore.buffers import ImmutableBuffer
from vtstore.errors import StoreError
from vtstore.stores.direct import DirectAppender, DirectUnsupported
from vtstore.stores.index import IndexEntry
from vtstore.stores.vtd import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_ZSTD_LEVEL,
    ENC_PLAIN,
    TYPE_BLOCKS,
    FrameEncoder,
)
from vtstore.stores.vtdio import (
    SYNC_FILE_RANGE_WRITE,
    Appender,
    index_values,
    sync_file_range,
)

MAX_INFLIGHT = 3
#: a durable commit every this many blocks or bytes (and at every flush): each
#: commit rewrites the index pages its entries land in, so rarer is cheaper
COMMIT_COUNT = 16384
COMMIT_BYTES = 128 * 1024 * 1024

#: start writeback of what was appended every this many octets
WRITEBACK_BYTES = 8 * 1024 * 1024

#: `commit(pairs, nbytes, end)`: make `(digest, encoded IndexEntry)` pairs, of
#: `nbytes` block octets in all, durable in the index, with the file indexed to `end`
CommitFn = Callable[[list[tuple[bytes, bytes]], int, int], None]


class _Frame:
    """The blocks of one record: gathered, then queued, then written."""

    __slots__ = ("hs", "datas", "size", "values", "nbytes")

    def __init__(self):
        self.hs: list = []
        self.datas: list | None = []  # None once written
        self.size = 0  # what the blocks will take in the file, about
        self.values: list[bytes] | None = None  # encoded index entries, once written
        self.nbytes = 0  # block octets, once written


class RecordWriter:
    """The single writer of one data file (the caller holds its `flock`)."""

    def __init__(
        self,
        fd: int,
        path: str,
        filenum: int,
        offset: int,
        commit: CommitFn,
        frame_size: int = DEFAULT_FRAME_SIZE,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        compress: bool = True,
        commit_count: int = COMMIT_COUNT,
        commit_bytes: int = COMMIT_BYTES,
        direct: bool = True,
    ):
        self.fd = fd
        self.path = path
        self.filenum = filenum
        self.frame_size = frame_size
        self.commit_count = commit_count
        self.commit_bytes = commit_bytes
        self._commit_fn = commit
        self._encoder = FrameEncoder(zstd_level, compress)
        self._lock = threading.Lock()
        #: every hashcode added and not yet committed -> (frame, position)
        self._pending: dict = {}
        self._building = _Frame()
        # tree blocks (directories) gather in frames of their own, so walking
        # a tree decompresses a few frames instead of one per directory
        self._building_tree = _Frame()
        self._queued: deque[_Frame] = deque()  # submitted, not yet written
        self._inflight_size = 0
        self._written: list[_Frame] = []  # written, not yet committed
        self._written_count = 0
        self._offset = offset  # writer thread: where the next record goes
        self._committed = offset
        self._kicked = offset  # writeback started up to here
        self._futures: deque[Future] = deque()
        self._exec: ThreadPoolExecutor | None = None
        # commits (fdatasync, then the index) run beside the appends
        self._cexec: ThreadPoolExecutor | None = None
        self._cfut: Future | None = None
        self._commit_lock = threading.Lock()
        self._commit_start = threading.Lock()
        self.failed: BaseException | None = None
        self.closed = False
        # appends bypass the page cache if asked ($VT_DIRECT_IO=1) and the file
        # system allows: off by default, since a write then waits for the disk
        # (a 1 GiB pack took 5.3-9.5 s with it, 4.6-5.0 s without)
        self._direct: DirectAppender | None = None
        if direct and os.environ.get("VT_DIRECT_IO", "0") == "1":
            try:
                self._direct = DirectAppender(path, fd, offset)
            except OSError:
                self._direct = None
        # plain frames go from the caller's thread to a native appender
        # thread that never needs the GIL; frames that may compress go through
        # the Python writer thread first (zstd releases the GIL for long)
        self._app = None
        if Appender is not None and self._direct is None:
            self._app = Appender(fd, offset, WRITEBACK_BYTES)

    # -- caller side ----------------------------------------------------------

    @property
    def size(self) -> int:
        """The file size once everything added so far is written."""
        with self._lock:
            return (
                self._offset + self._building.size + self._building_tree.size + self._inflight_size
            )

    def _check(self) -> None:
        if self.failed is not None:
            raise StoreError(f"writing {self.path} failed earlier: {self.failed}")
        if self.closed:
            raise StoreError(f"writer for {self.path} is closed")

    def add(self, h, data: bytes, tree: bool = False) -> int:
        """Queue block `data` with hashcode `h` (known not to be in the index);
        return the file size it makes, or -1 if `h` is pending already."""
        # add_many of one, without its loop and lists: the path of every `add`
        if self.failed is not None or self.closed:
            self._check()
        with self._lock:
            pending = self._pending
            if h in pending:
                return -1
            fr = self._building_tree if tree else self._building
            pending[h] = (fr, len(fr.hs))
            fr.hs.append(h)
            fr.datas.append(data if type(data) is bytes else bytes(data))
            fr.size += len(data) + 3
            full = fr.size >= self.frame_size
            size = (
                self._offset + self._inflight_size + self._building.size + self._building_tree.size
            )
        if full:
            self._submit_frame(tree)
        return size

    def add_many(self, hs, datas, limit: int, tree: bool = False) -> tuple[int, list[bool], int]:
        """Queue the blocks `datas` with hashcodes `hs` (known not to be in the
        index) until the file reaches `limit` octets; `tree`: they are tree blocks.

        Return `(taken, new, size)`: how many blocks were queued, for each whether
        it was new (not pending already), and the file size they make.  One lock
        round per frame instead of per block: this is the datadir's hot path.
        """
        if self.failed is not None or self.closed:
            self._check()
        new: list[bool] = []
        taken = 0
        n = len(hs)
        size = 0
        pending = self._pending
        fsize = self.frame_size
        while taken < n:
            full = False
            with self._lock:
                if tree:
                    fr, other = self._building_tree, self._building
                else:
                    fr, other = self._building, self._building_tree
                base = self._offset + self._inflight_size + other.size
                fhs, fdatas = fr.hs, fr.datas
                bsize = fr.size
                while taken < n:
                    h = hs[taken]
                    data = datas[taken]
                    taken += 1
                    if h in pending:
                        new.append(False)
                        continue
                    pending[h] = (fr, len(fhs))
                    fhs.append(h)
                    # a view of a buffer that never changes is kept as it is
                    # until its frame is written (blockify's read buffers:
                    # copying them cost 44 ms per 70 MB); others are copied
                    t = type(data)
                    if t is not bytes and not (
                        t is memoryview
                        and (type(data.obj) is bytes or type(data.obj) is ImmutableBuffer)
                    ):
                        data = bytes(data)
                    fdatas.append(data)
                    bsize += len(data) + 3
                    new.append(True)
                    if bsize >= fsize:
                        full = True
                        break
                    if base + bsize >= limit:
                        break
                fr.size = bsize
                size = base + bsize
            if full:
                self._submit_frame(tree)
            if size >= limit:
                break
        return taken, new, size

    def is_pending(self, h) -> bool:
        """Whether `h` was added and is not committed yet."""
        return h in self._pending

    def lookup(self, h):
        """Block bytes still in memory, an `IndexEntry` if written but not
        committed, else None."""
        with self._lock:
            x = self._pending.get(h)
            if x is None:
                return None
            fr, i = x
            if fr.values is None:
                d = fr.datas[i]
                return d if type(d) is bytes else bytes(d)
            v = fr.values[i]
        return IndexEntry.decode(v)

    def pending_keys(self) -> list:
        """Every hashcode added but not yet committed to the index."""
        with self._lock:
            return list(self._pending)

    def _submit_frame(self, tree: bool = False) -> None:
        with self._lock:
            if tree:
                fr = self._building_tree
                if not fr.hs:
                    return
                self._building_tree = _Frame()
            else:
                fr = self._building
                if not fr.hs:
                    return
                self._building = _Frame()
            self._queued.append(fr)
            self._inflight_size += fr.size
        app = self._app
        # a plain frame goes straight to the appender only when no frame is
        # still with the compressing thread: records stay in the order added,
        # so a file read in order reads its data file in order
        if (
            app is not None
            and all(f.done() for f in self._futures)
            and self._encoder.skip(fr.datas, fr.size)
        ):
            app.submit(fr, TYPE_BLOCKS | ENC_PLAIN, fr.datas, True)
        else:
            self._submit(self._write_frame, fr)
        if app is not None:
            self._reap()  # whichever way they went: frames written free their blocks

    def _submit(self, fn, *a) -> Future:
        if self._exec is None:
            self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vt-writer")
        fut = self._exec.submit(fn, *a)
        self._futures.append(fut)
        while self._futures and self._futures[0].done():
            self._futures.popleft().result()
        while len(self._futures) > MAX_INFLIGHT:
            self._futures.popleft().result()
        return fut

    def flush(self) -> None:
        """Write out the frame being built, fsync, commit; return when durable."""
        self._check()
        self._submit_frame()
        self._submit_frame(tree=True)
        with self._lock:
            idle = (
                not self._futures
                and not self._queued
                and not self._written
                and self._offset == self._committed
            )
        if idle:
            self._trim()
            return
        while self._futures:
            self._futures.popleft().result()
        if self._app is not None:
            self._app.drain()
            self._reap()
        if self._cfut is not None:
            self._cfut.result()
        self._trim()
        self._commit()

    def close(self) -> None:
        """Stop the background thread (call `flush` first to keep the blocks)."""
        if self.closed:
            return
        self.closed = True
        try:
            while self._futures:
                try:
                    self._futures.popleft().result()
                except BaseException:  # noqa: BLE001 - already recorded in self.failed
                    pass
        finally:
            for ex in (self._exec, self._cexec):
                if ex is not None:
                    ex.shutdown(wait=True)
            self._exec = self._cexec = None
            if self._app is not None:
                self._app.close()  # writes what was submitted; unreaped, it is unindexed
                self._app = None
            if self.failed is None:
                try:
                    self._trim()
                except OSError:
                    pass
            self._stop_direct()

    def _trim(self) -> None:
        """Cut the zero padding of O_DIRECT writes off the end (writer idle)."""
        d = self._direct
        if d is not None and d.padded and self.failed is None:
            os.ftruncate(self.fd, self._offset)
            d.trimmed()

    def _stop_direct(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    # -- writer thread --------------------------------------------------

    def _fail(self, e: BaseException, truncate: bool = True) -> StoreError:
        if self.failed is None:
            self.failed = e
        if truncate:  # drop a partly written record (only the writer thread appends)
            try:
                os.ftruncate(self.fd, self._offset)
            except OSError:
                pass
        with self._lock:  # the blocks of frames not written are lost
            for fr in self._queued:
                for h in fr.hs:
                    self._pending.pop(h, None)
            self._queued.clear()
            self._inflight_size = 0
        if isinstance(e, StoreError):
            return StoreError(str(e))
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return StoreError(f"writing {self.path}: {msg}")

    def _append(self, fr: _Frame) -> tuple[int, int, int, int]:
        """Write the record of frame `fr` at the end; return what
        `FrameEncoder.write` does."""
        pos = self._offset
        if self._direct is not None:
            enc = self._encoder.encode(fr.datas)
            try:
                self._direct.write(enc.parts, pos, enc.size)
                return enc.size, enc.flags, enc.payload_offset, enc.payload_length
            except DirectUnsupported:
                self._stop_direct()
            rec = memoryview(enc.record)
            while rec:
                k = os.pwrite(self.fd, rec, pos)
                pos += k
                rec = rec[k:]
            return enc.size, enc.flags, enc.payload_offset, enc.payload_length
        return self._encoder.write(self.fd, pos, fr.datas, fr.size)

    def _reap(self) -> None:
        """Take the frames the native appender has written (caller's thread or
        the commit thread)."""
        with self._lock:
            written, _, err = self._app.reap()
            for fr, flags, off, rsize, poff, plen in written:
                self._wrote(fr, flags, off + poff, plen)
                self._offset = off + rsize
            due = self._due()
        if err:
            self._offset = self._app.end  # just past the last good record
            raise self._fail(OSError(err, os.strerror(err)))
        if due:
            self._start_commit()

    def _wrote(self, fr: _Frame, flags: int, payload_off: int, plen: int) -> None:
        """Frame `fr` is in the file now (with `_lock` held)."""
        datas = fr.datas
        fr.values = index_values(self.filenum, flags, payload_off, plen, datas)
        fr.nbytes = sum(map(len, datas))
        fr.datas = None
        self._queued.remove(fr)
        self._written.append(fr)
        self._written_count += len(fr.values)
        self._inflight_size = max(0, self._inflight_size - fr.size)

    def _due(self) -> bool:
        return (
            self._written_count >= self.commit_count
            or self._offset - self._committed >= self.commit_bytes
        )

    def _start_commit(self) -> None:
        """Start a commit in the background unless one is running."""
        with self._commit_start:
            if self._cfut is not None and not self._cfut.done():
                return
            if self._cfut is not None:
                self._cfut.result()
            if self._cexec is None:
                self._cexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vt-commit")
            self._cfut = self._cexec.submit(self._commit)

    def _write_frame(self, fr: _Frame) -> None:
        if self.failed is not None:
            raise StoreError(f"writing {self.path} failed earlier: {self.failed}")
        app = self._app
        if app is not None:  # compress here (no GIL), append there
            try:
                flags, parts, entries = self._encoder.prepare(fr.datas, fr.size)
            except (MemoryError, ValueError) as e:
                raise self._fail(e, truncate=False) from None
            app.submit(fr, flags, parts, entries)
            return
        try:
            size, flags, poff, plen = self._append(fr)
        except (OSError, ValueError) as e:
            raise self._fail(e) from None
        with self._lock:
            self._wrote(fr, flags, self._offset + poff, plen)
            self._offset += size
            due = self._due()
        if self._offset - self._kicked >= WRITEBACK_BYTES and self._direct is None:
            # start writing back now, so the commit's fdatasync finds little to do
            try:
                sync_file_range(
                    self.fd, self._kicked, self._offset - self._kicked, SYNC_FILE_RANGE_WRITE
                )
            except OSError:
                pass  # only a hint: fdatasync still makes it durable
            self._kicked = self._offset
        if due:
            self._start_commit()

    def _commit(self) -> None:
        with self._commit_lock:
            if self.failed is not None:
                raise StoreError(f"writing {self.path} failed earlier: {self.failed}")
            if self._app is not None:
                self._reap()
            with self._lock:
                frames = self._written
                self._written = []
                self._written_count = 0
                end = self._offset
            if not frames and end == self._committed:
                return
            pairs = [p for fr in frames for p in zip(map(bytes, fr.hs), fr.values, strict=True)]
            nbytes = sum(fr.nbytes for fr in frames)
            try:
                os.fdatasync(self.fd)
                self._commit_fn(pairs, nbytes, end)
            except (OSError, StoreError) as e:
                with self._lock:  # still pending: lookups keep finding them
                    self._written[:0] = frames
                raise self._fail(e, truncate=False) from None
            with self._lock:
                pop = self._pending.pop
                for fr in frames:
                    for h in fr.hs:
                        pop(h, None)
                self._committed = end
