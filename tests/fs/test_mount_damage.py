"""A real mount of a really damaged datadir: reads go on past bad blocks.

A leaf of one file is missing, a leaf of another is corrupt (a flipped byte in
its record), the block of one directory is missing.  Reads that touch a bad
range are EIO, everything else reads right, the mount stays up, and each
failure is logged once with its path and hashcode.
"""

from __future__ import annotations

import errno
import os
import random

import pytest

from vtstore.archive import Archive
from vtstore.blocks import HashCodeBlock
from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import resolve

from .conftest import needs_fuse, vt

pytestmark = needs_fuse

MiB = 1024 * 1024


def flip(file, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def leaf_at(block, store, offset: int):
    """`(leaf, start, end)` of the leaf holding `offset` of `block`'s content."""
    pos = 0
    for leaf in block.leaves(store):
        if pos <= offset < pos + leaf.span:
            return leaf, pos, pos + leaf.span
        pos += leaf.span
    raise AssertionError("offset beyond the content")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A packed tree copied into a second datadir without two blocks, one corrupted."""
    tmp = tmp_path_factory.mktemp("damaged")
    rnd = random.Random(12)
    src = tmp / "src"
    (src / "lost").mkdir(parents=True)
    (src / "ok").mkdir()
    big = rnd.randbytes(12 * MiB)
    bad = rnd.randbytes(6 * MiB)
    (src / "big.bin").write_bytes(big)
    (src / "bad.bin").write_bytes(bad)
    (src / "small.txt").write_text("small and fine\n")
    for i in range(60):
        (src / "lost" / f"file-{i:03d}").write_text(f"in lost {i}\n")
        (src / "ok" / f"file-{i:03d}").write_text(f"in ok {i}\n")
    os.link(src / "lost" / "file-000", src / "ok" / "zz-link")  # its file is in lost/
    full = tmp / "full"
    archive = str(tmp / "tree.vt")
    vt("-S", str(full), "pack", "-a", archive, str(src))
    with DataDir(full, readonly=True) as s:
        top = Archive(archive).last().dirent
        big_leaf = leaf_at(resolve(top, "big.bin", s).block, s, 6 * MiB)
        bad_leaf = leaf_at(resolve(top, "bad.bin", s).block, s, 3 * MiB)
        lost_block = resolve(top, "lost", s).block
        assert isinstance(lost_block, HashCodeBlock)
        drop = {big_leaf[0].hashcode, lost_block.hashcode}
        blocks = [(h, s[h]) for h in s.hashcodes() if h not in drop]
    store = tmp / "store"
    with DataDir(store) as d:
        for h, data in blocks:
            assert d.add(data) == h
    with DataDir(store, readonly=True) as d:
        e = d._index.get(bad_leaf[0].hashcode)
        path = d.data_file_path(d._index.files()[e.filenum])
    flip(path, e.payload_offset + e.data_offset + 100)
    return {
        "store": str(store),
        "archive": archive,
        "big": big,
        "bad": bad,
        "big_leaf": big_leaf,
        "bad_leaf": bad_leaf,
        "lost": lost_block.hashcode,
    }


def pread(path: str, offset: int, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, offset)
    finally:
        os.close(fd)


def errno_of(fn, *a) -> int:
    try:
        fn(*a)
    except OSError as e:
        return e.errno
    return 0


def test_reads_go_on_past_bad_blocks(damaged, mounts, tmp_path):
    mnt = str(tmp_path / "mnt")
    m = mounts(damaged["store"], damaged["archive"], mnt, "-r")
    big, bad = damaged["big"], damaged["bad"]
    _, bs, be = damaged["big_leaf"]
    _, cs, ce = damaged["bad_leaf"]
    for _ in range(3):  # again and again: still EIO, still one log line
        # the ranges around the bad leaves read right ...
        assert pread(f"{mnt}/big.bin", 0, 64 * 1024) == big[: 64 * 1024]
        assert pread(f"{mnt}/big.bin", be + 4096, MiB) == big[be + 4096 : be + 4096 + MiB]
        assert pread(f"{mnt}/big.bin", 11 * MiB, MiB) == big[11 * MiB :]
        assert pread(f"{mnt}/bad.bin", 0, MiB) == bad[:MiB]
        assert pread(f"{mnt}/bad.bin", ce + 4096, 8192) == bad[ce + 4096 : ce + 4096 + 8192]
        # ... the bad ones are EIO
        assert errno_of(pread, f"{mnt}/big.bin", bs, 100) == errno.EIO
        assert errno_of(pread, f"{mnt}/bad.bin", cs + 10, 100) == errno.EIO
        with open(f"{mnt}/big.bin", "rb") as f:
            assert errno_of(f.read) == errno.EIO
        # a directory whose block is missing: EIO for it alone
        assert errno_of(os.listdir, f"{mnt}/lost") == errno.EIO
        assert errno_of(os.stat, f"{mnt}/lost/file-001") == errno.EIO
        assert os.path.isdir(f"{mnt}/lost")
        assert sorted(os.listdir(mnt)) == ["bad.bin", "big.bin", "lost", "ok", "small.txt"]
        # a hard link whose file is in the unreadable directory: EIO for it alone
        assert len(os.listdir(f"{mnt}/ok")) == 60
        assert errno_of(open, f"{mnt}/ok/zz-link") == errno.EIO
        with open(f"{mnt}/ok/file-007") as f:
            assert f.read() == "in ok 7\n"
        with open(f"{mnt}/small.txt") as f:
            assert f.read() == "small and fine\n"
    # the mount is alive and answers
    assert os.path.ismount(mnt) and m.proc.poll() is None
    assert m.umount() == 0
    log = m.output()
    assert "Traceback" not in log, log
    lines = log.splitlines()
    big_h, bad_h, lost_h = (
        str(damaged["big_leaf"][0].hashcode),
        str(damaged["bad_leaf"][0].hashcode),
        str(damaged["lost"]),
    )
    for path, h in (("/big.bin", big_h), ("/bad.bin", bad_h), ("/lost", lost_h)):
        hits = [ln for ln in lines if h in ln]
        assert len(hits) == 1, (path, hits, log)
        assert path in hits[0], hits[0]
