"""Fixtures for real FUSE mounts: a datadir, an archive, `vt mount` in a child.

Every mount is unmounted by the fixture that made it (fusermount3 -u, then a
lazy unmount), and its process is waited for or killed: nothing is left over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

FUSE = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None
needs_fuse = pytest.mark.skipif(not FUSE, reason="/dev/fuse or fusermount3 is missing")

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def vt_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def vt(*args, check=True, **kw) -> subprocess.CompletedProcess:
    """Run `vt ARGS` in a new interpreter."""
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args],
        capture_output=True,
        text=True,
        env=vt_env(),
        timeout=kw.pop("timeout", 300),
        **kw,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def force_unmount(mnt: str) -> None:
    if os.path.ismount(mnt) or _dead_mount(mnt):
        for cmd in (["fusermount3", "-u", mnt], ["fusermount3", "-uz", mnt], ["umount", "-l", mnt]):
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                break


def _dead_mount(mnt: str) -> bool:
    try:
        os.stat(mnt)
        return False
    except OSError as e:
        return e.errno == 107  # ENOTCONN


def rsync_diff(src: str, dst: str, times: bool = True) -> list[str]:
    """Lines of `rsync -naHAXc --itemize-changes src/ dst/` (empty when equal);
    without `times` for trees made side by side rather than copied."""
    opts = [] if times else ["--no-times"]
    r = subprocess.run(
        ["rsync", "-naHAXc", *opts, "--itemize-changes", f"{src}/", f"{dst}/"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.strip()]


class Mounted:
    """A `vt mount -f` child process serving `mnt`."""

    def __init__(self, store: str, special: str, mnt: str, *opts: str, wait=True):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        self.text = ""
        self.log = open(mnt.rstrip("/") + ".log", "w+")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vtstore.cli.main",
                "-S",
                store,
                "mount",
                "-f",
                "--create",
                *opts,
                special,
                mnt,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=vt_env(),
        )
        if wait:
            self.wait_mounted()

    def wait_mounted(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                raise AssertionError(f"vt mount exited {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError("mount did not appear")
            time.sleep(0.05)

    def output(self) -> str:
        if self.log.closed:
            return self.text
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def umount(self, timeout: float = 60) -> int:
        """Unmount the way a user would and wait for the process to finish."""
        if self.proc.poll() is None and os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.close()
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        force_unmount(self.mnt)
        if not self.log.closed:
            self.text = self.output()
            self.log.close()


@pytest.fixture
def mounts():
    """Start mounts with `mounts(store, special, mnt, *opts)`; all are cleaned up."""
    made: list[Mounted] = []

    def start(*a, **kw) -> Mounted:
        m = Mounted(*a, **kw)
        made.append(m)
        return m

    yield start
    for m in made:
        m.close()


@pytest.fixture
def place(tmp_path):
    """A datadir path, an archive path and a mountpoint under tmp."""
    store = str(tmp_path / "store")
    archive = str(tmp_path / "tree.vt")
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    return store, archive, mnt
