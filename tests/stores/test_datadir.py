"""DataDir specifics: creation, metadata checks, rollover, compression, caps,
exports, and a model-based test against a dict."""

from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vtstore.errors import CorruptBlockError, HashClassMismatchError, StoreError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1, Hash_SHA256
from vtstore.stores.datadir import DataDir
from vtstore.stores.params import ChunkerParams


def text(i: int, n: int = 6000) -> bytes:
    line = b"line %d of some source code: x = compute(y) + 42\n" % i
    return (line * (n // len(line) + 1))[:n]


def test_created_on_first_write(tmp_path):
    path = tmp_path / "a" / "b"
    with DataDir(path, readonly=True) as s:
        assert not s.initialized and len(s) == 0
        assert s.get(s.hashclass.from_data(b"x")) is None
    assert not path.exists()
    with DataDir(path) as s:
        assert not path.exists()
        h = s.add(b"first")
        assert s.initialized
    meta = json.loads((path / "datadir.json").read_text())
    assert meta["format"] == "vtstore-datadir" and meta["hashclass"] == "blake3"
    assert meta["chunker"] == {"min": 2048, "avg": 8192, "max": 65536}
    with DataDir(path) as s:
        assert s[h] == b"first"


def test_empty_dir_becomes_a_datadir_but_a_full_one_does_not(tmp_path):
    (tmp_path / "empty").mkdir()
    with DataDir(tmp_path / "empty") as s:
        s.add(b"x")
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "home.vt").write_text("")
    with DataDir(tmp_path / "archives") as s:
        s.add(b"x")
        assert s.exports == {"home": tmp_path / "archives" / "home.vt"}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.c").write_text("int main;")
    with pytest.raises(StoreError, match="not a datadir"):
        DataDir(tmp_path / "src")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        DataDir(tmp_path / "file")


def test_wrong_hashclass_and_chunker_refused(tmp_path):
    with DataDir(tmp_path / "d", hashclass=Hash_SHA256, chunker=(1024, 4096, 32768)) as s:
        s.add(b"x")
    with pytest.raises(HashClassMismatchError, match="holds sha256 blocks, not sha1"):
        DataDir(tmp_path / "d", hashclass=Hash_SHA1)
    with pytest.raises(StoreError, match="chunker"):
        DataDir(tmp_path / "d", chunker=ChunkerParams(2048, 8192, 65536))
    with DataDir(tmp_path / "d") as s:
        assert s.hashclass is Hash_SHA256
        assert s.chunker_params == (1024, 4096, 32768)
        cp = s.chunk_params
        assert cp is None or (cp.min_size, cp.avg_size, cp.max_size) == (1024, 4096, 32768)


def test_environment_hashclass_is_a_default_not_a_demand(tmp_path, monkeypatch):
    with DataDir(tmp_path / "d") as s:
        s.add(b"x")
    monkeypatch.setenv("VT_HASHCLASS", "sha1")
    with DataDir(tmp_path / "d") as s:
        assert s.hashclass is Hash_BLAKE3
    with DataDir(tmp_path / "new") as s:
        assert s.hashclass is Hash_SHA1


def test_rollover_seals_files_and_fds_stay_bounded(tmp_path):
    rnd = random.Random(1)
    blocks = [rnd.randbytes(5000) for _ in range(200)]
    with DataDir(tmp_path / "d", data_file_size=100_000, frame_size=20_000, max_fds=2) as s:
        hs = s.add_many(blocks)
        s.flush()
        info = s.info()
        assert info["data_files"] >= 9
        assert info["sealed_files"] >= info["data_files"] - 1
        for h, b in zip(hs, blocks, strict=True):
            assert s[h] == b
            assert len(s._fds) <= 2
        sizes = [os.path.getsize(p) for p in (tmp_path / "d" / "data").iterdir()]
        assert max(sizes) < 100_000 + 30_000
    with DataDir(tmp_path / "d") as s:
        assert s.fsck().ok


def test_text_compresses_random_does_not(tmp_path):
    with DataDir(tmp_path / "t") as s:
        s.add_many([text(i) for i in range(100)])
        i = s.info()
        assert i["bytes_on_disk"] < i["bytes_stored"] / 10
    with DataDir(tmp_path / "r") as s:
        s.add_many([os.urandom(6000) for _ in range(100)])
        i = s.info()
        assert i["bytes_stored"] <= i["bytes_on_disk"] < i["bytes_stored"] * 1.02


def test_frames_decompress_once_for_neighbours(tmp_path):
    with DataDir(tmp_path / "d") as s:
        hs = s.add_many([text(i) for i in range(40)])
    with DataDir(tmp_path / "d") as s:
        for h in hs:
            s[h]
        assert s._frames.misses <= 2
        assert s._frames.hits >= len(hs) - 2


def test_dedup_counters_persist(tmp_path):
    with DataDir(tmp_path / "d") as s:
        s.add_many([b"a", b"b", b"c"])
        s.add(b"a")
    with DataDir(tmp_path / "d") as s:
        s.add_many([b"b", b"c"])
    with DataDir(tmp_path / "d") as s:
        i = s.info()
        assert (i["blocks"], i["adds_dup"], i["bytes_dup"], i["bytes_stored"]) == (3, 3, 3, 3)


def test_max_size_evicts_oldest_files(tmp_path):
    rnd = random.Random(2)
    blocks = [rnd.randbytes(4000) for _ in range(500)]
    with DataDir(tmp_path / "c", max_size=300_000, data_file_size=60_000) as s:
        hs = s.add_many(blocks)
        s.flush()
        assert s.info()["bytes_on_disk"] <= 300_000 + 60_000 + 10_000
        assert hs[0] not in s and hs[-1] in s
        kept = [h for h in hs if h in s]
        assert 50 < len(kept) < 100
        assert all(s[h] == blocks[hs.index(h)] for h in kept)
        assert s.fsck().ok


def test_block_size_limit(tmp_path):
    from vtstore.stores.vtd import MAX_BLOCK_SIZE

    with DataDir(tmp_path / "d") as s:
        big = os.urandom(3 * 1024 * 1024)
        assert s[s.add(big)] == big  # bigger than a frame: a frame of its own
        with pytest.raises(StoreError, match="exceeds"):
            s.add(b"\0" * (MAX_BLOCK_SIZE + 1))


def test_missing_data_file_is_corrupt_not_missing(tmp_path):
    with DataDir(tmp_path / "d") as s:
        h = s.add(b"will lose my file")
    (f,) = (tmp_path / "d" / "data").iterdir()
    f.unlink()
    with DataDir(tmp_path / "d") as s:
        with pytest.raises(CorruptBlockError, match="missing"):
            s[h]
        rep = s.fsck()
        assert not rep.ok


def test_archive_names(tmp_path):
    with DataDir(tmp_path / "d") as s:
        assert s.archive_path("home") == tmp_path / "d" / "home.vt"
        for bad in ("", "a/b", ".hidden", "x\0y"):
            with pytest.raises(StoreError):
                s.archive_path(bad)
        assert s.exports == {}


def test_unflushed_blocks_visible_in_process_and_listed(tmp_path):
    with DataDir(tmp_path / "d") as s:
        a = s.add(b"committed")
        s.flush()
        b = s.add(b"pending")
        assert s[b] == b"pending" and b in s
        assert len(s) == 2
        assert list(s.hashcodes()) == sorted([a, b])
        assert s.contains_many([a, b]) == [True, True]


class DataDirModel(RuleBasedStateMachine):
    """A datadir behaves like a dict of hash -> data, across flushes and reopens."""

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.model: dict = {}
        self.store = None

    @initialize(frame=st.sampled_from([512, 4096, 262144]))
    def open(self, frame):
        self.frame = frame
        self.store = DataDir(
            os.path.join(self.dir.name, "d"), frame_size=frame, data_file_size=16384
        )

    @rule(data=st.binary(max_size=3000))
    def add(self, data):
        h = self.store.add(data)
        self.model[h] = data

    @rule(datas=st.lists(st.binary(max_size=500), max_size=8))
    def add_many(self, datas):
        for h, d in zip(self.store.add_many(datas), datas, strict=True):
            self.model[h] = d

    @rule()
    def flush(self):
        self.store.flush()

    @rule()
    def reopen(self):
        self.store.close()
        self.store = DataDir(
            os.path.join(self.dir.name, "d"), frame_size=self.frame, data_file_size=16384
        )

    @precondition(lambda self: self.model)
    @rule(i=st.integers(min_value=0), after=st.booleans(), length=st.integers(0, 5))
    def window(self, i, after, length):
        keys = sorted(self.model)
        start = keys[i % len(keys)]
        got = list(self.store.hashcodes(start=start, after=after, length=length))
        j = keys.index(start) + (1 if after else 0)
        assert got == keys[j : j + length]

    @invariant()
    def same(self):
        if self.store is None:
            return
        assert len(self.store) == len(self.model)
        for h, d in list(self.model.items())[-5:]:
            assert self.store[h] == d

    def teardown(self):
        if self.store is not None:
            self.store.close()
            with DataDir(os.path.join(self.dir.name, "d")) as s:
                assert s.fsck().ok
                assert sorted(self.model) == list(s.hashcodes())
        self.dir.cleanup()


TestDataDirModel = DataDirModel.TestCase
TestDataDirModel.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)


def test_add_many_reports_duplicates_within_a_batch_across_rollovers(tmp_path):
    rnd = random.Random(4)
    uniq = [rnd.randbytes(3000) for _ in range(60)]
    batch = [uniq[i % 60] for i in range(150)]  # each block two or three times
    buf = bytearray(b"".join(batch))
    views = [memoryview(buf)[i * 3000 : (i + 1) * 3000] for i in range(150)]
    with DataDir(tmp_path / "d", data_file_size=50_000, frame_size=10_000) as s:
        hs, new = s.add_many_reporting(views)
        buf[:] = bytes(len(buf))  # the caller reuses its buffer: the store copied
        assert new == [True] * 60 + [False] * 90
        assert hs == [s.hashclass.from_data(b) for b in batch]
        assert [s[h] for h in hs[:60]] == uniq
        s.flush()
        assert s.info()["data_files"] >= 3
        assert (s.info()["adds_dup"], s.info()["blocks"]) == (90, 60)
    with DataDir(tmp_path / "d") as s:
        assert s.fsck().ok
        assert [s[h] for h in hs[:60]] == uniq


def test_tree_blocks_go_into_frames_of_their_own(tmp_path):
    from vtstore.stores.progress import ProgressStore

    rnd = random.Random(6)
    with ProgressStore(DataDir(tmp_path / "d", frame_size=40_000)) as s:
        data, tree = [], []
        for _ in range(40):  # interleaved, as a pack adds them
            data += [rnd.randbytes(5000)]
            s.add_many(data[-1:])
            tree += [rnd.randbytes(300)]
            s.tree_view().add(tree[-1])
        hs_tree = s.tree_view().add_many(tree)  # again: duplicates now
        s.flush()
        assert s.add_new_count == 80 and s.add_count == 120
        dd = s.inner
        frames_of = {
            kind: {dd._index.get(h).payload_offset for h in (hs if kind else hs_tree)}
            for kind, hs in ((1, [dd.hashclass.from_data(b) for b in data]), (0, None))
        }
        assert frames_of[1].isdisjoint(frames_of[0])
        assert len(frames_of[0]) == 1  # 12 KB of tree blocks: one frame
        assert [s[h] for h in hs_tree] == tree


def test_a_bloated_index_is_compacted_at_close_unless_shared(tmp_path):
    from vtstore.stores.index import IndexEntry

    rnd = random.Random(8)
    blocks = [rnd.randbytes(3000) for _ in range(300)]
    path = tmp_path / "d"
    with DataDir(path) as s:
        hs = s.add_many(blocks)
        s.flush()
        # entries that come and go leave free pages the file keeps
        fake = [rnd.randbytes(32) for _ in range(60000)]
        for i in range(0, len(fake), 5000):
            s._index.commit([(d, IndexEntry(1, 0, 0, 0, 0, 0)) for d in fake[i : i + 5000]])
        s._index.commit(delete=fake)
        other = DataDir(path)  # a second handle in this process: no compaction
        other.add(b"x" * 100)
        other.flush()
    mdb = path / "index" / "data.mdb"
    bloated = mdb.stat().st_size
    other.close()  # the last handle, and it wrote: compacts
    compact = mdb.stat().st_size
    assert compact < bloated / 4
    assert not (path / "index" / ".compact").exists()
    with DataDir(path) as s:
        assert s.fsck().ok
        assert len(s) == 301
        assert [s[h] for h in hs] == blocks
        s.add(b"y" * 100)  # and it takes new entries as before
    with DataDir(path) as s:
        assert s[s.hashclass.from_data(b"y" * 100)] == b"y" * 100
