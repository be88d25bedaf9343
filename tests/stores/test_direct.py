"""O_DIRECT appends: the same bytes as buffered writes, no padding at rest,
and a clean fall back to buffered writes."""

from __future__ import annotations

import os
import random

import pytest

from vtstore.stores import direct as D
from vtstore.stores.datadir import DataDir
from vtstore.stores.direct import ALIGN, DirectAppender, DirectUnsupported


def _direct_ok(path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    os.unlink(path)
    return True


@pytest.fixture
def direct_dir(tmp_path, monkeypatch):
    if not _direct_ok(tmp_path / "probe"):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setenv("VT_DIRECT_IO", "1")
    return tmp_path


def test_appends_at_unaligned_ends_give_exactly_the_bytes(direct_dir):
    rnd = random.Random(9)
    p = direct_dir / "f"
    head = rnd.randbytes(1234)  # an existing file whose end is mid-page
    p.write_bytes(head)
    fd = os.open(p, os.O_RDWR)
    a = DirectAppender(str(p), fd, len(head))
    want = bytearray(head)
    for _ in range(60):
        parts = [rnd.randbytes(rnd.randint(0, 9000)) for _ in range(rnd.randint(1, 5))]
        a.write(parts, len(want), sum(map(len, parts)))
        want += b"".join(parts)
        assert os.path.getsize(p) % ALIGN == 0 or not a.padded
    assert os.pread(fd, len(want), 0) == bytes(want)
    assert os.path.getsize(p) >= len(want)
    with pytest.raises(DirectUnsupported):
        a.write([b"x"], len(want) + 1, 1)  # not at the end
    a.close()
    os.close(fd)


def test_datadir_files_end_with_their_last_record_after_flush(direct_dir):
    rnd = random.Random(2)
    blocks = [rnd.randbytes(rnd.randint(100, 20000)) for _ in range(300)]
    with DataDir(direct_dir / "d", frame_size=50_000) as s:
        assert s.add_many(blocks[:150])
        s.flush()
        w = s._writer
        assert w is not None and w._direct is not None  # really used O_DIRECT
        (f,) = (direct_dir / "d" / "data").iterdir()
        assert os.path.getsize(f) == w._offset
        hs = s.add_many(blocks[150:])
        s.flush()
        assert os.path.getsize(f) == w._offset
        assert [s[h] for h in hs] == blocks[150:]
    with DataDir(direct_dir / "d") as s:
        assert s.fsck().ok
        assert len(s) == len(set(blocks))


def test_a_refused_direct_write_falls_back_to_buffered(direct_dir, monkeypatch):
    calls = []
    real = DirectAppender.write

    def flaky(self, parts, offset, size):
        calls.append(offset)
        if len(calls) == 3:
            raise DirectUnsupported(22, "pretend the file system refused")
        return real(self, parts, offset, size)

    monkeypatch.setattr(D.DirectAppender, "write", flaky)
    rnd = random.Random(3)
    blocks = [rnd.randbytes(7000) for _ in range(100)]
    with DataDir(direct_dir / "d", frame_size=30_000) as s:
        hs = s.add_many(blocks)
        s.flush()
        assert s._writer._direct is None
        assert [s[h] for h in hs] == blocks
    assert len(calls) == 3
    with DataDir(direct_dir / "d") as s:
        assert s.fsck().ok
        assert [s[h] for h in hs] == blocks


@pytest.mark.parametrize("value", [None, "0"])
def test_buffered_writes_unless_vt_direct_io_1(tmp_path, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("VT_DIRECT_IO", raising=False)
    else:
        monkeypatch.setenv("VT_DIRECT_IO", value)
    with DataDir(tmp_path / "d") as s:
        h = s.add(b"y" * 5000)
        s.flush()
        assert s._writer._direct is None
        assert s[h] == b"y" * 5000
