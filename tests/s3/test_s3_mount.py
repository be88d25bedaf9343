"""`vt mount` of an archive whose blocks are on SeaweedFS (pack layout), with a
local cache store in front (`-C`): the tree reads back whole, a file written
into the mount lands in the bucket, and another machine sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .conftest import BUCKET, vt
from .test_s3_cli import make_tree, same_tree


def _unmount(mnt: str) -> None:
    for cmd in (["fusermount3", "-u", mnt], ["fusermount3", "-uz", mnt], ["umount", "-l", mnt]):
        if not os.path.ismount(mnt) or subprocess.run(cmd, capture_output=True).returncode == 0:
            return


def test_mount_with_a_cache_in_front(tmp_path, s3_env, weed, prefix):
    src = tmp_path / "src"
    make_tree(src, files=15)
    S = ["-S", f"s3://{BUCKET}/{prefix}"]
    vt(s3_env, *S, "-q", "pack", str(src))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "mount.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vtstore.cli.main",
            *S,
            "-C",
            str(tmp_path / "front"),
            "mount",
            "-f",
            f"{src}.vt",
            str(mnt),
        ],
        env=s3_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            assert proc.poll() is None, (tmp_path / "mount.log").read_text()
            assert time.monotonic() < deadline, "mount did not appear"
            time.sleep(0.05)
        assert same_tree(src, mnt)
        (mnt / "written-in-the-mount").write_bytes(b"new data " * 10_000)
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        assert proc.wait(timeout=120) == 0, (tmp_path / "mount.log").read_text()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        _unmount(str(mnt))
        log.close()
    # another machine: a fresh cache, no cache store in front
    other = {**s3_env, "XDG_CACHE_HOME": str(tmp_path / "other")}
    vt(other, *S, "-q", "unpack", f"{src}.vt", str(tmp_path / "out"))
    assert (tmp_path / "out" / "written-in-the-mount").read_bytes() == b"new data " * 10_000
