"""Cache stores: the memory LRU and the persistent, capped file cache."""

from __future__ import annotations

import random

from vtstore.stores.cache import CacheStore, LRUMemoryStore, file_cache, memory_cache
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.stores.progress import ProgressStore


def test_lru_keeps_under_its_cap():
    s = LRUMemoryStore(max_bytes=10_000)
    hs = [s.add(bytes([i]) * 1000) for i in range(30)]
    assert s.bytes_held <= 10_000
    assert hs[0] not in s and hs[-1] in s
    s[hs[-10]]  # touch: now most recently used
    s.add(b"new" * 400)
    assert hs[-10] in s and hs[-9] not in s


def test_memory_cache_reads_through():
    back = MemoryStore()
    counted = ProgressStore(back, owns=False)
    c = memory_cache(counted, max_bytes=1 << 20)
    hs = [back.add(b"x%d" % i * 100) for i in range(20)]
    for _ in range(3):
        for h in hs:
            assert c[h] == back[h]
    assert counted.get_count == 20  # later rounds came from the cache
    assert c.cache_hits == 40 and c.cache_misses == 20
    assert len(c) == 20


def test_writes_go_through_to_the_backend(tmp_path):
    with DataDir(tmp_path / "back") as back:
        with CacheStore(LRUMemoryStore(1000), back, owns=False) as c:
            h = c.add(b"durable" * 1000)  # too big for the cache: fine
        assert back[h] == b"durable" * 1000


def test_file_cache_persists_and_stays_capped(tmp_path):
    rnd = random.Random(5)
    blocks = [rnd.randbytes(3000) for _ in range(400)]
    back = MemoryStore()
    hs = back.add_many(blocks)
    counted = ProgressStore(back, owns=False)
    with file_cache(tmp_path / "cache", counted, max_size=200_000, data_file_size=40_000) as c:
        for h in hs:
            c[h]
        info = c.cache.info()
        assert info["bytes_on_disk"] <= 200_000 + 40_000 + 10_000
    assert counted.get_count == 400
    # a new process (here: a new cache store) finds the recent blocks on disk
    counted2 = ProgressStore(back, owns=False)
    with file_cache(tmp_path / "cache", counted2, max_size=200_000, data_file_size=40_000) as c:
        for h, b in zip(hs[-30:], blocks[-30:], strict=True):
            assert c[h] == b
        assert counted2.get_count == 0
        assert c[hs[0]] == blocks[0]  # evicted long ago: fetched again
        assert counted2.get_count == 1
