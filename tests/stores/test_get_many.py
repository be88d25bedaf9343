"""`DataDir.get_many`: the batched read path (`readcache.read_many`, the
`_vtdread` extension) gives exactly what reading one block at a time gives,
names the damaged block, and holds bounded memory."""

from __future__ import annotations

import os
import random
import tracemalloc

import pytest
from tests.stores.test_corruption import flip

from vtstore.errors import CorruptBlockError, MissingBlockError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA256
from vtstore.stores import _vtdread
from vtstore.stores.datadir import DataDir
from vtstore.stores.index import IndexEntry


def text_block(i: int) -> bytes:
    return (b"%06d: the quick brown fox jumps over the lazy dog\n" % i) * (20 + i % 150)


def mixed_blocks(n: int, seed: int = 1) -> list[bytes]:
    """Half incompressible (plain records), half text (zstd frames), interleaved
    in runs so that both kinds of record sit side by side in the data files."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if (i // 37) % 2:
            out.append(text_block(i))
        else:
            out.append(rnd.randbytes(rnd.randrange(100, 20000)))
    return out


def where(store: DataDir, h) -> tuple[IndexEntry, str]:
    e = store._index.get(h)
    return e, str(store.data_file_path(store._index.files()[e.filenum]))


@pytest.fixture
def filled(tmp_path):
    """A datadir of 6,000 mixed blocks over several data files."""
    path = tmp_path / "dd"
    blocks = mixed_blocks(6000)
    with DataDir(path, data_file_size=8 << 20) as s:
        hs = s.add_many(blocks)
    return path, hs, blocks


def test_get_many_is_get_on_a_big_mixed_batch(filled):
    path, hs, blocks = filled
    rnd = random.Random(2)
    with DataDir(path, readonly=True) as s:
        assert len(s._index.files()) >= 4
        flags = {e.flags & 3 for e in s._index.get_many(hs)}
        assert flags == {0, 1}  # plain and zstd records both
        want = hs + hs[:300] + hs[100:200]  # duplicates, in and across batches
        rnd.shuffle(want)
        got = s.get_many(want)
        assert got == [s[h] for h in want]
        assert got == [blocks[hs.index(h)] for h in want[:500]] + got[500:]
        assert s.get_many(iter(hs[:10])) == blocks[:10]
        assert s.get_many([]) == []


def test_get_many_serves_blocks_still_in_the_open_writer(filled):
    path, hs, blocks = filled
    with DataDir(path) as s:
        new = mixed_blocks(500, seed=9)
        hn = s.add_many(new)  # some still pending in the writer, not committed
        want = hn + hs[:1000] + hn[::-1]
        assert s.get_many(want) == new + blocks[:1000] + new[::-1]
        s.flush()
        assert s.get_many(want) == new + blocks[:1000] + new[::-1]
    with DataDir(path, readonly=True) as s:  # after reopening
        assert s.get_many(want) == new + blocks[:1000] + new[::-1]


def test_index_get_many(filled):
    path, hs, _ = filled
    with DataDir(path, readonly=True) as s:
        absent = Hash_BLAKE3.from_data(b"not stored")
        got = s._index.get_many([hs[3], absent, hs[4000]])
        assert got == [s._index.get(hs[3]), None, s._index.get(hs[4000])]


@pytest.mark.parametrize("kind", ["plain", "zstd"])
def test_a_flipped_byte_names_its_block(filled, kind):
    path, hs, blocks = filled
    plain = kind == "plain"
    with DataDir(path, readonly=True) as s:
        kinds = [(e.flags & 3 == 0) == plain for e in s._index.get_many(hs)]
        v = next(i for i in range(200, len(hs)) if kinds[i])
        e, file = where(s, hs[v])
    victim = hs[v]
    window = hs[v - 150 : v + 150]
    # a byte inside the block's data (plain) or the middle of its frame (zstd)
    at = e.data_offset + e.data_length // 2 if plain else e.payload_length // 2
    flip(file, e.payload_offset + at)
    with DataDir(path, readonly=True) as s:
        with pytest.raises(CorruptBlockError) as ei:
            s.get_many(window)
        named = ei.value.hashcode
        if plain:
            assert named == victim
        else:  # a zstd frame holds several blocks: the first damaged one asked for
            assert named in window and window.index(named) <= window.index(victim)
        assert _damaged(s, named)
        # what is intact still reads, and only valid data is ever returned
        others = [h for h in window if h != victim]
        bad = {h for h in others if _damaged(s, h)}
        good = [h for h in others if h not in bad]
        assert s.get_many(good) == [blocks[hs.index(h)] for h in good]
        for h in good:
            assert Hash_BLAKE3.from_data(s.get_many([h])[0]) == h


def _damaged(s, h) -> bool:
    try:
        s[h]
    except CorruptBlockError:
        return True
    return False


def test_a_missing_block_raises_the_first_missing(filled):
    path, hs, _ = filled
    a = Hash_BLAKE3.from_data(b"absent one")
    b = Hash_BLAKE3.from_data(b"absent two")
    with DataDir(path, readonly=True) as s:
        with pytest.raises(MissingBlockError) as ei:
            s.get_many(hs[:700] + [a] + hs[700:900] + [b])
        assert ei.value.args[0] == a or str(a) in str(ei.value)


def test_a_truncated_data_file(tmp_path):
    path = tmp_path / "dd"
    rnd = random.Random(5)
    blocks = [rnd.randbytes(8192) for _ in range(2000)]
    with DataDir(path) as s:
        hs = s.add_many(blocks)
    with DataDir(path, readonly=True) as s:
        e, file = where(s, hs[1500])
    # cut the file in the middle of block 1500's record
    os.truncate(file, e.payload_offset + e.data_offset + 100)
    with DataDir(path, readonly=True) as s:
        assert s.get_many(hs[:1000]) == blocks[:1000]
        with pytest.raises(CorruptBlockError, match="truncated"):
            s.get_many(hs[1000:1600])


def test_records_follow_the_order_added(tmp_path):
    """Frames that went to the compressing thread are not overtaken by plain
    frames sent straight to the appender: blocks added in order lie in the
    data file in order (a restore then reads it forwards)."""
    rnd = random.Random(9)
    text = b"".join(b"line %d of a compressible block\n" % i for i in range(300))
    for trial in range(4):
        path = tmp_path / f"dd{trial}"
        blocks = [rnd.randbytes(8192) for _ in range(600)]
        blocks[100:130] = [text[:8000] + b"%d" % i for i in range(30)]
        with DataDir(path) as s:
            hs = s.add_many(blocks)
        with DataDir(path, readonly=True) as s:
            pos = [(e.filenum, e.payload_offset) for e, _ in (where(s, h) for h in hs)]
        assert pos == sorted(pos)


def test_other_hash_classes_are_checked_too(tmp_path):
    path = tmp_path / "dd"
    blocks = mixed_blocks(800, seed=3)
    with DataDir(path, hashclass=Hash_SHA256) as s:
        hs = s.add_many(blocks)
    with DataDir(path, readonly=True) as s:
        assert s.get_many(hs[::-1]) == blocks[::-1]
        e, file = where(s, hs[0])  # the first run is incompressible: a plain record
        assert e.flags & 3 == 0
    flip(file, e.payload_offset + e.data_offset)
    with DataDir(path, readonly=True) as s, pytest.raises(CorruptBlockError):
        s.get_many(hs[:10])


def test_memory_bounded_on_a_huge_request(tmp_path):
    """200,000 requests of one 256 KiB block and a whole data file's worth of
    others: a copy per request would be 50 GB; what get_many holds beyond
    its result stays at a few batches."""
    path = tmp_path / "dd"
    rnd = random.Random(7)
    big = rnd.randbytes(256 * 1024)
    others = [rnd.randbytes(16384) for _ in range(2000)]
    with DataDir(path) as s:
        hb = s.add(big)
        ho = s.add_many(others)
        assert hb not in ho
    with DataDir(path, readonly=True) as s:
        tracemalloc.start()
        try:
            got = s.get_many([hb] * 200_000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(got) == 200_000 and got[0] == big and got[-1] == big
        assert peak < 120 << 20, peak
        del got
        tracemalloc.start()
        try:
            got = s.get_many(ho)
            cur, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got == others
        # the result is 32 MB; reading it holds at most about one more batch
        assert peak - cur < 24 << 20, (peak, cur)


def test_vtdread_refuses_malformed_input():
    with pytest.raises(ValueError):
        _vtdread.decode_entries([b"\x80\x01"])
    with pytest.raises(ValueError):
        _vtdread.decode_entries([b"\x01\x02\x03"])
    packed, files = _vtdread.decode_entries([None, IndexEntry(3, 0, 10, 5, 0, 5).encode()])
    assert files == [3]
    assert _vtdread.read_entries(packed, {}) == [None, None]
    with pytest.raises(ValueError):
        _vtdread.read_entries(packed[:-1], {})
    with pytest.raises(ValueError):
        _vtdread.read_entries(packed, {}, digests=b"x")
    # an entry out of bounds is an error code, never a huge read
    huge, _ = _vtdread.decode_entries([IndexEntry(0, 0, 10, 5, 0, 1 << 40).encode()])
    assert _vtdread.read_entries(huge, {0: 0}) == [1]
    assert (
        _vtdread.check_blake3(Hash_BLAKE3.from_data(b"ab") + bytes(32), [b"ab", b"ab"]) == b"\1\0"
    )


# -- readers: Block.chunks reads stored leaves in batches --------------------------------


def test_joined_chunks_of_plain_leaves_read_natively(tmp_path):
    """Incompressible leaves come through `DataDir.read_joined` (one buffer a
    batch): any range, partial first and last leaves included, reads right."""
    from vtstore.blocks import block_for

    rnd = random.Random(12)
    data = rnd.randbytes(6 << 20)
    with DataDir(tmp_path / "dd") as s:
        top = block_for(data, s, max_block_size=8192)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        calls = []
        real = s.read_joined
        s.read_joined = lambda hs, lengths=False: calls.append(len(hs)) or real(hs, lengths)
        assert b"".join(top.chunks(s, joined=True)) == data
        assert calls and max(calls) > 100
        for _ in range(20):
            a = rnd.randrange(len(data))
            b = min(len(data), a + rnd.randrange(1, 3 << 20))
            assert b"".join(top.chunks(s, a, b, joined=True)) == data[a:b]


def test_chunks_read_in_batches_give_the_same_bytes(tmp_path):
    from vtstore.blocks import block_for

    rnd = random.Random(11)
    data = b"".join(rnd.randbytes(4096) + text_block(i)[:4096] for i in range(1200))
    with DataDir(tmp_path / "dd") as s:
        top = block_for(data, s, max_block_size=8192)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        assert b"".join(top.chunks(s)) == data
        joined = list(top.chunks(s, joined=True))  # a piece per batch read
        assert b"".join(joined) == data and len(joined) < 12
        assert b"".join(top.chunks(s, 100, 3 << 20, joined=True)) == data[100 : 3 << 20]
        for a, b in ((0, 1), (5000, 5000 + 3 * 8192 + 17), (len(data) - 10, len(data) + 5)):
            assert top.read(s, a, b) == data[a:b]
        leaves = list(top.leaves(s))
        e, file = where(s, leaves[700].hashcode)
    flip(file, e.payload_offset + (e.data_offset if e.flags & 3 == 0 else e.payload_length // 2))
    with DataDir(tmp_path / "dd", readonly=True) as s:
        got = []
        with pytest.raises(CorruptBlockError):
            for c in top.chunks(s):
                got.append(c)
        # everything before the damaged leaf's frame still came out, in order
        out = b"".join(got)
        assert len(out) >= 690 * 8192 and data.startswith(out)


def test_fast_ref_decoding_is_the_general_decoder():
    from vtstore.blocks import (
        HashCodeBlock,
        IndirectBlock,
        RLEBlock,
        _decode_hash_refs,
        decode_blockrefs,
    )
    from vtstore.errors import FormatError
    from vtstore.hashes import Hash_SHA1

    rnd = random.Random(3)
    refs = []
    for i in range(3000):
        hc = rnd.choice([Hash_BLAKE3, Hash_SHA1, Hash_SHA256])
        span = rnd.choice([0, 1, 127, 128, 16384, 2**40, 2**64 - 1, rnd.randrange(2**30)])
        refs.append((IndirectBlock if i % 9 == 0 else HashCodeBlock)(hc.from_data(b"%d" % i), span))
    data = b"".join(r.encode() for r in refs)
    assert _decode_hash_refs(data) == tuple(decode_blockrefs(data)) == tuple(refs)
    assert _decode_hash_refs(data + RLEBlock(5, 1).encode()) is None
    # a span of 2**64 in ten varint octets is the general decoder's error, not a ref
    body = b"\0" + b"\x82" + b"\x80" * 8 + b"\x00" + b"\x02" + bytes(32)
    over = bytes([len(body)]) + body
    assert _decode_hash_refs(over) is None
    with pytest.raises(FormatError):
        tuple(decode_blockrefs(over))
    # whatever the fast path accepts, the general decoder reads the same
    for _ in range(3000):
        b = bytearray(data[:300])
        for _ in range(rnd.randrange(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        b = bytes(b[: rnd.randrange(1, len(b) + 1)])
        fast = _decode_hash_refs(b)
        if fast is not None:
            assert fast == tuple(decode_blockrefs(b))
