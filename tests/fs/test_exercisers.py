"""Debian's filesystem exercisers against a real mount: fio --verify, stress-ng,
dbench, bonnie++.  Each run is seconds long; a missing tool skips its test."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import Mounted, needs_fuse

pytestmark = [needs_fuse, pytest.mark.slow]


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")


@pytest.fixture(scope="module")
def mnt(tmp_path_factory):
    base = tmp_path_factory.mktemp("exercise")
    m = Mounted(
        str(base / "store"), str(base / "tree.vt"), str(base / "mnt"), "--sync-interval", "5"
    )
    yield m.mnt
    rc = m.umount()
    assert rc == 0, m.output()
    assert "failed" not in m.output(), m.output()


def run(cmd, cwd, timeout=180) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (
        f"{cmd[0]} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    )
    return r.stdout + r.stderr


@pytest.mark.parametrize(
    "job",
    [
        ["--rw=write", "--bs=1M", "--size=32M"],
        ["--rw=randwrite", "--bs=4k", "--size=8M"],
        ["--rw=randrw", "--bs=16k", "--size=8M", "--ioengine=mmap"],
    ],
    ids=["sequential", "random", "mmap"],
)
def test_fio_verify(mnt, job):
    need("fio")
    d = os.path.join(mnt, "fio-" + job[0].split("=")[1] + job[-1][-4:])
    os.makedirs(d, exist_ok=True)
    out = run(
        [
            "fio",
            "--name=v",
            f"--directory={d}",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            *job,
        ],
        d,
    )
    assert "verify:" not in out.lower() or "bad" not in out.lower()


def test_stress_ng_filesystem_stressors(mnt):
    need("stress-ng")
    d = os.path.join(mnt, "stress")
    os.makedirs(d, exist_ok=True)
    out = run(
        [
            "stress-ng",
            "--temp-path",
            d,
            "--timeout",
            "5s",
            "--hdd",
            "1",
            "--hdd-bytes",
            "8M",
            "--dir",
            "1",
            "--dentry",
            "1",
            "--link",
            "1",
            "--symlink",
            "1",
            "--rename",
            "1",
            "--xattr",
            "1",
            "--fallocate",
            "1",
            "--metrics-brief",
        ],
        d,
    )
    assert "successful run completed" in out, out


def test_dbench(mnt):
    need("dbench")
    d = os.path.join(mnt, "dbench")
    os.makedirs(d, exist_ok=True)
    out = run(["dbench", "-D", d, "-t", "5", "2"], d)
    assert "Throughput" in out


def test_bonnie(mnt):
    need("bonnie++")
    d = os.path.join(mnt, "bonnie")
    os.makedirs(d, exist_ok=True)
    run(["bonnie++", "-f", "-d", d, "-s", "64M", "-r", "32M", "-n", "1", "-u", "root", "-q"], d)
