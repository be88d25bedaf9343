"""A bounded block cache shared by every file of a mount, and leaf readahead.

`CachingStore` wraps a store with an LRU of recently read blocks, bounded in
bytes, so re-reads and the reads that follow a readahead cost no store access.
It is a store of the same interface (reads cached, writes passed through), as
the restic habit of "decorators of the one interface" asks.  `Prefetcher` runs
in a small thread pool and loads the leaves after the ones a sequential reader
is at, so store latency and decompression overlap with the FUSE round trips.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from vtstore.blocks import HashCodeBlock
from vtstore.errors import MissingBlockError

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 128 * 1024 * 1024


class CachingStore:
    """`store` with a shared LRU cache of block data, at most `max_bytes` of it."""

    def __init__(self, store, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.backend = store
        self.max_bytes = max_bytes
        self._lru: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name):
        # everything not overridden (add, flush, hashclass, name...) is the backend's
        return getattr(self.backend, name)

    def __contains__(self, h) -> bool:
        with self._lock:
            if h in self._lru:
                return True
        return h in self.backend

    def cached(self, h) -> bool:
        """Whether `h` is in the cache now (no store access)."""
        with self._lock:
            return h in self._lru

    def peek(self, h) -> bytes | None:
        """The cached data for `h`, or None (never reads the store)."""
        with self._lock:
            data = self._lru.get(h)
            if data is not None:
                self._lru.move_to_end(h)
                self.hits += 1
            return data

    def __getitem__(self, h) -> bytes:
        with self._lock:
            data = self._lru.get(h)
            if data is not None:
                self._lru.move_to_end(h)
                self.hits += 1
                return data
        data = self.backend[h]
        self.put(h, data)
        with self._lock:
            self.misses += 1
        return data

    def get(self, h, default=None):
        try:
            return self[h]
        except MissingBlockError:
            return default

    def put(self, h, data) -> None:
        """Remember `data` for `h` (evicting the least recently used)."""
        n = len(data)
        if n > self.max_bytes // 4:
            return
        with self._lock:
            if h in self._lru:
                return
            self._lru[h] = data
            self._bytes += n
            while self._bytes > self.max_bytes:
                _, old = self._lru.popitem(last=False)
                self._bytes -= len(old)

    def add(self, data):
        return self.backend.add(data)

    def add_many(self, datas):
        return self.backend.add_many(datas)

    def __len__(self) -> int:
        return len(self.backend)


class NotCached(Exception):
    """Raised by `PeekStore` for a block that would need a store read."""


class PeekStore:
    """A view of a `CachingStore` that fails instead of reading the store.

    Lets the FUSE loop answer a read from the cache at once and hand only real
    misses to a worker thread.
    """

    __slots__ = ("cache",)

    def __init__(self, cache: CachingStore):
        self.cache = cache

    def __getitem__(self, h) -> bytes:
        data = self.cache.peek(h)
        if data is None:
            raise NotCached(h)
        return data


class Prefetcher:
    """Loads upcoming leaf blocks into a `CachingStore` in background threads."""

    def __init__(self, store: CachingStore, workers: int = 2, window: int = 4 * 1024 * 1024):
        self.store = store
        self.window = window
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vt-readahead")
        self._inflight: set = set()
        self._lock = threading.Lock()
        self._closed = False

    def prefetch(self, block, start: int) -> None:
        """Queue the leaves of `block` covering `[start, start + window)`."""
        if self._closed:
            return
        self._pool.submit(self._run, block, start)

    def _run(self, block, start: int) -> None:
        try:
            want = []
            for leaf, _, _ in block.slices(self.store, start, start + self.window):
                if isinstance(leaf, HashCodeBlock) and not self.store.cached(leaf.hashcode):
                    want.append(leaf.hashcode)
            for h in want:
                with self._lock:
                    if h in self._inflight or self._closed:
                        continue
                    self._inflight.add(h)
                try:
                    self.store[h]
                finally:
                    with self._lock:
                        self._inflight.discard(h)
        except Exception as e:  # readahead is only a hint
            log.debug("readahead failed: %s", e)

    def close(self) -> None:
        """Stop the threads (queued work is dropped)."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
