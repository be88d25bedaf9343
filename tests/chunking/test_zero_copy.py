"""The zero-copy path from a file to a store: views, recycled and fresh buffers."""

from __future__ import annotations

import io
import os
import random

import pytest
from vtstore.chunking._cdc import run_bytes

from vtstore.blocks import MAX_LITERAL
from vtstore.buffers import ImmutableBuffer, fresh_buffer, is_immutable
from vtstore.chunking.blockify import blockify
from vtstore.hashes import hashclasses
from vtstore.stores.base import Store
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore


class KeepingStore(MemoryStore):
    """A store that keeps whatever object it is given, as a careless one might:
    blockify must never hand it a view of a buffer it will write again."""

    add_copies = False
    keeps_views = False

    def add_many_reporting(self, datas):
        out = self.hashclass.from_data_many(datas)
        flags = []
        for h, d in zip(out, datas, strict=True):
            flags.append(h not in self._blocks)
            self._blocks.setdefault(h, d)
            self._keys.add(h)
        return out, flags

    def add_many(self, datas):
        return self.add_many_reporting(datas)[0]

    def _get(self, h):
        d = self._blocks.get(h)
        return None if d is None else bytes(d)


def _mixed_data(size: int, seed: int = 5) -> bytes:
    rnd = random.Random(seed)
    parts = []
    n = 0
    while n < size:
        kind = rnd.random()
        k = rnd.randint(1, 300_000)
        if kind < 0.15:
            parts.append(bytes([rnd.randrange(256)]) * k)  # runs become RLE blocks
        elif kind < 0.3:
            parts.append(parts[-1] if parts else b"x" * k)  # repeats: duplicates
        else:
            parts.append(rnd.randbytes(k))
        n += len(parts[-1])
    return b"".join(parts)[:size]


@pytest.mark.parametrize("make", ["memory", "keeping", "datadir"])
def test_streamed_blockify_reads_back_exactly_through_many_buffers(make, tmp_path):
    data = _mixed_data(6 << 20)
    store: Store = {
        "memory": MemoryStore,
        "keeping": KeepingStore,
        "datadir": lambda: DataDir(tmp_path / "dd"),
    }[make]()
    # small buffers: dozens of rounds, so a reused buffer would show
    top = blockify(io.BytesIO(data), store, scanner=None, buffer_size=128 << 10)
    assert top.data(store) == data
    store.close()


def test_memory_store_keeps_views_of_fresh_buffers_not_copies():
    data = os.urandom(3 << 20)
    s = MemoryStore()
    top = blockify(io.BytesIO(data), s, scanner=None)
    kept = list(s._blocks.values())
    assert any(type(v) is memoryview and isinstance(v.obj, ImmutableBuffer) for v in kept)
    assert top.data(s) == data
    assert all(type(s.get(h)) is bytes for h in s._blocks)


def test_memory_store_copies_what_could_change():
    buf = bytearray(os.urandom(1 << 20))
    s = MemoryStore()
    top = blockify(buf, s, scanner=None)
    before = bytes(buf)
    buf[:] = bytes(len(buf))  # the caller reuses its buffer
    assert top.data(s) == before
    h = s.add(memoryview(bytearray(b"y" * 5000)))
    assert type(s._blocks[h]) is bytes


def test_a_mostly_duplicate_batch_is_copied_so_it_pins_no_buffer():
    s = MemoryStore()
    old = [os.urandom(9000) for _ in range(10)]
    s.add_many(old)
    buf = fresh_buffer(10 * 9000 + 9000)
    mv = memoryview(buf)
    for i, b in enumerate(old):
        mv[i * 9000 : (i + 1) * 9000] = b
    mv[90000:99000] = os.urandom(9000)
    views = [mv[i * 9000 : (i + 1) * 9000] for i in range(11)]
    hs, new = s.add_many_reporting(views)
    assert new == [False] * 10 + [True]
    assert type(s._blocks[hs[-1]]) is bytes


def test_is_immutable():
    assert is_immutable(b"x")
    assert is_immutable(memoryview(b"xyz")[1:])
    assert is_immutable(memoryview(fresh_buffer(10))[2:5])
    assert not is_immutable(bytearray(b"x"))
    assert not is_immutable(memoryview(bytearray(b"xyz")))


def _runs_reference(data: bytes, cuts: list[int]):
    out, prev = [], 0
    for c in cuts:
        chunk = data[prev:c]
        out.append(chunk[0] if chunk.count(chunk[0]) == len(chunk) else -1)
        prev = c
    return out if any(r >= 0 for r in out) else None


def test_run_bytes_finds_exactly_the_constant_chunks():
    rnd = random.Random(3)
    for _ in range(300):
        parts = [
            bytes([rnd.randrange(3)]) * rnd.randint(1, 50)
            if rnd.random() < 0.5
            else rnd.randbytes(rnd.randint(1, 50))
            for _ in range(rnd.randint(1, 20))
        ]
        data = b"".join(parts)
        cuts = sorted(set(rnd.sample(range(1, len(data) + 1), min(len(data), 8))))
        if cuts[-1] != len(data):
            cuts.append(len(data))
        base = rnd.randint(0, 1000)
        assert run_bytes(data, base, [c + base for c in cuts], base) == _runs_reference(data, cuts)
    with pytest.raises(ValueError):
        run_bytes(b"abc", 0, [2, 1])
    with pytest.raises(ValueError):
        run_bytes(b"abc", 0, [4])


@pytest.mark.parametrize("H", hashclasses(), ids=lambda h: h.hashname)
def test_from_data_many_agrees_with_from_data(H):
    datas = [
        b"",
        b"a",
        os.urandom(MAX_LITERAL + 1),
        memoryview(os.urandom(70000))[5:],
        bytearray(3),
    ]
    many = H.from_data_many(datas)
    assert many == [H.from_data(d) for d in datas]
    assert all(type(h) is H for h in many)
    assert H.from_data_many([]) == []


def test_datadir_writer_keeps_views_of_immutable_buffers_only(tmp_path):
    """The datadir's writer keeps a view of a buffer that never changes until
    its frame is written (blockify's read buffers: no copy per block), and
    copies a view of one that may change: writing over the bytearray right
    after `add_many` returns changes nothing stored.  A block still in the
    writer reads back as bytes."""
    rnd = random.Random(5)
    store = DataDir(tmp_path / "d")
    size = 20 * 5000  # both batches in one frame (256 KiB)
    fixed = fresh_buffer(size)
    fixed[:] = rnd.randbytes(size)
    mutable = bytearray(rnd.randbytes(size))
    want = bytes(mutable)
    fviews = [memoryview(fixed)[i : i + 5000] for i in range(0, size, 5000)]
    mviews = [memoryview(mutable)[i : i + 5000] for i in range(0, size, 5000)]
    hs = store.add_many(fviews)
    ms = store.add_many(mviews)
    frame = store._writer._building.datas
    assert any(type(d) is memoryview and d.obj is fixed for d in frame)
    assert not any(type(d) is memoryview and d.obj is mutable for d in frame)
    mutable[:] = bytes(size)  # the caller reuses its buffer at once
    got = store.get(ms[3])
    assert type(got) is bytes and got == want[15000:20000]
    store.close()
    store = DataDir(tmp_path / "d")
    assert store.get_many(hs) == [bytes(v) for v in fviews]
    assert store.get_many(ms) == [want[i : i + 5000] for i in range(0, size, 5000)]
    store.close()
