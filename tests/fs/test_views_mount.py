"""Archive-as views through a real mount (issue 19, item 3).

`setfattr -n x-vt-archive-as -v tar DIR` makes `DIR.tar` appear beside DIR:
GNU tar extracts it to exactly DIR (`rsync -naHAXc`), any offset reads the
same octets as `vt export`, it cannot be changed, it survives a remount (the
xattr is stored), and removing the xattr removes it.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import time

import pytest

from .conftest import needs_fuse, rsync_diff, vt

pytestmark = needs_fuse


def make_tree(root: str) -> None:
    os.makedirs(f"{root}/data/sub/deeper")
    with open(f"{root}/data/big.bin", "wb") as f:
        f.write(os.urandom(6 << 20))
    for i in range(200):
        with open(f"{root}/data/sub/f{i}", "wb") as f:
            f.write(os.urandom(i * 37))
    os.symlink("../big.bin", f"{root}/data/sub/link")
    os.link(f"{root}/data/big.bin", f"{root}/data/sub/deeper/big-again")
    os.mkfifo(f"{root}/data/sub/fifo")
    os.link(f"{root}/data/sub/fifo", f"{root}/data/sub/deeper/fifo-again")
    os.setxattr(f"{root}/data/sub/f1", "user.note", b"kept")
    with open(f"{root}/outside", "w") as f:
        f.write("not in the view")


def untar(tarpath: str, out: str) -> None:
    os.makedirs(out)
    r = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xpf", tarpath, "-C", out],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_tar_view_through_the_mount(place, mounts, tmp_path):
    store, archive, mnt = place
    src = str(tmp_path / "src")
    make_tree(src)
    vt("-S", store, "pack", "-a", archive, src)
    m = mounts(store, archive, mnt)
    assert not os.path.exists(f"{mnt}/data.tar")
    os.setxattr(f"{mnt}/data", "x-vt-archive-as", b"tar")
    assert os.getxattr(f"{mnt}/data", "x-vt-archive-as") == b"tar"
    assert "data.tar" in os.listdir(mnt)
    st = os.stat(f"{mnt}/data.tar")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
    # GNU tar reads the view straight from the mount: the directory, exactly
    untar(f"{mnt}/data.tar", str(tmp_path / "out"))
    assert rsync_diff(f"{mnt}/data", str(tmp_path / "out")) == []
    os.setxattr(f"{src}/data", "user.vt.archive-as", b"tar")  # what the control stored
    assert rsync_diff(f"{src}/data", str(tmp_path / "out")) == []
    # the same octets as vt export, read at any offset
    exported = tmp_path / "export.tar"
    vt("-S", store, "export", "-o", str(exported), archive + "/data")
    want = exported.read_bytes()
    assert st.st_size == len(want)
    rnd = random.Random(1)
    with open(f"{mnt}/data.tar", "rb") as f:
        assert f.read(1 << 16) == want[: 1 << 16]
        for _ in range(100):
            off = rnd.randrange(len(want))
            f.seek(off)
            assert f.read(9000) == want[off : off + 9000], off
    # read-only, and not an entry of the tree
    with pytest.raises(PermissionError):
        open(f"{mnt}/data.tar", "r+b")
    for call in (
        lambda: os.unlink(f"{mnt}/data.tar"),
        lambda: os.rename(f"{mnt}/data.tar", f"{mnt}/x.tar"),
        lambda: os.truncate(f"{mnt}/data.tar", 0),
        lambda: os.chmod(f"{mnt}/data.tar", 0o644),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno in (errno.EPERM, errno.EACCES)
    # a change shows in the view after the next sync
    with open(f"{mnt}/data/new-file", "w") as f:
        f.write("new")
    with open(f"{mnt}/data.tar", "rb") as held:  # an open view keeps what it showed
        os.setxattr(mnt, "x-vt-control", b"sync")
        time.sleep(1.2)  # the kernel keeps the old entry for its entry timeout (1 s)
        assert held.read() == want
    out2 = str(tmp_path / "out2")
    untar(f"{mnt}/data.tar", out2)
    assert open(f"{out2}/new-file").read() == "new"
    assert m.umount() == 0, m.output()

    # stored: a remount shows it again; the view itself is not in the tree
    r = vt("-S", store, "ls", archive)
    assert "data.tar" not in r.stdout
    mnt2 = str(tmp_path / "mnt2")
    m2 = mounts(store, archive, mnt2, "-r")
    assert os.path.getsize(f"{mnt2}/data.tar") > 6 << 20
    assert m2.umount() == 0, m2.output()


def test_named_view_hidden_by_a_real_entry_and_removed(place, mounts, tmp_path):
    store, archive, mnt = place
    m = mounts(store, archive, mnt)
    os.makedirs(f"{mnt}/d")
    with open(f"{mnt}/d/f", "w") as f:
        f.write("x")
    os.setxattr(f"{mnt}/d", "x-vt-archive-as", b"tar=backup.tar")
    assert os.path.getsize(f"{mnt}/backup.tar") % 10240 == 0
    for bad in (b"zip", b"tar=a/b", b"tar=..", b"tar=" + b"n" * 300):
        with pytest.raises(OSError) as e:
            os.setxattr(f"{mnt}/d", "x-vt-archive-as", bad)
        assert e.value.errno == errno.EINVAL, bad
    with pytest.raises(OSError) as e:
        os.setxattr(f"{mnt}/d/f", "x-vt-archive-as", b"tar")
    assert e.value.errno == errno.EINVAL
    with open(f"{mnt}/backup.tar.real", "w") as f:
        f.write("real")
    os.rename(f"{mnt}/backup.tar.real", f"{mnt}/backup.tar")  # a real entry hides the view
    assert open(f"{mnt}/backup.tar").read() == "real"
    os.unlink(f"{mnt}/backup.tar")
    assert os.path.getsize(f"{mnt}/backup.tar") % 10240 == 0
    os.removexattr(f"{mnt}/d", "x-vt-archive-as")
    assert "backup.tar" not in os.listdir(mnt)
    # the kernel may keep the name for its entry timeout (1 s): then it is gone
    deadline = time.monotonic() + 3
    while os.path.exists(f"{mnt}/backup.tar") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"{mnt}/backup.tar")
    assert m.umount() == 0, m.output()


def test_vtd_view_and_vt_ar(place, mounts, tmp_path):
    store, archive, mnt = place
    src = str(tmp_path / "src")
    make_tree(src)
    vt("-S", store, "pack", "-a", archive, src)
    m = mounts(store, archive, mnt)
    os.setxattr(f"{mnt}/data", "x-vt-archive-as", b"vtd")
    assert "data.vtd" in os.listdir(mnt)
    copy = tmp_path / "copy.vtd"
    with open(f"{mnt}/data.vtd", "rb") as f, open(copy, "wb") as out:
        out.write(f.read())
    # the same octets from vt export --format vtd of the recorded state
    exported = tmp_path / "export.vtd"
    vt("-S", store, "export", "--format", "vtd", "-o", str(exported), archive + "/data")
    assert exported.read_bytes() == copy.read_bytes()
    assert m.umount() == 0, m.output()
    # the view opened as a file: store and unpacked: the directory, exactly
    top = vt("ar", "list", str(copy)).stdout.splitlines()[0]
    assert top.startswith("D{")
    out = str(tmp_path / "out")
    vt("-S", f"file:{copy}", "unpack", top, out)
    os.setxattr(f"{src}/data", "user.vt.archive-as", b"vtd")  # what the control stored
    assert rsync_diff(f"{src}/data", out) == []
    # vt ar: create from a directory on disk, list, extract
    bundle = str(tmp_path / "b.vtd")
    ref = vt("ar", "create", bundle, f"{src}/data").stdout.strip()
    listed = vt("ar", "list", bundle).stdout.splitlines()
    assert listed[0] == ref and "sub/f1" in listed and "sub/" in listed
    vt("ar", "extract", bundle, str(tmp_path / "x"))
    assert rsync_diff(f"{src}/data", str(tmp_path / "x")) == []
    r = vt("ar", "create", bundle, f"{src}/data", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    (tmp_path / "junk.vtd").write_bytes(b"junk")
    r = vt("ar", "list", str(tmp_path / "junk.vtd"), check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
