"""A datadir on read-only media, or without write permission, is readable:
`ls`, `cat`, `unpack`, `export`, `mount -r` and `fsck` work and write nothing
(no lock files); `fsck --repair` and `reindex` fail with one clear line.

Read-only media: a real `mount --bind` remounted read-only.  No permission:
`chmod -R a-w` and `vt` run as uid 65534 by `setpriv`."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vtstore.stores.datadir import DataDir

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _env(home: Path) -> dict:
    import vtstore

    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    env["PYTHONPATH"] = str(Path(vtstore.__file__).resolve().parents[1])
    env["HOME"] = str(home)
    return env


def vt(env, *args, user=(), cwd=None):
    r = subprocess.run(
        [*user, sys.executable, "-m", "vtstore.cli.main", "-q", *args],
        env=env,
        capture_output=True,
        cwd=cwd,
    )
    err = r.stderr.decode(errors="replace")
    assert r.returncode >= 0 and "Traceback" not in err, err
    return r


def snapshot(top: Path) -> dict:
    """Every path under `top` with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, top)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def packed():
    """A datadir with an archive of a small tree in it, under a directory any
    user may enter (pytest's own tmp dirs are root-only)."""
    top = Path(tempfile.mkdtemp(prefix="vt-ro-"))
    os.chmod(top, 0o755)
    home = top / "home"
    home.mkdir(mode=0o777)
    os.chmod(home, 0o777)
    tree = top / "tree"
    tree.mkdir()
    rnd = random.Random(3)
    for i in range(20):
        (tree / f"f{i}").write_bytes(rnd.randbytes(rnd.randrange(1, 200000)))
    (tree / "hello").write_text("hello, read-only world\n")
    dd = top / "dd"
    env = _env(home)
    r = vt(env, "-S", str(dd), "pack", "-a", str(dd / "tree.vt"), str(tree))
    assert r.returncode == 0, r.stderr
    try:
        yield env, top, dd, tree
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def _read_everything(env, store: Path, tree: Path, out: Path, user=()):
    arch = str(store / "tree.vt")
    r = vt(env, "-S", str(store), "ls", arch, user=user)
    assert r.returncode == 0, r.stderr
    assert b"hello" in r.stdout and b"f19" in r.stdout
    r = vt(env, "-S", str(store), "cat", arch + "/hello", user=user)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello, read-only world\n"
    r = vt(env, "-S", str(store), "unpack", arch, str(out / "unpacked"), user=user)
    assert r.returncode == 0, r.stderr
    for p in tree.iterdir():
        assert (out / "unpacked" / p.name).read_bytes() == p.read_bytes()
    r = vt(env, "-S", str(store), "export", arch, "-o", str(out / "t.tar"), user=user)
    assert r.returncode == 0, r.stderr
    names = subprocess.run(["tar", "tf", str(out / "t.tar")], capture_output=True, text=True)
    assert "hello" in names.stdout
    r = vt(env, "-S", str(store), "fsck", user=user)
    assert r.returncode == 0, r.stdout + r.stderr
    r = vt(env, "-S", str(store), "info", user=user)
    assert r.returncode == 0, r.stderr
    for cure in (["fsck", "--repair"], ["reindex"]):
        r = vt(env, "-S", str(store), *cure, user=user)
        err = r.stderr.decode()
        assert r.returncode != 0 and len(err.strip().splitlines()) == 1, err
        assert "not writable" in err or "read-only" in err, err


def test_readonly_bind_mount(packed):
    env, top, dd, tree = packed
    mnt = top / "ro"
    mnt.mkdir()
    out = top / "out"
    out.mkdir()
    r = subprocess.run(["mount", "--bind", str(dd), str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot bind mount: {r.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        with pytest.raises(OSError):
            (mnt / "probe").write_text("x")
        before = snapshot(dd)
        _read_everything(env, mnt, tree, out)
        # in-process as well: a read-only DataDir takes no lock it cannot
        with DataDir(mnt, readonly=True) as s:
            assert len(s) > 20 and s.fsck().ok
            assert not s._index.writable
        assert snapshot(dd) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("lock_files", ["kept", "removed"])
def test_no_write_permission_as_another_user(packed, lock_files):
    env, top, dd, tree = packed
    if lock_files == "removed":
        (dd / "lock").unlink()
        (dd / "index" / "lock.mdb").unlink()
    out = top / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    # readable by everyone, writable by no one
    subprocess.run(["chmod", "-R", "a+rX,a-w", str(dd)], check=True)
    before = snapshot(dd)
    _read_everything(env, dd, tree, out, user=NOBODY)
    assert snapshot(dd) == before
    assert (dd / "lock").exists() == (lock_files == "kept")


def test_readonly_store_writes_nothing_on_a_writable_dir(packed):
    """`readonly=True` on a writable datadir: no lock file is created, no index
    rewritten at close, no data file adopted."""
    env, top, dd, tree = packed
    (dd / "lock").unlink()
    time.sleep(0.01)
    before = snapshot(dd)
    with DataDir(dd, readonly=True) as s:
        hs = list(s.hashcodes())
        assert all(s.get(h) is not None for h in hs)
    after = snapshot(dd)
    assert not (dd / "lock").exists()
    assert {k: v for k, v in after.items() if k != "index/lock.mdb"} == {
        k: v for k, v in before.items() if k != "index/lock.mdb"
    }


def test_mount_readonly_from_readonly_media(packed):
    env, top, dd, tree = packed
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.skip("no FUSE here")
    ro = top / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "--bind", str(dd), str(ro)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot bind mount: {r.stderr.decode().strip()}")
    mnt = top / "fuse"
    mnt.mkdir()
    proc = None
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vtstore.cli.main",
                "-q",
                "-S",
                str(ro),
                "mount",
                "-f",
                "-r",
                str(ro / "tree.vt"),
                str(mnt),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                pytest.fail(f"vt mount -r exited {proc.returncode}: {proc.stdout.read()!r}")
            assert time.monotonic() < deadline, "mount did not appear"
            time.sleep(0.05)
        assert (mnt / "hello").read_text() == "hello, read-only world\n"
        for p in tree.iterdir():
            assert (mnt / p.name).read_bytes() == p.read_bytes()
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        subprocess.run(["umount", str(ro)], check=False)
