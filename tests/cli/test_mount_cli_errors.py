"""`vt mount` refusals that must be one clear line, and `vt umount` of a dead mount.

Real `vt` processes, real FUSE mounts, a real `kill -9` of a mount daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from vtstore.archive import Archive
from vtstore.stores.datadir import DataDir

from ..fs.conftest import needs_fuse, vt

pytestmark = needs_fuse


def one_line_error(r) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def packed(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "f").write_text("hello\n")
    store = str(tmp_path / "store")
    vt("-S", store, "pack", str(src))
    return store, str(src) + ".vt", src


def is_dead(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == 107
    return False


def test_a_mistyped_archive_needs_create(packed, tmp_path):
    store, archive, _ = packed
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    typo = str(tmp_path / "srcc.vt")
    for opts in ([], ["-f"], ["-r"]):
        r = vt("-S", store, "mount", *opts, typo, str(mnt), check=False)
        line = one_line_error(r)
        assert "no such archive" in line and "--create" in line, line
        assert not os.path.exists(typo) and not os.path.ismount(mnt)
    r = vt("-S", store, "mount", "--create", "-e", f"echo new > {mnt}/n", typo, str(mnt))
    assert vt("-S", store, "cat", typo + "/n").stdout == "new\n"


def test_no_mountpoint_never_mounts_over_the_packed_directory(packed, tmp_path):
    store, archive, src = packed
    r = vt("-S", store, "mount", "src.vt", check=False, cwd=str(tmp_path))
    line = one_line_error(r)
    assert "MOUNTPOINT" in line and "src" in line, line
    assert not os.path.ismount(src)
    assert sorted(os.listdir(src)) == ["d", "f"]
    # without the source directory the default is made, used and removed
    os.rename(src, tmp_path / "elsewhere")
    r = vt("-S", store, "mount", "-r", "-e", "cat src/f", "src.vt", cwd=str(tmp_path))
    assert r.stdout == "hello\n"
    assert not os.path.exists(tmp_path / "src")


def test_a_missing_top_block_is_a_clear_error(packed, tmp_path):
    store, archive, _ = packed
    top = Archive(archive).last().dirent
    damaged = str(tmp_path / "damaged")
    with DataDir(store, readonly=True) as s, DataDir(damaged) as d:
        for h in s.hashcodes():
            if h != top.block.hashcode:
                d.add(s[h])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for opts in ([], ["-f"], ["-r"]):
        r = vt("-S", damaged, "mount", *opts, archive, str(mnt), check=False)
        line = one_line_error(r)
        assert "top directory" in line and str(top.block.hashcode) in line, line
        assert not os.path.ismount(mnt) and not is_dead(str(mnt))


def test_umount_cleans_up_after_a_killed_daemon(packed, tmp_path):
    store, archive, _ = packed
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    try:
        vt("-S", store, "mount", archive, mnt)
        assert os.path.ismount(mnt)
        pid = int(os.getxattr(mnt, "x-vt-pid"))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not is_dead(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_dead(mnt)
        # mounting over the dead mount says what to do
        line = one_line_error(vt("-S", store, "mount", archive, mnt, check=False))
        assert "vt umount" in line, line
        r = vt("umount", mnt)
        assert r.returncode == 0
        assert not is_dead(mnt) and not os.path.ismount(mnt)
        assert os.listdir(mnt) == []
        # and the directory takes a mount again
        vt("-S", store, "mount", "-r", "-e", f"cat {mnt}/f", archive, mnt)
    finally:
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def test_umount_of_a_dead_mount_still_held_open(packed, tmp_path):
    store, archive, _ = packed
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    holder = None
    try:
        vt("-S", store, "mount", archive, mnt)
        pid = int(os.getxattr(mnt, "x-vt-pid"))
        holder = subprocess.Popen(["sleep", "60"], cwd=mnt)  # keeps the mount busy
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not is_dead(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vt("umount", mnt).returncode == 0
        assert not is_dead(mnt) and not os.path.ismount(mnt)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def test_unusable_scratch_dir_is_one_line_before_mounting(packed, tmp_path):
    """A scratch directory that does not exist made a mount whose every write
    failed with ENOENT; it is refused before mounting, daemon or foreground."""
    store, archive, _ = packed
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for fg in ([], ["-f"]):
        scratch = str(tmp_path / "nope")
        r = vt("-S", store, "mount", *fg, "--scratch-dir", scratch, archive, str(mnt), check=False)
        assert "--scratch-dir" in one_line_error(r)
        assert not os.path.ismount(mnt)
