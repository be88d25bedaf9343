"""Cache stores: a faster store in front of a slower one.

`CacheStore(cache, backend)` reads through the cache (a miss is fetched from the
backend and kept), writes through to both, and answers `len` and the ordered
listing from the backend, which is the store of record.  Two caches to put in
front:

- `file_cache(path, backend, max_size)`: a datadir capped at `max_size` octets,
  persistent across runs; when a data file is sealed and the datadir is over its
  cap, its oldest sealed data files are evicted whole.
- `memory_cache(backend, max_bytes)`: an `LRUMemoryStore`, which forgets the
  least recently used blocks beyond `max_bytes`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from vtstore.errors import CorruptBlockError, MissingBlockError
from vtstore.hashes import HashCode
from vtstore.stores.base import Store
from vtstore.stores.datadir import DataDir

log = logging.getLogger(__name__)


class LRUMemoryStore(Store):
    """An in-memory store that keeps at most `max_bytes` of block data, forgetting
    the least recently used blocks first.  Only useful as a cache."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, hashclass=None, name: str | None = None):
        super().__init__(name=name or f"lru-memory:{max_bytes}", hashclass=hashclass)
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[HashCode, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _add_new(self, h: HashCode, data) -> None:
        data = bytes(data)
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if h in self._blocks:
                return
            self._blocks[h] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, old = self._blocks.popitem(last=False)
                self._bytes -= len(old)

    def _get(self, h: HashCode) -> bytes | None:
        with self._lock:
            d = self._blocks.get(h)
            if d is not None:
                self._blocks.move_to_end(h)
            return d

    def _contains(self, h: HashCode) -> bool:
        return h in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def bytes_held(self) -> int:
        """Octets of block data held now."""
        return self._bytes

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        with self._lock:
            keys = sorted(self._blocks)
        return iter(keys if start is None else [k for k in keys if k >= start])

    def _close(self) -> None:
        self._blocks.clear()
        self._bytes = 0


class CacheStore(Store):
    """`cache` in front of `backend`; both are closed with it when `owns`."""

    def __init__(self, cache: Store, backend: Store, *, name: str | None = None, owns: bool = True):
        if cache.hashclass is not backend.hashclass:
            from vtstore.errors import HashClassMismatchError

            raise HashClassMismatchError(
                f"cache {cache.name} is {cache.hashclass.hashname},"
                f" store {backend.name} is {backend.hashclass.hashname}"
            )
        self.cache = cache
        self.backend = backend
        self.owns = owns
        self.cache_hits = 0
        self.cache_misses = 0
        super().__init__(
            name=name or f"cache({cache.name} -> {backend.name})",
            hashclass=backend.hashclass,
            readonly=backend.readonly,
        )

    @property
    def chunker_params(self):
        """The backend's chunker sizes, if it records them."""
        return getattr(self.backend, "chunker_params", None)

    @property
    def chunk_params(self):
        """The backend's chunking parameters."""
        return self.backend.chunk_params

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Add to the backend, then (best effort) to the cache."""
        self._check_writable()
        hs = self.backend.add_many(datas)
        try:
            self.cache.add_many(datas)
        except Exception as e:  # noqa: BLE001 - the cache is only a cache
            log.warning("cache %s: %s", self.cache.name, e)
        return hs

    def _get(self, h: HashCode) -> bytes | None:
        try:
            data = self.cache[h]
            self.cache_hits += 1
            return data
        except MissingBlockError:
            pass
        except CorruptBlockError as e:
            log.warning("cache %s: %s", self.cache.name, e)
        self.cache_misses += 1
        try:
            data = self.backend[h]
        except MissingBlockError:
            return None
        try:
            self.cache.add(data)
        except Exception as e:  # noqa: BLE001 - the cache is only a cache
            log.warning("cache %s: %s", self.cache.name, e)
        return data

    def _contains(self, h: HashCode) -> bool:
        return h in self.cache or h in self.backend

    def contains_many(self, hashcodes) -> list[bool]:
        """Batch membership: the cache first, then the backend for the rest."""
        self._check_open()
        hs = list(hashcodes)
        found = self.cache.contains_many(hs)
        todo = [i for i, f in enumerate(found) if not f]
        if todo:
            for i, f in zip(todo, self.backend.contains_many([hs[i] for i in todo]), strict=True):
                found[i] = f
        return found

    def __len__(self) -> int:
        return len(self.backend)

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        return self.backend.hashcodes(start=start)

    def flush(self) -> None:
        """Flush the backend, then the cache."""
        if self.closed:
            return
        if not self.backend.readonly:
            self.backend.flush()
        try:
            self.cache.flush()
        except Exception as e:  # noqa: BLE001 - the cache is only a cache
            log.warning("cache %s: %s", self.cache.name, e)

    def _close(self) -> None:
        if self.owns:
            try:
                self.cache.close()
            finally:
                self.backend.close()

    @property
    def exports(self) -> dict:
        """The backend's exports."""
        return self.backend.exports

    def info(self) -> dict:
        """A description for `vt info`: the backend's, plus the cache's."""
        from vtstore.stores.spec import store_info

        d = dict(store_info(self.backend))
        d["cache"] = store_info(self.cache)
        d["cache_hits"] = self.cache_hits
        d["cache_misses"] = self.cache_misses
        return d


def file_cache(
    path, backend: Store, max_size: int = 1 << 30, data_file_size: int | None = None
) -> CacheStore:
    """A persistent datadir cache of at most about `max_size` octets in front of
    `backend`."""
    cache = DataDir(
        path, hashclass=backend.hashclass, max_size=max_size, data_file_size=data_file_size
    )
    return CacheStore(cache, backend)


def memory_cache(backend: Store, max_bytes: int = 64 * 1024 * 1024) -> CacheStore:
    """An in-memory LRU cache of at most `max_bytes` in front of `backend`."""
    return CacheStore(LRUMemoryStore(max_bytes, hashclass=backend.hashclass), backend)
