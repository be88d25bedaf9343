"""`vt mount -r` and `vt mount -a` of a datadir and archive on read-only media
(a real read-only bind mount): reading, fsync and a sync request write nothing
and fail nothing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import needs_fuse, vt

pytestmark = needs_fuse


@pytest.fixture
def ro_media(tmp_path):
    """A packed datadir and archive, seen through a read-only bind mount."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root for a bind mount")
    media = tmp_path / "media"
    (media / "src" / "d").mkdir(parents=True)
    (media / "src" / "f").write_text("on read-only media\n")
    os.link(media / "src" / "f", media / "src" / "d" / "g")
    vt("-S", str(media / "store"), "pack", str(media / "src"))
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "--bind", str(media), str(ro)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind mount: {r.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(OSError):
            open(ro / "probe", "w")
        yield ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_mount_r_of_read_only_media(ro_media, mounts, tmp_path):
    store, archive = str(ro_media / "store"), str(ro_media / "src.vt")
    mnt = str(tmp_path / "mnt")
    m = mounts(store, archive, mnt, "-r")
    with open(f"{mnt}/f") as f:
        assert f.read() == "on read-only media\n"
    with open(f"{mnt}/d/g") as f:
        assert f.read() == "on read-only media\n"
    fd = os.open(f"{mnt}/f", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(mnt, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert m.umount() == 0, m.output()
    assert "Traceback" not in m.output() and "rror" not in m.output(), m.output()


def test_history_view_of_read_only_media(ro_media, mounts, tmp_path):
    store, archive = str(ro_media / "store"), str(ro_media / "src.vt")
    mnt = str(tmp_path / "mnt")
    m = mounts(store, archive, mnt, "-a")
    (state,) = os.listdir(mnt)
    with open(f"{mnt}/{state}/d/g") as f:
        assert f.read() == "on read-only media\n"
    fd = os.open(f"{mnt}/{state}/f", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert m.umount() == 0, m.output()
    assert "Traceback" not in m.output() and "rror" not in m.output(), m.output()


def test_daemon_mount_r_of_read_only_media(ro_media, tmp_path):
    store, archive = str(ro_media / "store"), str(ro_media / "src.vt")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = vt("-S", store, "mount", "-r", "-e", f"cat {mnt}/f {mnt}/d/g", archive, str(mnt))
    assert r.stdout == "on read-only media\n" * 2
