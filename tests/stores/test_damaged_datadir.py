"""The rest of a damaged datadir: a truncated or missing `datadir.json`, the
metadata or the lock replaced by a directory, a data file truncated mid-record.
Each is one clear line from every command, never a traceback or a signal.
(A full disk: `test_disk_full.py`; the index: `test_damaged_index.py`.)"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest

from vtstore.stores.datadir import DataDir


def vt(env, *args):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
    )
    assert r.returncode >= 0, f"vt {args} died by signal {-r.returncode}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def saved(tmp_path, vt_env):
    tree = tmp_path / "tree"
    tree.mkdir()
    rnd = random.Random(5)
    for i in range(30):
        (tree / f"f{i}").write_bytes(rnd.randbytes(rnd.randrange(1000, 300000)))
    dd = tmp_path / "dd"
    r = vt(vt_env, "-S", str(dd), "save", str(tree))
    assert r.returncode == 0, r.stderr
    return vt_env, dd, r.stdout.strip().splitlines()[-1]


def _one_line_failure(r, *words):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize(
    "damage",
    ["truncated", "empty", "garbage", "a-directory", "missing-with-data"],
)
def test_damaged_metadata(saved, damage):
    env, dd, ref = saved
    meta = dd / "datadir.json"
    if damage == "truncated":
        os.truncate(meta, os.path.getsize(meta) // 2)
    elif damage == "empty":
        os.truncate(meta, 0)
    elif damage == "garbage":
        meta.write_bytes(b"\xff\xfe" + os.urandom(100))
    elif damage == "a-directory":
        meta.unlink()
        meta.mkdir()
    else:
        meta.unlink()
    for args in (["cat", ref + "/f1"], ["ls", ref], ["fsck"], ["info"], ["reindex"]):
        r = vt(env, "-S", str(dd), *args)
        _one_line_failure(r, "datadir")


def test_lock_replaced_by_a_directory(saved):
    env, dd, ref = saved
    (dd / "lock").unlink()
    (dd / "lock").mkdir()
    # reading needs no lock of its own; taking the datadir does
    assert vt(env, "-S", str(dd), "cat", ref + "/f1").returncode == 0
    r = vt(env, "-S", str(dd), "reindex")
    _one_line_failure(r, "lock")


def test_data_file_truncated_mid_record(saved):
    env, dd, ref = saved
    with DataDir(dd, readonly=True) as s:
        blocks = {h: s[h] for h in s.hashcodes()}
    (vtd,) = (dd / "data").glob("*.vtd")
    os.truncate(vtd, os.path.getsize(vtd) * 2 // 3 + 17)
    r = vt(env, "-S", str(dd), "cat", ref + "/f29")
    assert r.returncode == 0 or len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = vt(env, "-S", str(dd), "fsck")
    assert r.returncode == 1 and "damage" in r.stdout
    r = vt(env, "-S", str(dd), "fsck", "--repair")
    assert r.returncode == 1 and not r.stderr, r.stderr
    assert vt(env, "-S", str(dd), "fsck").returncode == 0
    with DataDir(dd, readonly=True) as s:
        kept = sum(1 for h, b in blocks.items() if s.get(h) == b)
        assert kept == len(s) and kept > len(blocks) // 2


def test_data_directory_replaced_by_a_file(saved):
    env, dd, ref = saved
    shutil.rmtree(dd / "data")
    (dd / "data").write_text("not a directory\n")
    for args in (["cat", ref + "/f1"], ["fsck"]):
        r = vt(env, "-S", str(dd), *args)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) <= 1, r.stderr
