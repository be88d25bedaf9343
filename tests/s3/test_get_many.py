"""`get_many` of the object layouts: a batch is parallel requests, answers in
the caller's order (duplicates, blocks still spooled, several packs), a missing
block raises before anything is fetched, damage raises naming the block and
never returns wrong data, memory stays bounded by the requests in flight, and
a slow server is met by requests in parallel, not one after another."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from vtstore.errors import CorruptBlockError, MissingBlockError
from vtstore.hashes import Hash_BLAKE3
from vtstore.stores.backends.localdir import LocalDirBackend
from vtstore.stores.backends.packread import MIN_RANGE
from vtstore.stores.backends.packs import PackStore

from .test_s3_faults import ThrottlingProxy


class WatchedBackend(LocalDirBackend):
    """A local backend that records its ranged reads: how many, and the most
    octets asked for at once by requests in flight together."""

    def __init__(self, root):
        super().__init__(root)
        self.lock = threading.Lock()
        self.ranges = 0
        self.inflight = 0
        self.max_inflight = 0
        self.max_parallel = 0
        self.parallel = 0

    def get_range(self, name, start, end):
        with self.lock:
            self.ranges += 1
            self.inflight += end - start
            self.parallel += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.max_parallel = max(self.max_parallel, self.parallel)
        try:
            time.sleep(0.002)  # a little latency, so that requests overlap
            return super().get_range(name, start, end)
        finally:
            with self.lock:
                self.inflight -= end - start
                self.parallel -= 1


def blocks(n: int, seed: int = 1, lo: int = 2000, hi: int = 12000) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(lo, hi)) for _ in range(n)]


def fill(tmp_path, data, **kw) -> list:
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c1", **kw) as s:
        return s.add_many(data)


def test_order_duplicates_several_packs_and_spooled_blocks(tmp_path):
    data = blocks(900)  # about 6 MiB in 6 packs
    hs = fill(tmp_path, data, pack_size=1 << 20)
    back = WatchedBackend(tmp_path / "o")
    with PackStore(back, tmp_path / "c2", readahead=1 << 20) as s:
        assert len(s.index.files()) >= 5
        extra = blocks(40, seed=9)
        ehs = s.add_many(extra)  # spooled, not flushed: answered from the spool
        rnd = random.Random(2)
        ask = [rnd.randrange(len(hs)) for _ in range(700)] + list(range(50))
        batch = [hs[i] for i in ask] + ehs + [hs[3], ehs[0], hs[3]]
        want = [data[i] for i in ask] + extra + [data[3], extra[0], data[3]]
        got = s.get_many(batch)
        assert got == want
        assert got == [s[h] for h in batch]  # the single-get path agrees
        assert s.get_many([]) == []
        assert s.get_many([hs[5]]) == [data[5]]
    # one batch, many blocks: few requests, several at once
    assert back.ranges < 60, back.ranges
    assert back.max_parallel > 1, back.max_parallel


def test_missing_block_raises_before_any_request(tmp_path):
    data = blocks(100, seed=3)
    hs = fill(tmp_path, data)
    back = WatchedBackend(tmp_path / "o")
    with PackStore(back, tmp_path / "c2") as s:
        absent = Hash_BLAKE3.from_data(b"not stored")
        with pytest.raises(MissingBlockError) as e:
            s.get_many([*hs[:50], absent, *hs[50:]])
        assert e.value.hashcode == absent
        assert back.ranges == 0
        with pytest.raises(MissingBlockError):
            s.get_many([absent])


def test_damaged_record_names_its_block_and_others_still_read(tmp_path):
    data = blocks(400, seed=4)
    hs = fill(tmp_path, data, compress=False, pack_size=8 << 20)
    (pack,) = (tmp_path / "o" / "data").iterdir()
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    pack.write_bytes(bytes(raw))
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c2") as s:
        bad = set()
        for i, h in enumerate(hs):  # one at a time: which ones are damaged
            try:
                assert s[h] == data[i]
            except CorruptBlockError:
                bad.add(i)
        assert 0 < len(bad) < 40
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c3") as s:
        with pytest.raises(CorruptBlockError) as e:
            s.get_many(hs)
        assert e.value.hashcode == hs[min(bad)]  # the earliest damaged one
        # the records after the damaged one, in the same request, still read
        good = [i for i in range(len(hs)) if i not in bad]
        assert max(good) > max(bad)
        assert s.get_many([hs[i] for i in good]) == [data[i] for i in good]


def test_truncated_pack(tmp_path):
    data = blocks(300, seed=5)
    hs = fill(tmp_path, data, compress=False)
    (pack,) = (tmp_path / "o" / "data").iterdir()
    raw = pack.read_bytes()
    pack.write_bytes(raw[: len(raw) * 2 // 3])
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c2") as s:
        with pytest.raises(CorruptBlockError):
            s.get_many(hs)
        assert s.get_many(hs[:100]) == data[:100]


def test_memory_is_bounded_by_the_requests_in_flight(tmp_path):
    """A 40 MB batch is fetched by at most `downloads` requests of bounded size
    at once, whatever the batch's size."""
    data = blocks(4000, seed=6, lo=8000, hi=12000)  # about 40 MB
    hs = fill(tmp_path, data, compress=False)
    back = WatchedBackend(tmp_path / "o")
    readahead = 2 << 20
    with PackStore(back, tmp_path / "c2", downloads=3, readahead=readahead) as s:
        got = s.get_many(hs)
        assert got == data
    # a request spans at most `readahead` plus the record it ends with
    bound = 3 * (max(readahead, MIN_RANGE) + (512 << 10))
    assert back.max_inflight <= bound, (back.max_inflight, bound)
    assert back.max_parallel <= 3
    assert back.ranges >= sum(len(d) for d in data) // (readahead + (512 << 10))


def test_slow_server_is_met_in_parallel(tmp_path, weed, prefix):
    """Through a proxy of 1.5 MB/s a connection: a batch over 4 packs takes
    about one pack's time, where reading them in order takes four."""
    from vtstore.stores.backends.s3 import S3Backend

    from .conftest import ADMIN, BUCKET

    data = blocks(500, seed=7, lo=6000, hi=10000)  # 4 MB, incompressible
    with PackStore(weed.backend(prefix), tmp_path / "c1", pack_size=1 << 20) as s:
        hs = s.add_many(data)
    proxy = ThrottlingProxy(("127.0.0.1", weed.s3_port), rate=1.5e6)

    def slow_store(cache):
        b = S3Backend(
            BUCKET,
            prefix,
            endpoint=f"http://127.0.0.1:{proxy.port}",
            access_key_id=ADMIN[0],
            secret_access_key=ADMIN[1],
        )
        return PackStore(b, tmp_path / cache)

    try:
        with slow_store("c2") as s:
            assert len(s.index.files()) == 4
            t = time.monotonic()
            assert [s[h] for h in hs] == data
            one_by_one = time.monotonic() - t
        with slow_store("c3") as s:
            t = time.monotonic()
            assert s.get_many(hs) == data
            batch = time.monotonic() - t
    finally:
        proxy.close()
    assert batch < one_by_one * 0.6, (batch, one_by_one)


def test_blocks_layout_get_many(tmp_path, weed, prefix):
    from vtstore.stores.backends.base import Retrying
    from vtstore.stores.backends.objects import BlockObjectStore

    data = blocks(200, seed=8, lo=100, hi=3000)
    with BlockObjectStore(Retrying(weed.backend(prefix), max_time=20)) as s:
        hs = s.add_many(data)
    with BlockObjectStore(Retrying(weed.backend(prefix), max_time=20)) as s:
        batch = [*hs, hs[0], hs[7], hs[0]]
        assert s.get_many(batch) == [*data, data[0], data[7], data[0]]
        absent = s.hash(b"absent")
        with pytest.raises(MissingBlockError) as e:
            s.get_many([*hs[:10], absent, *hs[10:]])
        assert e.value.hashcode == absent
        s.backend.put(s.object_name(hs[5]), os.urandom(50))  # damage one object
        with pytest.raises(CorruptBlockError) as e:
            s.get_many(hs)
        assert e.value.hashcode == hs[5]
