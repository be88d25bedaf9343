"""Push-and-delete pools: `vt push --move POOL DST` sends the named archives
and the sealed data files and drops each file only once DST confirms every
block; killed with SIGKILL midway, nothing is lost (every block of every
state is in the pool or in DST)."""

from __future__ import annotations

import random
import signal
import time

from vtstore.archive import Archive
from vtstore.errors import MissingBlockError
from vtstore.stores.datadir import DataDir
from vtstore.tree.check import check

from .conftest import check_archive, pack, popen_vt, write_version


class Either:
    """Reads a block from the pool, else from the destination."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.hashclass = a.hashclass

    def __getitem__(self, h):
        for s in (self.a, self.b):
            try:
                return s[h]
            except MissingBlockError:
                pass
        raise MissingBlockError(h)


def _fill(pool, tree, versions, size=24_000):
    with DataDir(pool, data_file_size=128 << 10) as s:
        for v in versions:
            write_version(tree, v, size=size)
            pack(s, str(pool / "home.vt"), tree, comment=f"v{v}")


def _sealed(dd) -> int:
    with DataDir(dd, readonly=True) as s:
        return sum(1 for fi in s._index.files().values() if fi.sealed)


def test_push_move_drops_sealed_files_after_confirmation(tmp_path, vt):
    pool, dst, tree = tmp_path / "pool", tmp_path / "dst", tmp_path / "t"
    _fill(pool, tree, range(6))
    assert _sealed(pool) >= 5
    vt("-S", dst, "info")  # an empty destination datadir
    r = vt("push", "--move", pool, dst)
    assert "dropped" in r.stdout
    assert _sealed(pool) == 0
    with DataDir(pool, readonly=True) as s:
        assert len(s._index.files()) <= 1  # the open file stays
    assert check_archive(dst, str(dst / "home.vt")) == 6
    # the pool keeps its archive; a later run sends only what is new
    _fill(pool, tree, range(6, 9))
    vt("push", "--move", pool, dst)
    assert check_archive(dst, str(dst / "home.vt")) == 9
    r = vt("push", "--move", pool, dst, "[x]y", check=False)
    assert r.returncode == 2 and "give no WHAT" in r.stderr


def test_push_move_killed_loses_nothing(tmp_path, vt):
    """Killed at random points of its work (after the interpreter started:
    the delays are measured), a push --move loses nothing."""
    pool, dst, tree = tmp_path / "pool", tmp_path / "dst", tmp_path / "t"
    rnd = random.Random(14)
    t = time.monotonic()
    vt("push", "--help")
    start = time.monotonic() - t
    _fill(pool, tree, range(3), size=150_000)
    t = time.monotonic()
    vt("push", "--move", pool, dst)
    work = max(time.monotonic() - t - start, 0.05)
    v, killed = 3, 0
    for _round in range(8):
        _fill(pool, tree, range(v, v + 3), size=150_000)
        v += 3
        p = popen_vt(vt.env, "-q", "push", "--move", pool, dst)
        time.sleep(start + rnd.uniform(0.0, 1.0) * work)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        _out, err = p.communicate()
        assert "Traceback" not in err
        with DataDir(pool, readonly=True) as a, DataDir(dst, readonly=True) as b:
            both = Either(a, b)
            for e in Archive(str(pool / "home.vt")).entries():
                assert check(e.dirent, both).problems == [], e.comment
    assert killed >= 1, killed
    vt("push", "--move", pool, dst)
    assert _sealed(pool) == 0
    assert check_archive(dst, str(dst / "home.vt")) == v
