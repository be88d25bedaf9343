"""blockify: exact round trips, RLE runs, bounded memory, misbehaving scanners."""

from __future__ import annotations

import io
import itertools
import logging
import mmap
import os
import tracemalloc

import pytest

from vtstore.blocks import IndirectBlock, LiteralBlock, RLEBlock
from vtstore.chunking import ChunkParams, blockify, cut_offsets
from vtstore.chunking.blockify import BlockifyStats, SourceError, chunks_of
from vtstore.chunking.scanners.base import Scanner
from vtstore.errors import VTError
from vtstore.hashes import hashclass_by_name
from vtstore.stores.memory import MemoryStore


def stored_bytes(store) -> int:
    return sum(len(store[h]) for h in store.hashcodes())


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "path", "stream", "raw"])
@pytest.mark.parametrize("threaded", [True, False])
def test_round_trip_every_source_kind(kind, threaded, tmp_path, randbytes):
    data = randbytes(3 << 20, 1) + bytes(200_000) + randbytes(100_000, 2)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    src = {
        "bytes": lambda: data,
        "bytearray": lambda: bytearray(data),
        "memoryview": lambda: memoryview(data),
        "path": lambda: path,
        "stream": lambda: io.BytesIO(data),
        "raw": lambda: open(path, "rb", buffering=0),  # noqa: SIM115
    }[kind]()
    store = MemoryStore()
    stats = BlockifyStats()
    top = blockify(src, store, stats=stats, threaded=threaded, buffer_size=1 << 20)
    assert isinstance(top, IndirectBlock)
    assert top.span == len(data)
    assert top.data(store) == data
    assert stats.length == len(data) and stats.rle >= 1
    # the same cuts as the chunker on the whole data, runs merged
    cuts = cut_offsets(data)
    assert stats.stored + stats.rle + stats.literal <= len(cuts)
    if hasattr(src, "close"):
        src.close()


def test_mmap_source(tmp_path, randbytes):
    data = randbytes(1 << 20, 3)
    p = tmp_path / "m"
    p.write_bytes(data)
    store = MemoryStore()
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert blockify(m, store).data(store) == data


def test_same_top_block_whatever_the_buffering(randbytes):
    data = randbytes(2 << 20, 4)
    tops = set()
    for bs in (4096, 65536 + 17, 1 << 20, 8 << 20):
        for threaded in (True, False):
            store = MemoryStore()
            tops.add(blockify(io.BytesIO(data), store, buffer_size=bs, threaded=threaded))
    tops.add(blockify(data, MemoryStore()))
    assert len(tops) == 1


def test_small_inputs():
    store = MemoryStore()
    assert blockify(b"", store) == LiteralBlock(b"")
    assert blockify(b"abc", store) == LiteralBlock(b"abc")
    assert blockify(b"\0" * 33, store) == RLEBlock(33, 0)
    assert blockify(b"\7" * 10, store) == LiteralBlock(b"\7" * 10)
    top = blockify(b"x" * 32 + b"y", store)
    assert top.data(store) == b"x" * 32 + b"y"
    assert len(store) == 1


def test_long_runs_cost_no_storage(randbytes):
    store = MemoryStore()
    head, tail = randbytes(50_000, 5), randbytes(50_000, 6)
    data = head + b"\xaa" * (64 << 20) + tail
    stats = BlockifyStats()
    top = blockify(data, store, stats=stats)
    assert top.data(store)[:100] == data[:100]
    assert top.span == len(data)
    assert stats.rle == 1
    # only the data around the run is stored (two chunks may straddle its ends)
    assert stored_bytes(store) < len(head) + len(tail) + 4 * 65536 + 65536


def test_a_gigabyte_of_zeros_streams_in_bounded_memory():
    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def readinto(self, b):
            k = min(len(b), self.left)
            b[:k] = bytes(k)
            self.left -= k
            return k

    store = MemoryStore()
    tracemalloc.start()
    try:
        top = blockify(Zeros(1 << 30), store, scanner=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert top == RLEBlock(1 << 30, 0)
    assert len(store) == 0
    assert peak < 64 << 20, peak


def test_hash_class_of_the_store_is_used(randbytes):
    store = MemoryStore(hashclass=hashclass_by_name("sha256"))
    top = blockify(randbytes(100_000, 7), store)
    assert top.hashcode.hashname == "sha256"


def test_params_change_the_blocks(randbytes):
    data = randbytes(1 << 20, 8)
    a, b = MemoryStore(), MemoryStore()
    blockify(data, a)
    blockify(data, b, ChunkParams(1024, 4096, 16384))
    assert len(b) > 1.5 * len(a)


def test_missing_file_is_a_vt_error(tmp_path):
    with pytest.raises(SourceError, match="no such file") as e:
        blockify(tmp_path / "nope", MemoryStore())
    assert isinstance(e.value, VTError)
    with pytest.raises(SourceError, match="directory"):
        blockify(tmp_path, MemoryStore())
    with pytest.raises(TypeError):
        blockify(12, MemoryStore())
    with pytest.raises(VTError, match="unknown scanner"):
        blockify(b"x" * 100, MemoryStore(), scanner="nope")


def test_store_errors_stop_the_cutter_thread(randbytes):
    class Full(MemoryStore):
        def add_many(self, datas):
            if len(self) > 50:
                raise OSError("disk full")
            return super().add_many(datas)

    import threading

    before = threading.active_count()
    with pytest.raises(OSError, match="disk full") as e:
        blockify(randbytes(8 << 20, 9), Full(), buffer_size=1 << 18)
    # stopped while the error is still being handled, not when it is collected
    assert e.value is not None
    assert threading.active_count() == before
    assert not [t for t in threading.enumerate() if t.name == "vt-cutter"]


# -- misbehaving scanners ----------------------------------------------------------


class Raises(Scanner):
    name = "raises"

    def __init__(self, params=None, when=2):
        super().__init__()
        self.calls = 0
        self.when = when

    def feed(self, buf):
        self.calls += 1
        if self.calls == self.when:
            raise RuntimeError("boom")
        return [self.calls * 100_000]


class Backwards(Scanner):
    name = "backwards"
    n = 0

    def feed(self, buf):
        self.n += 1
        return [500_000, 400_000] if self.n == 1 else [10**6 * self.n]


class Behind(Scanner):
    name = "behind"
    fed = 0

    def feed(self, buf):
        self.fed += len(buf)
        return [self.fed - 900_000] if self.fed > 1_000_000 else []


class BeyondEnd(Scanner):
    name = "beyond"

    def feed(self, buf):
        return []

    def finish(self):
        return [10**12]


class NotInts(Scanner):
    name = "notints"

    def feed(self, buf):
        return [1.5]


class Generator(Scanner):
    name = "generator"

    def feed(self, buf):
        yield 1000
        raise ValueError("half way")


class Dense(Scanner):
    """Valid but extreme: a boundary every 10 bytes."""

    name = "dense"
    pos = 0

    def feed(self, buf):
        start, self.pos = self.pos, self.pos + len(buf)
        return list(range(start - start % 10 + 10, self.pos, 10))


class BadFactory(Scanner):
    name = "badfactory"

    def __init__(self, params=None):
        raise RuntimeError("cannot start")


@pytest.mark.parametrize(
    "cls", [Raises, Backwards, Behind, BeyondEnd, NotInts, Generator, BadFactory]
)
def test_misbehaving_scanner_is_logged_once_and_ignored(cls, caplog, randbytes):
    data = randbytes(3 << 20, 10)
    store = MemoryStore()
    stats = BlockifyStats()
    with caplog.at_level(logging.WARNING, logger="vtstore.chunking"):
        top = blockify(data, store, scanner=cls, stats=stats, buffer_size=256 << 10)
    assert top.data(store) == data
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    if cls is not BadFactory:
        assert stats.scanner_failed
    # the rolling hash carried on: cuts stay within min..max
    sizes = [len(c) for c in chunks_of(data, scanner=cls, buffer_size=256 << 10)]
    assert b"".join(chunks_of(data, scanner=cls)) == data
    assert max(sizes) <= 65536 and min(sizes[:-1]) >= 64


def test_dense_scanner_still_gives_exact_output(randbytes):
    data = randbytes(1 << 20, 11)
    store = MemoryStore()
    stats = BlockifyStats()
    top = blockify(data, store, scanner=Dense, stats=stats, buffer_size=100_000)
    assert top.data(store) == data
    assert stats.scanner_failed is None
    ends = list(itertools.accumulate(len(c) for c in chunks_of(data, scanner=Dense)))
    sizes = [b - a for a, b in zip([0, *ends], ends, strict=False)]
    # merged into blocks of at least the minimum, nearly all ending at a
    # boundary (a hash cut can come first: about one block in 200)
    assert min(sizes[:-1]) >= 2048
    assert sum(e % 10 == 0 for e in ends[:-1]) > 0.97 * (len(ends) - 1)


def test_scanner_output_independent_of_buffering(tmp_path, formats):
    path = tmp_path / "x.mbox"
    formats.build_mbox(path, 60)
    data = path.read_bytes()
    want = [len(c) for c in chunks_of(path)]
    for bs in (1000, 4097, 65536, 1 << 20):
        assert [len(c) for c in chunks_of(io.BytesIO(data), name="x.mbox", buffer_size=bs)] == want
    assert b"".join(chunks_of(path)) == data


def test_sniffing_a_stream_keeps_its_bytes(formats, tmp_path):
    path = tmp_path / "noname"
    formats.build_mbox(path, 10)
    data = path.read_bytes()

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buf):
            return self.b.readinto(buf)

    stats = BlockifyStats()
    store = MemoryStore()
    assert blockify(Pipe(), store, stats=stats).data(store) == data
    assert stats.scanner == "mbox"
    assert os.path.exists(path)
