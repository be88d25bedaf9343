"""The zstd frames of a `DataDir.get_many` batch are decoded on two threads
(`readcache.FrameDecoder`): same bytes in the same order, a damaged frame on
either thread named exactly as reading one block at a time names it, and the
worker thread stopped with the store."""

from __future__ import annotations

import threading

import pytest
from tests.stores.test_corruption import flip
from tests.stores.test_get_many import text_block

from vtstore.errors import CorruptBlockError
from vtstore.hashes import Hash_BLAKE3
from vtstore.stores.datadir import DataDir
from vtstore.stores.readcache import FrameDecoder


def _decoders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vt-frame-decode")]


@pytest.fixture
def texts(tmp_path):
    """A datadir of 3,000 compressible blocks: dozens of zstd frames."""
    path = tmp_path / "dd"
    blocks = [text_block(i) for i in range(3000)]
    with DataDir(path, data_file_size=8 << 20) as s:
        hs = s.add_many(blocks)
    return path, hs, blocks


def frames_of(s: DataDir, hs: list) -> list[list[int]]:
    """The indexes into `hs` of each zstd frame's blocks, frames in file order."""
    by: dict = {}
    for i, e in enumerate(s._index.get_many(hs)):
        assert e.flags & 3 == 1, "every block of text is in a zstd frame"
        by.setdefault((e.filenum, e.payload_offset), []).append(i)
    return [by[k] for k in sorted(by)]


def test_a_batch_of_frames_is_decoded_on_two_threads(texts, leftovers):
    path, hs, blocks = texts
    with DataDir(path, readonly=True) as s:
        s._decoder = FrameDecoder(2)  # the default is 1 (readcache.DECODE_THREADS)
        assert len(frames_of(s, hs)) >= 8
        assert not _decoders()
        want = hs[::-1] + hs[:500]
        assert s.get_many(want) == blocks[::-1] + blocks[:500]
        assert len(_decoders()) == 1  # the worker took part, and only one was started
        s._frames.clear()
        assert s.get_many(hs) == blocks
        assert len(_decoders()) == 1
    leftovers.check()  # closing the store stopped it


@pytest.mark.parametrize("damaged", [(0,), (1,), (0, 1), (1, 2, 3)])
def test_a_damaged_frame_on_either_thread_is_named_as_one_read_names_it(texts, damaged):
    path, hs, blocks = texts
    with DataDir(path, readonly=True) as s:
        frames = frames_of(s, hs)
        mid = len(frames) // 2
        # consecutive frames of a batch go to the two threads in turn
        bad_frames = [frames[mid + k] for k in damaged]
        for fr in bad_frames:
            e = s._index.get(hs[fr[0]])
            file = str(s.data_file_path(s._index.files()[e.filenum]))
            flip(file, e.payload_offset + e.payload_length // 2)
    window = [hs[i] for fr in frames[mid - 3 : mid + 6] for i in fr]
    with DataDir(path, readonly=True) as s:
        s._decoder = FrameDecoder(2)
        one_by_one = []
        for h in window:
            try:
                s[h]
            except CorruptBlockError:
                one_by_one.append(h)
        assert one_by_one, "the flips damaged something"
        s._frames.clear()
        with pytest.raises(CorruptBlockError) as ei:
            s.get_many(window)
        assert ei.value.hashcode == one_by_one[0]
        # every other block still reads, and right
        good = [h for h in window if h not in set(one_by_one)]
        got = s.get_many(good)
        assert got == [blocks[hs.index(h)] for h in good]
        assert all(Hash_BLAKE3.from_data(d) == h for d, h in zip(got, good, strict=True))


def test_decoder_after_close_decodes_in_the_calling_thread():
    import zstandard

    from vtstore.stores.vtd import ENC_ZSTD

    datas = [text_block(i) * 20 for i in range(12)]
    stored = [zstandard.ZstdCompressor().compress(d) for d in datas]
    frames = [(ENC_ZSTD, x) for x in stored]
    frames[5] = (ENC_ZSTD, stored[5][:-9] + b"\xff" * 9)  # does not decode
    dec = FrameDecoder()
    want = datas[:5] + [None] + datas[6:]
    try:
        assert dec.decode(frames) == want
        assert len(_decoders()) == 1
    finally:
        dec.close()
    assert not _decoders()
    assert dec.decode(frames) == want  # closed: serially, no new thread
    assert not _decoders()
    assert FrameDecoder(threads=1).decode(frames[:6]) == want[:6]
    assert not _decoders()
