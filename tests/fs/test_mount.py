"""Real FUSE mounts: round trips through the archive, refusals, history, crashes."""

from __future__ import annotations

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import time

from .conftest import needs_fuse, vt, vt_env

pytestmark = needs_fuse


def states(archive: str) -> int:
    if not os.path.exists(archive):
        return 0
    with open(archive) as f:
        return sum(1 for line in f if line.strip())


def build_tree(root: str) -> None:
    """The same operations, run on the mount and on a plain directory."""
    os.makedirs(f"{root}/a/b")
    with open(f"{root}/a/b/random.bin", "wb") as f:
        f.write(random.Random(42).randbytes(3 * 1024 * 1024 + 7))
    with open(f"{root}/text.txt", "w") as f:
        f.write("line\n" * 10000)
    with open(f"{root}/sparse", "wb") as f:
        f.seek(5 * 1024 * 1024)
        f.write(b"end")
    open(f"{root}/empty", "w").close()
    os.symlink("a/b/random.bin", f"{root}/link")
    os.link(f"{root}/text.txt", f"{root}/a/hard")
    os.mkfifo(f"{root}/fifo")
    os.chmod(f"{root}/a", 0o2750)
    os.chmod(f"{root}/text.txt", 0o600)
    os.setxattr(f"{root}/text.txt", "user.colour", b"blue")
    os.setxattr(f"{root}/empty", "user.mime_type", b"text/plain")
    with open(f"{root}/a/b/random.bin", "r+b") as f:
        f.seek(1000)
        f.write(b"patched")
    os.utime(f"{root}/empty", ns=(1_000_000_000, 2_000_000_000))


def snapshot(root: str) -> dict:
    """Everything a round trip must keep, by relative path."""
    out = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            rec = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    rec["data"] = f.read()
                rec["nlink"] = st.st_nlink
                rec["mtime"] = st.st_mtime_ns
                rec["group"] = inodes.setdefault(st.st_ino, rel)
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            if not stat.S_ISLNK(st.st_mode) and not stat.S_ISFIFO(st.st_mode):
                rec["xattrs"] = {
                    n: os.getxattr(p, n) for n in os.listxattr(p) if n.startswith("user.")
                }
            out[rel] = rec
    return out


def test_write_unmount_remount_unpack(place, mounts, tmp_path):
    store, archive, mnt = place
    ref = str(tmp_path / "ref")
    build_tree(ref)
    m = mounts(store, archive, mnt)
    build_tree(os.path.join(mnt, "t"))
    written = snapshot(os.path.join(mnt, "t"))
    assert without_times(written) == without_times(snapshot(ref))
    assert m.umount() == 0
    assert states(archive) == 1
    m = mounts(store, archive, mnt)
    assert snapshot(os.path.join(mnt, "t")) == written
    assert m.umount() == 0
    assert states(archive) == 1  # nothing changed: no new state
    out = str(tmp_path / "out")
    vt("-S", store, "unpack", archive, out)
    assert snapshot(os.path.join(out, "t")) == written


def without_times(snap: dict) -> dict:
    return {k: {f: v for f, v in rec.items() if f != "mtime"} for k, rec in snap.items()}


def test_daemon_mount_and_vt_umount(place, tmp_path):
    store, archive, mnt = place
    try:
        vt("-S", store, "mount", "--create", archive, mnt)
        assert os.path.ismount(mnt)
        with open(f"{mnt}/f", "wb") as f:
            f.write(b"x" * 100000)
        vt("umount", mnt)
        assert not os.path.ismount(mnt)
        assert states(archive) == 1
        r = vt("-S", store, "cat", f"{archive}/f")
        assert r.stdout == "x" * 100000
    finally:
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def test_exec_runs_the_command_and_returns_its_status(place):
    store, archive, mnt = place
    r = vt(
        "-S",
        store,
        "mount",
        "--create",
        "-e",
        f"echo hi > {mnt}/hi; exit 3",
        archive,
        mnt,
        check=False,
    )
    assert r.returncode == 3, r.stderr
    assert not os.path.ismount(mnt)
    assert vt("-S", store, "cat", f"{archive}/hi").stdout == "hi\n"


WRITER = """
import os, sys
root, tag = sys.argv[1], sys.argv[2]
os.makedirs(f"{root}/{tag}", exist_ok=True)
for i in range(40):
    data = (f"{tag}-{i}-".encode() * (1 + i * 500))
    with open(f"{root}/{tag}/f{i}", "wb") as f:
        f.write(data)
    with open(f"{root}/shared.log", "ab") as f:
        f.write(f"{tag} {i}\\n".encode())
"""


def test_concurrent_writers_in_two_processes(place, mounts):
    store, archive, mnt = place
    m = mounts(store, archive, mnt)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, mnt, tag], env=vt_env())
        for tag in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert m.umount() == 0
    m = mounts(store, archive, mnt)
    for tag in ("p1", "p2"):
        for i in range(40):
            with open(f"{mnt}/{tag}/f{i}", "rb") as f:
                assert f.read() == f"{tag}-{i}-".encode() * (1 + i * 500)
    with open(f"{mnt}/shared.log") as f:
        lines = f.read().splitlines()
    assert sorted(lines) == sorted(f"{t} {i}" for t in ("p1", "p2") for i in range(40))
    m.umount()


def _errno(fn, *a) -> int:
    try:
        fn(*a)
    except OSError as e:
        return e.errno
    return 0


def _seed(store, archive, tmp_path):
    src = tmp_path / "seed"
    (src / "d").mkdir(parents=True)
    (src / "f").write_bytes(b"0123456789")
    (src / "empty").write_bytes(b"")
    vt("-S", store, "pack", "-a", archive, str(src))


def test_append_only_refusals(place, mounts, tmp_path):
    store, archive, mnt = place
    _seed(store, archive, tmp_path)
    m = mounts(store, archive, mnt, "-o", "append")
    with open(f"{mnt}/f", "ab") as f:
        f.write(b"more")
    with open(f"{mnt}/new", "wb") as f:  # creating is appending to the tree
        f.write(b"n")
    with open(f"{mnt}/empty", "wb") as f:  # truncating an empty file is allowed
        f.write(b"e")
    assert _errno(os.truncate, f"{mnt}/f", 3) == errno.EPERM
    assert _errno(open, f"{mnt}/f", "wb") == errno.EPERM
    fd = os.open(f"{mnt}/f", os.O_WRONLY)
    try:
        assert _errno(os.pwrite, fd, b"X", 0) == errno.EPERM
    finally:
        os.close(fd)
    assert _errno(os.unlink, f"{mnt}/f") == errno.EPERM
    assert _errno(os.rmdir, f"{mnt}/d") == errno.EPERM
    assert _errno(os.rename, f"{mnt}/f", f"{mnt}/g") == errno.EPERM
    assert _errno(os.setxattr, f"{mnt}/f", "x-vt-control", b"crop 0 1") == errno.EPERM
    with open(f"{mnt}/f", "rb") as f:
        assert f.read() == b"0123456789more"
    m.umount()


def test_read_only_refusals(place, mounts, tmp_path):
    store, archive, mnt = place
    _seed(store, archive, tmp_path)
    before = states(archive)
    m = mounts(store, archive, mnt, "-r")
    assert _errno(open, f"{mnt}/new", "wb") == errno.EROFS
    assert _errno(open, f"{mnt}/f", "ab") == errno.EROFS
    assert _errno(os.unlink, f"{mnt}/f") == errno.EROFS
    assert _errno(os.mkdir, f"{mnt}/x") == errno.EROFS
    assert _errno(os.setxattr, f"{mnt}/f", "user.a", b"1") == errno.EROFS
    with open(f"{mnt}/f", "rb") as f:
        assert f.read() == b"0123456789"
    m.umount()
    assert states(archive) == before


def test_history_view_lists_every_state_live(place, mounts, tmp_path):
    store, archive, mnt = place
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / "f").write_text(f"version {i}")
        vt("-S", store, "pack", "-a", archive, str(src))
        time.sleep(0.01)
    m = mounts(store, archive, mnt, "-a")
    names = sorted(os.listdir(mnt))
    assert len(names) == 3
    assert [open(f"{mnt}/{n}/f").read() for n in names] == [f"version {i}" for i in range(3)]
    assert _errno(open, f"{mnt}/{names[0]}/f", "w") == errno.EROFS
    (src / "f").write_text("version 3")
    vt("-S", store, "pack", "-a", archive, str(src))
    names = sorted(os.listdir(mnt))
    assert len(names) == 4
    assert open(f"{mnt}/{names[-1]}/f").read() == "version 3"
    m.umount()


def test_kill_9_loses_no_synced_state(place, mounts):
    store, archive, mnt = place
    m = mounts(store, archive, mnt, "--sync-interval", "0")
    data = os.urandom(2 * 1024 * 1024)
    with open(f"{mnt}/kept", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # records a state
    assert states(archive) == 1
    with open(f"{mnt}/lost", "wb") as f:
        f.write(b"never synced")
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=10)
    m.close()
    assert states(archive) == 1
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", store, "cat", f"{archive}/kept"],
        capture_output=True,
        env=vt_env(),
    )
    assert r.returncode == 0 and r.stdout == data
    m = mounts(store, archive, mnt)
    assert not os.path.exists(f"{mnt}/lost")
    m.umount()


def test_sigterm_syncs_and_unmounts(place, mounts):
    store, archive, mnt = place
    m = mounts(store, archive, mnt)
    with open(f"{mnt}/f", "w") as f:
        f.write("bye")
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=60) == 0
    assert not os.path.ismount(mnt)
    assert states(archive) == 1
    m.close()


def test_live_controls(place, mounts):
    store, archive, mnt = place
    m = mounts(store, archive, mnt)
    data = os.urandom(300_000)
    with open(f"{mnt}/f", "wb") as f:
        f.write(data)
    ref = os.getxattr(f"{mnt}/f", "x-vt-blockref")
    assert ref.startswith(b"I{") or ref.startswith(b"B{")
    open(f"{mnt}/g", "w").close()
    os.setxattr(f"{mnt}/g", "x-vt-blockref", ref)
    with open(f"{mnt}/g", "rb") as f:
        assert f.read() == data
    os.setxattr(f"{mnt}/f", "x-vt-control", b"clone sub-copy")
    with open(f"{mnt}/sub-copy", "rb") as f:
        assert f.read() == data
    os.setxattr(f"{mnt}/g", "x-vt-control", b"crop 1000 2000")
    assert os.stat(f"{mnt}/g").st_size == 1000
    with open(f"{mnt}/g", "rb") as f:
        assert f.read() == data[1000:2000]
    os.setxattr(f"{mnt}/g", "x-vt-control", b"splice 10 " + ref + b" 5")
    with open(f"{mnt}/g", "rb") as f:
        assert f.read() == data[1000:1010] + data + data[1015:2000]
    assert _errno(os.setxattr, f"{mnt}/g", "x-vt-blockref", b"garbage") == errno.EINVAL
    os.setxattr(f"{mnt}/g", "user.mime_type", b"application/x-test")
    assert "x-vt-blockref" not in os.listxattr(f"{mnt}/g")
    m.umount()
