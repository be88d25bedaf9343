"""The datadir's record writer, on both of its paths: plain frames appended by
the native `Appender` thread (frames that may compress through the Python
writer thread first), and everything through the Python writer thread when
the extension is not built."""

from __future__ import annotations

import random

import pytest

from vtstore.stores import vtdio, writer
from vtstore.stores.datadir import DataDir
from vtstore.stores.vtd import ENC_PLAIN, ENC_ZSTD, TYPE_BLOCKS, FrameEncoder

PATHS = ["native", "python"] if vtdio.Appender is not None else ["python"]


@pytest.fixture(params=PATHS)
def path_kind(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(writer, "Appender", None)
    return request.param


def _mixed_blocks(seed: int, n: int) -> list[bytes]:
    """Runs of random blocks (long enough for the encoder to stop trying to
    compress) and of text, so both paths of a writer are taken."""
    rnd = random.Random(seed)
    out = []
    text = b"".join(b"line %d of some text that compresses well\n" % i for i in range(400))
    for run in range(6):
        for i in range(n):
            if run % 2 == 0:
                out.append(rnd.randbytes(rnd.choice((100, 5000, 8192))))
            else:
                out.append(text[: rnd.randrange(1000, 8000)] + b"%d.%d" % (run, i))
    return out


def test_roundtrip_both_paths(tmp_path, path_kind, leftovers):
    blocks = _mixed_blocks(1, 600)
    with DataDir(tmp_path / "dd", frame_size=64 * 1024) as s:
        hs = [s.add(b) for b in blocks[: len(blocks) // 2]]
        hs += s.add_many(blocks[len(blocks) // 2 :])
        # readable before and after the flush
        assert all(s[h] == b for h, b in zip(hs[::37], blocks[::37], strict=True))
        s.flush()
        assert (s._writer._app is not None) == (path_kind == "native")
    with DataDir(tmp_path / "dd") as s:
        assert [s[h] for h in hs] == blocks
        info = s.info()
        assert info["blocks"] == len(set(hs))
        assert info["bytes_stored"] == sum(len(b) for b in set(blocks))
        report = s.fsck()
        assert report.ok, report
    leftovers.check()


def test_pending_blocks_found_at_every_stage(tmp_path, path_kind):
    """A block is found while its frame is built, queued, written and committed."""
    rnd = random.Random(2)
    with DataDir(tmp_path / "dd", frame_size=16 * 1024) as s:
        seen = []
        for _ in range(400):
            b = rnd.randbytes(3000)
            seen.append((s.add(b), b))
            h, d = seen[rnd.randrange(len(seen))]
            assert s[h] == d and h in s
        s.flush()
        assert all(s[h] == d for h, d in seen)
        assert len(s) == len(seen)


def test_counters_when_another_store_committed_the_same_blocks(tmp_path):
    """Two stores of one datadir add the same blocks: the second's commit
    finds them present (its one-call insert falls back to one put per entry)
    and the counters still count each block once."""
    rnd = random.Random(3)
    blocks = [rnd.randbytes(2000) for _ in range(300)]
    p = tmp_path / "dd"
    a = DataDir(p)
    b = DataDir(p)
    a.add_many(blocks[:200])
    b.add_many(blocks[100:])  # before a commits, so b stores 100..199 again
    a.flush()
    b.flush()
    a.close()
    b.close()
    with DataDir(p) as s:
        info = s.info()
        assert info["blocks"] == 300
        assert info["bytes_stored"] == 300 * 2000
        assert all(s[h] == d for h, d in zip(s.add_many(blocks), blocks, strict=True))


@pytest.mark.skipif(vtdio.sample_entropy is None, reason="needs the native extension")
def test_encoder_skips_random_frames_by_entropy():
    """After 4 incompressible frames, random ones are not tried at all
    (`skip`), while a frame that compresses is tried at once, even mixed."""
    enc = FrameEncoder()
    rnd = random.Random(4)
    size = 256 * 1024

    def rand():
        return [rnd.randbytes(8192) for _ in range(32)]

    for _ in range(4):
        assert not enc.skip(rand(), size)
        assert enc.prepare(rand(), size)[0] == TYPE_BLOCKS | ENC_PLAIN
    assert all(enc.skip(rand(), size) for _ in range(20))
    # half random, half text in every block: tried, and it compresses
    mixed = [rnd.randbytes(4096) + b"compressible " * 300 for _ in range(32)]
    assert not enc.skip(mixed, size)
    assert enc.prepare(mixed, size)[0] == TYPE_BLOCKS | ENC_ZSTD
    assert not enc.skip(rand(), size)  # the run starts again
    # a small frame is always tried; no compression, always skipped
    assert not FrameEncoder().skip(rand(), 1000)
    assert FrameEncoder(compress=False).skip(mixed, size)


def test_blocks_in_memory_stay_bounded(tmp_path, path_kind):
    """Without a flush, only a few frames' blocks are held at any time, whether
    the frames compress (the compressing thread's way) or not: written frames
    give their blocks up (a 1 GiB pack once held them all until the end)."""
    rnd = random.Random(6)
    text = b"".join(b"%d some text that compresses\n" % i for i in range(300))
    with DataDir(tmp_path / "dd", frame_size=64 * 1024) as s:
        most = 0
        for i in range(3000):  # ~24 MiB in 64 KiB frames
            if (i // 400) % 2:
                b = rnd.randbytes(8000)
            else:
                b = text[: rnd.randrange(4000, 8000)] + b"%d" % i
            s.add(b)
            w = s._writer
            with w._lock:
                held = sum(1 for fr in (*w._queued, *w._written) if fr.datas is not None)
            most = max(most, held)
        assert most <= 8, most
        s.flush()
        assert not s._writer._queued and not s._writer._written
