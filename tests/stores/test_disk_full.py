"""A datadir on a 2 MiB tmpfs: a full disk is a clear StoreError, and the store
opens afterwards with everything flushed before intact."""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from vtstore.errors import StoreError
from vtstore.stores.datadir import DataDir


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize(
    "frame_size,tiny",
    [(4096, False), (256 * 1024, False), (256 * 1024, True)],
    ids=["small-frames", "big-frames", "index-fills-first"],
)
def test_full_disk(small_fs, leftovers, frame_size, tiny):
    rnd = random.Random(frame_size + tiny)
    path = small_fs / "dd"
    # a filler file to free afterwards
    (small_fs / "filler").write_bytes(b"\0" * 256 * 1024)
    s = DataDir(path, frame_size=frame_size)
    flushed, pending = [], []
    with pytest.raises(StoreError) as ei:
        for i in range(200000 if tiny else 2000):
            # incompressible blocks fill the data file; tiny ones the index
            b = i.to_bytes(4, "big") if tiny else rnd.randbytes(4000 + i % 2000)
            s.add(b)
            pending.append(b)
            if i % (1000 if tiny else 10) == 9:
                s.flush()
                flushed += pending
                pending = []
    msg = str(ei.value)
    assert "No space left on device" in msg or "MDB_MAP_FULL" in msg or "space" in msg, msg
    assert str(path) in msg
    assert flushed, "the disk filled before the first flush"
    # the broken store refuses further writes clearly, and closes
    with pytest.raises(StoreError):
        s.add(b"more")
    with pytest.raises(StoreError):
        s.close()
    assert s.closed
    # still full: it opens and reads back everything flushed
    with DataDir(path, readonly=True) as r:
        for b in flushed:
            assert r[r.hashclass.from_data(b)] == b
        rep = r.fsck()
        assert rep.ok, rep.lines()
    # with room again, writing carries on
    (small_fs / "filler").unlink()
    with DataDir(path) as w:
        h = w.add(b"room again")
        w.flush()
        assert w[h] == b"room again"
        assert all(w[w.hashclass.from_data(b)] == b for b in flushed)
        assert w.fsck().ok
    leftovers.check()
    assert os.listdir(path / "data")
