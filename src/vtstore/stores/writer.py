"""Appending blocks to one data file, a frame at a time, off the caller's thread.

The caller hashes and de-duplicates; `RecordWriter.add` only gathers the block
into the frame being built.  A full frame goes to a single background thread
that compresses it (zstd releases the GIL) and appends the record; every few
thousand blocks or tens of MiB a second thread makes the batch durable while
appends go on: `fdatasync` of the data file first, then the index transaction,
so a committed index entry never points at data that a power cut could lose.  Until then a block is found by `lookup`:
as bytes while its frame is in memory, as an `IndexEntry` once written.

A failed write (a full disk) truncates the file back to its last good record
and leaves the writer failed: every later call raises `StoreError`.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from vtstore.errors import StoreError
from vtstore.stores.direct import DirectAppender, DirectUnsupported
from vtstore.stores.index import IndexEntry
from vtstore.stores.vtd import DEFAULT_FRAME_SIZE, DEFAULT_ZSTD_LEVEL, FrameEncoder

MAX_INFLIGHT = 3
#: a durable commit every this many blocks or bytes (and at every flush): each
#: commit rewrites the index pages its entries land in, so rarer is cheaper
COMMIT_COUNT = 16384
COMMIT_BYTES = 128 * 1024 * 1024

CommitFn = Callable[[list[tuple[bytes, IndexEntry]], int], None]


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
        self._building: dict = {}
        self._building_size = 0
        # tree blocks (directories) gather in frames of their own, so walking
        # a tree decompresses a few frames instead of one per directory
        self._building_tree: dict = {}
        self._building_tree_size = 0
        self._inflight: dict = {}
        self._inflight_size = 0
        self._uncommitted: dict = {}
        self._offset = offset  # writer thread: where the next record goes
        self._committed = offset
        self._futures: deque[Future] = deque()
        self._exec: ThreadPoolExecutor | None = None
        # commits (fdatasync, then the index) run beside the appends
        self._cexec: ThreadPoolExecutor | None = None
        self._cfut: Future | None = None
        self._commit_lock = threading.Lock()
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

    # -- caller side ----------------------------------------------------------

    @property
    def size(self) -> int:
        """The file size once everything added so far is written."""
        with self._lock:
            return (
                self._offset + self._building_size + self._building_tree_size + self._inflight_size
            )

    def _check(self) -> None:
        if self.failed is not None:
            raise StoreError(f"writing {self.path} failed earlier: {self.failed}")
        if self.closed:
            raise StoreError(f"writer for {self.path} is closed")

    def add(self, h, data: bytes, tree: bool = False) -> int:
        """Queue block `data` with hashcode `h` (known not to be in the index);
        return the file size it makes, or -1 if `h` is pending already."""
        _, new, size = self.add_many([(h, data)], 1 << 62, tree)
        return size if new[0] else -1

    def add_many(self, items, limit: int, tree: bool = False) -> tuple[int, list[bool], int]:
        """Queue `(h, data)` pairs (hashcodes known not to be in the index) until
        the file reaches `limit` octets; `tree`: they are tree blocks.

        Return `(taken, new, size)`: how many pairs were queued, for each whether
        it was new (not pending already), and the file size they make.  One lock
        round per frame instead of per block: this is the datadir's hot path.
        """
        if self.failed is not None or self.closed:
            self._check()
        new: list[bool] = []
        taken = 0
        n = len(items)
        size = 0
        while taken < n:
            full = False
            with self._lock:
                building, other = self._building, self._building_tree
                bsize, osize = self._building_size, self._building_tree_size
                if tree:
                    building, other, bsize, osize = other, building, osize, bsize
                inflight, uncommitted = self._inflight, self._uncommitted
                base = self._offset + self._inflight_size + osize
                fsize = self.frame_size
                while taken < n:
                    h, data = items[taken]
                    taken += 1
                    if h in building or h in inflight or h in uncommitted or h in other:
                        new.append(False)
                        continue
                    building[h] = data if type(data) is bytes else bytes(data)
                    bsize += len(data) + 3
                    new.append(True)
                    if bsize >= fsize:
                        full = True
                        break
                    if base + bsize >= limit:
                        break
                if tree:
                    self._building_tree_size = bsize
                else:
                    self._building_size = bsize
                size = base + bsize
            if full:
                self._submit_frame(tree)
            if size >= limit:
                break
        return taken, new, size

    def lookup(self, h):
        """Block bytes still in memory, an `IndexEntry` if written but not
        committed, else None."""
        with self._lock:
            d = self._building.get(h)
            if d is None:
                d = self._building_tree.get(h)
                if d is None:
                    d = self._inflight.get(h)
                    if d is None:
                        return self._uncommitted.get(h)
            return d

    def pending_keys(self) -> list:
        """Every hashcode added but not yet committed to the index."""
        with self._lock:
            return [*self._building, *self._building_tree, *self._inflight, *self._uncommitted]

    def _submit_frame(self, tree: bool = False) -> None:
        with self._lock:
            if tree:
                frame, size = self._building_tree, self._building_tree_size
                self._building_tree, self._building_tree_size = {}, 0
            else:
                frame, size = self._building, self._building_size
                self._building, self._building_size = {}, 0
            if not frame:
                return
            self._inflight.update(frame)
            self._inflight_size += size
        self._submit(self._write_frame, frame)

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
            idle = not self._futures and not self._uncommitted and self._offset == self._committed
        if idle:
            self._trim()
            return
        while self._futures:
            self._futures.popleft().result()
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
        with self._lock:
            self._inflight.clear()
            self._inflight_size = 0
        if isinstance(e, StoreError):
            return StoreError(str(e))
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return StoreError(f"writing {self.path}: {msg}")

    def _write_frame(self, frame: dict) -> None:
        if self.failed is not None:
            raise StoreError(f"writing {self.path} failed earlier: {self.failed}")
        try:
            hs = list(frame)
            enc = self._encoder.encode([frame[h] for h in hs])
            pos = self._offset
            end = pos + enc.size
            parts = enc.parts
            if self._direct is not None:
                try:
                    self._direct.write(parts, pos, enc.size)
                    n = enc.size
                except DirectUnsupported:
                    self._stop_direct()
                    n = 0
            else:
                n = 0
            if n == 0:
                if len(parts) > 512:  # past IOV_MAX: one buffer
                    parts = [enc.record]
                n = os.pwritev(self.fd, parts, pos)
            if n < enc.size:  # a short write: finish the rest plainly
                rec = memoryview(enc.record)[n:]
                pos += n
                while rec:
                    k = os.pwrite(self.fd, rec, pos)
                    pos += k
                    rec = rec[k:]
            pos = end
        except (OSError, ValueError) as e:
            raise self._fail(e) from None
        payload_off = self._offset + enc.payload_offset
        with self._lock:
            for h, (doff, dlen) in zip(hs, enc.spans, strict=True):
                self._uncommitted[h] = IndexEntry(
                    self.filenum, enc.flags, payload_off, enc.payload_length, doff, dlen
                )
                del self._inflight[h]
            self._inflight_size = max(0, self._inflight_size - sum(d + 3 for _, d in enc.spans))
            self._offset = pos
            due = (
                len(self._uncommitted) >= self.commit_count
                or self._offset - self._committed >= self.commit_bytes
            )
        if due and (self._cfut is None or self._cfut.done()):
            if self._cfut is not None:
                self._cfut.result()
            if self._cexec is None:
                self._cexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vt-commit")
            self._cfut = self._cexec.submit(self._commit)

    def _commit(self) -> None:
        with self._commit_lock:
            if self.failed is not None:
                raise StoreError(f"writing {self.path} failed earlier: {self.failed}")
            with self._lock:
                batch = list(self._uncommitted.items())
                end = self._offset
            if not batch and end == self._committed:
                return
            try:
                os.fdatasync(self.fd)
                self._commit_fn([(bytes(h), e) for h, e in batch], end)
            except (OSError, StoreError) as e:
                raise self._fail(e, truncate=False) from None
            with self._lock:
                for h, _ in batch:
                    self._uncommitted.pop(h, None)
                self._committed = end
