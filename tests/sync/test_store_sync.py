"""Whole-store sync (`vtstore.sync.stores.sync_stores`): real datadirs, a real
block server on a UNIX socket whose store counts the requests it answers, a
corrupt block made by flipping a byte of a real data file."""

from __future__ import annotations

import math
import random
import threading

import pytest

from vtstore.errors import HashClassMismatchError, ReadOnlyError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1
from vtstore.net import BlockServer, StreamStore
from vtstore.stores.base import Store
from vtstore.stores.datadir import DataDir
from vtstore.sync.stores import LIST_PAGE, sync_stores


def blocks(n: int, tag: bytes, size: int = 24) -> list[bytes]:
    """`n` distinct blocks (the tag keeps different sets apart)."""
    pad = b"x" * max(0, size - 8 - len(tag))
    return [tag + i.to_bytes(8, "little") + pad for i in range(n)]


def make_pair(tmp_path, common: int, only_a: int, only_b: int, hashclass=Hash_BLAKE3):
    """Two datadirs sharing `common` blocks, each with a few of its own."""
    a = DataDir(tmp_path / "a", hashclass=hashclass)
    b = DataDir(tmp_path / "b", hashclass=hashclass)
    shared = blocks(common, b"c")
    for i in range(0, common, 20000):
        a.add_many(shared[i : i + 20000])
        b.add_many(shared[i : i + 20000])
    ha = a.add_many(blocks(only_a, b"A", 3000)) if only_a else []
    hb = b.add_many(blocks(only_b, b"B", 1000)) if only_b else []
    a.flush()
    b.flush()
    return a, b, ha, hb


def keyset(store: Store) -> set:
    return set(store.hashcodes())


class CountingStore(Store):
    """The store a server serves, counting the listing requests it answers."""

    def __init__(self, inner: Store):
        super().__init__(f"counted({inner.name})", inner.hashclass, inner.readonly)
        self.inner = inner
        self.counts = {"hoh": 0, "list": 0, "len": 0, "get": 0}
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def hash_of_hashcodes(self, start=None, after=False, length=None):
        self._count("hoh")
        return self.inner.hash_of_hashcodes(start=start, after=after, length=length)

    def hashcodes(self, start=None, after=False, length=None):
        self._count("list")
        return self.inner.hashcodes(start=start, after=after, length=length)

    def __len__(self):
        self._count("len")
        return len(self.inner)

    def _get(self, h):
        self._count("get")
        return self.inner.get(h)

    def _contains(self, h):
        return h in self.inner

    def contains_many(self, hs):
        return self.inner.contains_many(hs)

    def add_many(self, datas):
        return self.inner.add_many(datas)

    def _iter_sorted(self, start):
        return self.inner.hashcodes(start)

    def flush(self):
        self.inner.flush()


@pytest.fixture
def served(tmp_path):
    """`served(store) -> (client, counting)`: `store` behind a BlockServer on a
    UNIX socket, and a StreamStore talking to it; all stopped at the end."""
    started = []

    def serve(store: Store):
        counting = CountingStore(store)
        srv = BlockServer({"": counting})
        spec = srv.listen(f"unix:{tmp_path}/s{len(started)}.sock")
        client = StreamStore(spec)
        started.append((srv, client))
        return client, counting

    yield serve
    for srv, client in started:
        client.close()
        srv.shutdown()


def test_datadirs_differing_both_ways(tmp_path):
    a, b, ha, hb = make_pair(tmp_path, 3000, 7, 5)
    with a, b:
        r = sync_stores(a, b)
        assert (r.sent_blocks, r.received_blocks, r.dst_only) == (7, 0, 5)
        assert r.sent_bytes == 7 * 3000
        assert r.problems == []
        assert keyset(b) == keyset(a) | set(hb)
        assert set(ha) <= keyset(b) and not set(hb) & keyset(a)
        # both ways: the destination's own five come back
        r = sync_stores(a, b, both_ways=True)
        assert (r.sent_blocks, r.received_blocks, r.received_bytes) == (0, 5, 5 * 1000)
        assert keyset(a) == keyset(b)
        assert len(a) == 3012
        assert any("received 5 blocks" in line for line in r.lines())
    # durable: reopened, the copies are there and read back right
    with DataDir(tmp_path / "b", readonly=True) as b2, DataDir(tmp_path / "a") as a2:
        assert [b2[h] for h in ha] == blocks(7, b"A", 3000)
        assert [a2[h] for h in hb] == blocks(5, b"B", 1000)


def test_identical_stores_one_comparison(tmp_path):
    a, b, _, _ = make_pair(tmp_path, 5000, 0, 0)
    with a, b:
        r = sync_stores(a, b, both_ways=True)
    assert r.identical
    assert r.ranges_compared == 1
    assert r.round_trips == 1
    assert (r.sent_blocks, r.received_blocks, r.keys_listed) == (0, 0, 0)
    assert "the stores hold the same blocks" in r.lines()
    assert r.to_json()["identical"] is True


@pytest.mark.parametrize("empty", ["dst", "src"])
def test_one_store_empty(tmp_path, empty):
    a, b, ha, _ = make_pair(tmp_path, 0, 20000, 0)
    src, dst = (a, b) if empty == "dst" else (b, a)
    done = []
    with a, b:
        r = sync_stores(src, dst, progress=done.append)
        if empty == "dst":
            assert r.sent_blocks == 20000 and r.sent_bytes == 20000 * 3000
            assert keyset(b) == set(ha)
            assert done == sorted(done) and done[-1] == 20000
            # listed (in chunks whose windows overlap a little), not compared
            # range by range, in one round of pipelined pages
            assert 20000 <= r.keys_listed <= 1.1 * 20000
            assert r.ranges_compared == 1
        else:
            assert (r.sent_blocks, r.dst_only) == (0, 20000)
            assert len(b) == 0
            r = sync_stores(src, dst, both_ways=True)
            assert r.received_blocks == 20000 and keyset(b) == set(ha)
    # both empty
    with DataDir(tmp_path / "e1") as e1, DataDir(tmp_path / "e2") as e2:
        r = sync_stores(e1, e2)
        assert r.identical and r.sent_blocks == 0


def test_dry_run_copies_nothing(tmp_path):
    a, b, _, _ = make_pair(tmp_path, 2000, 9, 4)
    with a, b:
        before = (keyset(a), keyset(b))
        r = sync_stores(a, b, both_ways=True, dry_run=True)
        assert (r.sent_blocks, r.received_blocks) == (9, 4)
        assert (r.sent_bytes, r.received_bytes) == (0, 0)
        assert (keyset(a), keyset(b)) == before
        assert any(line.startswith("would send 9 blocks") for line in r.lines())


def test_refuses_other_hash_class_and_read_only(tmp_path):
    with (
        DataDir(tmp_path / "a", hashclass=Hash_BLAKE3) as a,
        DataDir(tmp_path / "s", hashclass=Hash_SHA1) as s,
    ):
        a.add(b"one")
        s.add(b"two")
        with pytest.raises(HashClassMismatchError, match="vt migrate"):
            sync_stores(a, s)
    a, b, _, _ = make_pair(tmp_path / "ro", 10, 1, 1)
    b.close()
    with a, DataDir(tmp_path / "ro" / "b", readonly=True) as bro:
        with pytest.raises(ReadOnlyError, match="read-only"):
            sync_stores(a, bro)
        with pytest.raises(ReadOnlyError):
            sync_stores(bro, a, both_ways=True)
        # a dry run into a read-only store is fine, and one-way from it too
        assert sync_stores(a, bro, dry_run=True).sent_blocks == 1
        assert sync_stores(bro, a).sent_blocks == 1


def _flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def test_corrupt_source_block_reported_not_copied(tmp_path, served):
    rnd = random.Random(5)
    datas = [rnd.randbytes(3000 + i) for i in range(40)]  # incompressible: stored plain
    with DataDir(tmp_path / "src") as s:
        hs = s.add_many(datas)
    victims = [hs[17], hs[30]]
    with DataDir(tmp_path / "src", readonly=True) as s:
        for victim in victims:
            e = s._index.get(victim)
            _flip(
                s.data_file_path(s._index.files()[e.filenum]), e.payload_offset + e.data_offset + 5
            )
    # locally, and with the damaged datadir behind a server
    for remote in (False, True):
        with DataDir(tmp_path / "src", readonly=True) as s, DataDir(tmp_path / f"dst{remote}") as d:
            src = served(s)[0] if remote else s
            r = sync_stores(src, d)
            assert r.sent_blocks == 38
            assert not any(v in d for v in victims)
            assert len(r.problems) == 2, r.problems
            assert all(str(v) in " ".join(r.problems) for v in victims)
            assert all(d[h] == x for h, x in zip(hs, datas, strict=True) if h not in victims)
            # the batch is asked again once per bad block, not block by block
            assert r.round_trips <= 1 + 1 + 3 + 1, r.lines()
            assert any(line.startswith("problem:") for line in r.lines())


def test_push_and_pull_over_unix_socket(tmp_path, served):
    a, b, ha, hb = make_pair(tmp_path, 4000, 30, 20)
    with a, b:
        remote_b, counted = served(b)
        r = sync_stores(a, remote_b, both_ways=True)
        assert (r.sent_blocks, r.received_blocks) == (30, 20)
        assert keyset(a) == keyset(b)
        # what the server answered is what the report counted on that side
        # (a's requests are local: total minus the server's)
        assert counted.counts["hoh"] + counted.counts["list"] + counted.counts["len"] > 0
        # pull: the remote as source
        with DataDir(tmp_path / "c") as c:
            r = sync_stores(remote_b, c)
            assert r.sent_blocks == len(a) and keyset(c) == keyset(a)


def test_large_stores_differing_by_100_few_round_trips(tmp_path, served):
    """100k-block stores differing by 50 blocks each way, the destination
    behind a server: a few round trips, a small part of the keys listed."""
    n = 100_000
    a, b, ha, hb = make_pair(tmp_path, n, 50, 50)
    with a, b:
        remote_b, counted = served(b)
        r = sync_stores(a, remote_b, both_ways=True)
        assert (r.sent_blocks, r.received_blocks) == (50, 50), r.lines()
        assert keyset(a) == keyset(b)
        # listing every key takes n / LIST_PAGE sequential pages per side
        listing = math.ceil((n + 50) / LIST_PAGE)
        compare_rounds = r.round_trips - 4  # two fetch batches, two flushes
        assert compare_rounds <= 6, r.lines()
        assert compare_rounds * 4 <= listing, r.lines()
        assert r.keys_listed < 0.2 * 2 * n, r.lines()
        # the server saw the windows the report says were asked of it
        asked = counted.counts["hoh"] + counted.counts["list"]
        assert 0 < asked <= r.requests
        assert counted.counts["len"] == 1
        # and now they are the same: one comparison
        r2 = sync_stores(a, remote_b)
        assert r2.identical and r2.round_trips == 1


@pytest.mark.parametrize(
    "leaf,first,tight",
    [(64, 1024, False), (4, 16, False), (4, 16, True), (2, 4, True)],
    ids=["default", "deep", "deep-short-windows", "deeper-short-windows"],
)
def test_random_differences_found_exactly(monkeypatch, leaf, first, tight):
    """Over many random pairs the sync finds exactly the set differences, also
    with a deep range tree and with windows that stop short of their range
    (which the follow-up ranges must cover)."""
    from vtstore.stores.memory import MemoryStore
    from vtstore.sync import stores as S

    monkeypatch.setattr(S, "LEAF", leaf)
    monkeypatch.setattr(S, "FIRST_RANGE_KEYS", first)
    if tight:
        monkeypatch.setattr(
            S._Walk, "_window", lambda self, lo, hi: max(1, int(self._expected(lo, hi) / 2))
        )
    rnd = random.Random(leaf * 1000 + first + tight)
    for _ in range(25):
        a, b = MemoryStore(), MemoryStore()
        common = blocks(rnd.choice([0, 1, 5, 300, 3000]), b"c%d" % rnd.random())
        a.add_many(common)
        b.add_many(common)
        ha = set(a.add_many(blocks(rnd.choice([0, 1, 3, 40]), b"A%d" % rnd.random())))
        hb = set(b.add_many(blocks(rnd.choice([0, 1, 3, 40]), b"B%d" % rnd.random())))
        r = sync_stores(a, b, both_ways=rnd.random() < 0.5)
        assert r.sent_blocks == len(ha) and r.dst_only == len(hb), r.lines()
        assert keyset(b) == keyset(a) | hb
        if r.both_ways:
            assert r.received_blocks == len(hb) and keyset(a) == keyset(b)


def _stdio_spec(store_spec: str) -> str:
    """A `|command` spec running `vt -S STORE serve -` from this checkout (as
    `|ssh host vt serve -` would, without the ssh)."""
    import sys
    from pathlib import Path

    import vtstore

    src = Path(vtstore.__file__).resolve().parents[1]
    return f"|PYTHONPATH={src} {sys.executable} -m vtstore.cli.main -q -S {store_spec} serve -"


def test_push_to_a_stdio_server_then_identical(tmp_path):
    a, b, ha, hb = make_pair(tmp_path, 2000, 12, 3)
    b.close()
    with a, StreamStore(_stdio_spec(f"datadir:{tmp_path / 'b'}")) as remote:
        r = sync_stores(a, remote, both_ways=True)
        assert (r.sent_blocks, r.received_blocks) == (12, 3), r.lines()
        r = sync_stores(remote, a)
        assert r.identical and r.round_trips == 1
    with DataDir(tmp_path / "b", readonly=True) as b2:
        assert set(ha) <= keyset(b2) and len(b2) == 2015


def test_interrupted_sync_resumes(tmp_path):
    """A sync stopped after its first copy batch sends only the rest when run again."""
    a, b, ha, _ = make_pair(tmp_path, 1000, 3000, 0)

    class Stop(Exception):
        pass

    def stop(done):
        raise Stop(done)

    with a, b:
        with pytest.raises(Stop):
            sync_stores(a, b, progress=stop)
        first = len(b) - 1000
        assert 0 < first < 3000
    with DataDir(tmp_path / "a") as a, DataDir(tmp_path / "b") as b:
        r = sync_stores(a, b)
        assert r.sent_blocks == 3000 - first
        assert keyset(a) == keyset(b)


def test_two_sources_into_one_destination_at_once(tmp_path, served):
    """Two syncs into one served datadir at the same time: each sends its own,
    the shared blocks arrive once, nothing is lost."""
    a, b, ha, _ = make_pair(tmp_path, 3000, 200, 0)
    b.close()
    with a, DataDir(tmp_path / "b", readonly=True) as b_ro, DataDir(tmp_path / "d") as d:
        dst1, _ = served(d)
        dst2 = StreamStore(dst1.name)
        reports = {}

        def run(name, src, dst):
            reports[name] = sync_stores(src, dst)

        ts = [
            threading.Thread(target=run, args=("a", a, dst1)),
            threading.Thread(target=run, args=("b", b_ro, dst2)),
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dst2.close()
        assert reports["a"].problems == reports["b"].problems == []
        assert keyset(d) == keyset(a)
        assert reports["a"].sent_blocks >= 200 and reports["b"].sent_blocks <= 3000


def test_a_store_listing_out_of_order_is_an_error_not_a_hang():
    """A broken store (or server) whose windows ignore their start gives one
    clear error instead of a walk that never ends."""
    from vtstore.errors import FormatError
    from vtstore.stores.memory import MemoryStore

    class IgnoresStart(MemoryStore):
        def _iter_sorted(self, start):
            return super()._iter_sorted(None)

    for n in (300, 5000):
        bad, good = IgnoresStart(), MemoryStore()
        bad.add_many(blocks(n, b"x"))
        good.add_many(blocks(n // 2, b"x"))
        with pytest.raises(FormatError, match="ended before it"):
            sync_stores(bad, good)


def test_public_batched_listing_matches_the_single_calls(tmp_path):
    """`StreamStore.hash_of_hashcodes_many` and `hashcodes_many` answer what the
    single calls answer, a window longer than a server page (16384) included."""
    from vtstore.stores.memory import MemoryStore

    inner = MemoryStore()
    inner.add_many(blocks(20_000, b"p"))
    srv = BlockServer({"": inner}, insecure_no_auth=True)
    spec = srv.listen(f"unix:{tmp_path}/p.sock")
    try:
        with StreamStore(spec, readonly=True) as st:
            keys = sorted(inner.hashcodes())
            windows = [(None, None), (None, 20_000), (keys[100], 5), (keys[-3], 10), (keys[7], 0)]
            assert st.hash_of_hashcodes_many(windows) == [
                inner.hash_of_hashcodes(start=s, length=n) for s, n in windows
            ]
            assert st.hashcodes_many(windows) == [
                list(inner.hashcodes(start=s, length=n)) for s, n in windows
            ]
            with pytest.raises(ValueError):
                st.hashcodes_many([(None, -1)])
    finally:
        srv.shutdown()
