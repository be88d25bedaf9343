"""Everything a datadir creates is private to its owner: directories 0700,
files 0600, whatever the umask; another user cannot open a data file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vtstore.stores.datadir import DataDir

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_top():
    """A directory any user may enter (pytest's tmp dirs are root-only)."""
    top = Path(tempfile.mkdtemp(prefix="vt-perm-"))
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _modes(top: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, top)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def _fill(path: Path) -> None:
    old = os.umask(0o022)
    try:
        with DataDir(path, data_file_size=256 * 1024) as s:
            s.add_many([os.urandom(5000) for _ in range(200)])  # several data files
        with DataDir(path) as s:  # a second open adopts and appends
            s.add(b"secret block from a 0600 file")
    finally:
        os.umask(old)


def test_new_datadir_is_private_under_umask_022(open_top):
    dd = open_top / "dd"
    _fill(dd)
    modes = _modes(dd)
    assert {"datadir.json", "lock", "data", "index", "index/data.mdb", "index/lock.mdb"} <= set(
        modes
    )
    assert stat.S_IMODE(dd.stat().st_mode) == 0o700
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o700 if (dd / p).is_dir() else 0o600)}
    assert not wrong, wrong
    assert len(list((dd / "data").glob("*.vtd"))) > 2


def test_datadir_under_a_new_parent(open_top):
    """Parents made on the way keep the usual mode; the datadir itself is 0700."""
    old = os.umask(0o022)
    try:
        with DataDir(open_top / "a" / "b" / "dd") as s:
            s.add(b"x" * 100)
    finally:
        os.umask(old)
    assert stat.S_IMODE((open_top / "a" / "b").stat().st_mode) == 0o755
    assert stat.S_IMODE((open_top / "a" / "b" / "dd").stat().st_mode) == 0o700


def test_another_user_cannot_read_a_data_file(open_top):
    dd = open_top / "dd"
    _fill(dd)
    vtd = sorted((dd / "data").glob("*.vtd"))[0]
    code = (
        "import sys\n"
        "try:\n"
        "    open(sys.argv[1], 'rb').read(1)\n"
        "except PermissionError:\n"
        "    sys.exit(13)\n"
    )
    # through the 0700 directories
    r = subprocess.run([*NOBODY, sys.executable, "-c", code, str(vtd)], capture_output=True)
    assert r.returncode == 13, r.stderr
    # and with the directories opened up: the file itself is 0600
    for d in (dd, dd / "data"):
        os.chmod(d, 0o755)
    r = subprocess.run([*NOBODY, sys.executable, "-c", code, str(vtd)], capture_output=True)
    assert r.returncode == 13, r.stderr
    # the index too
    os.chmod(dd / "index", 0o755)
    r = subprocess.run(
        [*NOBODY, sys.executable, "-c", code, str(dd / "index" / "data.mdb")],
        capture_output=True,
    )
    assert r.returncode == 13, r.stderr


def test_index_compaction_and_reindex_keep_modes(open_top):
    dd = open_top / "dd"
    _fill(dd)
    old = os.umask(0o022)
    try:
        with DataDir(dd) as s:
            s.reindex()
    finally:
        os.umask(old)
    modes = _modes(dd)
    assert modes["index"] == 0o700
    assert modes["index/data.mdb"] == 0o600
