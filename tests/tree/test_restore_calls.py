"""What a restore asks of the kernel per file and per directory (`strace -c -f`
of a real `vt unpack`): metadata is set once, and calls that would change
nothing are left out: a directory is made with its final mode when that is
safe (no chown or chmod after its contents then), a file is created with its
mode; modes that cannot be made at once (0555, setgid, sticky) still come
back exactly."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")


def _vt(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", *args],
        capture_output=True,
        text=True,
        **kw,
    )


def _counts(path) -> dict[str, int]:
    out = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1].isidentifier():
            out[parts[-1]] = int(parts[3])
    return out


def _tree(root, ndirs=120, per=3) -> None:
    os.makedirs(root)
    for i in range(ndirs):
        d = os.path.join(root, f"d{i:03d}")
        os.mkdir(d, 0o755)
        for j in range(per):
            p = os.path.join(d, f"f{j}")
            with open(p, "wb") as f:
                f.write(os.urandom(100 + j))
            os.chmod(p, 0o644)
        os.chmod(d, 0o755)


def test_directories_and_files_get_each_call_once(tmp_path):
    src = tmp_path / "src"
    _tree(str(src))
    os.chmod(src, 0o755)
    dd = str(tmp_path / "dd")
    r = _vt("-S", dd, "pack", "-a", str(tmp_path / "t.vt"), str(src))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    trace = tmp_path / "strace.txt"
    cmd = [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", dd, "unpack"]
    r = subprocess.run(
        ["strace", "-f", "-c", "-o", str(trace), *cmd, str(tmp_path / "t.vt"), str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    assert r.returncode == 0, r.stderr
    calls = _counts(trace)
    ndirs, nfiles = 120, 360
    assert calls.get("mkdirat", 0) + calls.get("mkdir", 0) <= ndirs + 3
    # the target's own metadata at most: the rest were made as they end up
    assert calls.get("fchown", 0) + calls.get("fchownat", 0) + calls.get("chown", 0) <= 2
    assert calls.get("fchmod", 0) + calls.get("fchmodat", 0) + calls.get("chmod", 0) <= 2
    assert calls.get("utimensat", 0) <= ndirs + nfiles + 2
    r = subprocess.run(
        ["rsync", "-naHAXc", "--delete", "--itemize-changes", f"{out}/", f"{src}/"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout == "", r.stdout


def test_modes_that_cannot_be_made_at_once_come_back(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    modes = {"ro": 0o555, "setgid": 0o2775, "sticky": 0o1777, "private": 0o700, "group": 0o775}
    for name in modes:
        d = src / name
        d.mkdir()
        (d / "f").write_bytes(b"x" * 100)
        os.chmod(d / "f", 0o640)
    for name, mode in modes.items():
        os.chmod(src / name, mode)
    dd = str(tmp_path / "dd")
    r = _vt("-S", dd, "pack", "-a", str(tmp_path / "t.vt"), str(src))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = _vt("-S", dd, "unpack", str(tmp_path / "t.vt"), str(out))
    assert r.returncode == 0, r.stderr
    for name, mode in modes.items():
        assert stat.S_IMODE(os.lstat(out / name).st_mode) == mode, name
        st = os.lstat(out / name / "f")
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_gid == os.lstat(src / name / "f").st_gid


def test_each_directory_is_read_once(tmp_path):
    """Measured for the limits, then walked: one store read a directory."""
    from vtstore.stores.datadir import DataDir
    from vtstore.tree.fsexport import Exporter
    from vtstore.tree.fsimport import import_tree

    from .test_export_batched import CountingStore

    src = tmp_path / "src"
    _tree(str(src), ndirs=60, per=1)
    with DataDir(str(tmp_path / "dd")) as S:
        d, _ = import_tree(str(src), S)
        counting = CountingStore(S)
        stats = Exporter(counting, max_files=10**6, max_size=10**12).export(d, str(tmp_path / "o"))
    assert stats.dirs == 60 and stats.files == 60
    assert counting.single <= 61 + 2  # 60 directories and the root
