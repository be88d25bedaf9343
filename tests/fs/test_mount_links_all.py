"""Hard links to every non-directory through a real mount (issue 19, item 1).

Fifos, sockets, devices and symlinks get several names with `link(2)`: link
counts and inode numbers agree across names, ctime moves on link, unlink and
rename over a name, the state recorded at unmount unpacks to the same links,
a remount reads them back, and a packed tree with such links mounts right
(`rsync -naHAXc` between the source and the mount finds nothing).
"""

from __future__ import annotations

import os
import stat
import time

from .conftest import needs_fuse, rsync_diff, vt

pytestmark = needs_fuse

KINDS = {
    "fifo": (stat.S_IFIFO, 0),
    "socket": (stat.S_IFSOCK, 0),
    "chr": (stat.S_IFCHR, os.makedev(1, 3)),
    "blk": (stat.S_IFBLK, os.makedev(7, 9)),
}


def make_objects(root: str) -> None:
    os.makedirs(f"{root}/a", exist_ok=True)
    os.makedirs(f"{root}/b", exist_ok=True)
    for k, (fmt, dev) in KINDS.items():
        os.mknod(f"{root}/a/{k}", 0o640 | fmt, dev)
    os.symlink("../target", f"{root}/a/symlink")
    with open(f"{root}/a/file", "wb") as f:
        f.write(b"content")


NAMES = [*KINDS, "symlink", "file"]


def test_links_of_every_type_through_the_mount(place, mounts, tmp_path):
    store, archive, mnt = place
    m = mounts(store, archive, mnt)
    make_objects(mnt)
    ref = str(tmp_path / "ref")  # the same steps on a local filesystem
    make_objects(ref)
    for root in (mnt, ref):
        for k in NAMES:
            before = os.lstat(f"{root}/a/{k}").st_ctime_ns
            time.sleep(0.02)
            os.link(f"{root}/a/{k}", f"{root}/b/{k}-2", follow_symlinks=False)
            os.link(f"{root}/a/{k}", f"{root}/{k}-3", follow_symlinks=False)
            st1, st2 = os.lstat(f"{root}/a/{k}"), os.lstat(f"{root}/b/{k}-2")
            assert st1.st_ino == st2.st_ino and st1.st_nlink == st2.st_nlink == 3, (root, k)
            assert st1.st_ctime_ns > before, (root, k, "link must change ctime")
            # unlink of one name: the others count one less, ctime moves
            before = st1.st_ctime_ns
            time.sleep(0.02)
            os.unlink(f"{root}/{k}-3")
            st = os.lstat(f"{root}/b/{k}-2")
            assert st.st_nlink == 2 and st.st_ctime_ns > before, (root, k)
        # rename over a name of a group: the group loses that name
        os.symlink("elsewhere", f"{root}/new")
        os.rename(f"{root}/new", f"{root}/b/symlink-2")
        assert os.lstat(f"{root}/a/symlink").st_nlink == 1
        assert os.readlink(f"{root}/b/symlink-2") == "elsewhere"
        # rename of a name of a group keeps it in the group
        os.rename(f"{root}/b/fifo-2", f"{root}/fifo-moved")
        assert os.lstat(f"{root}/fifo-moved").st_nlink == 2
    assert rsync_diff(ref, mnt, times=False) == []
    assert m.umount() == 0, m.output()

    out = str(tmp_path / "out")
    vt("-S", store, "unpack", archive, out)
    assert rsync_diff(ref, out, times=False) == []
    for k in NAMES:
        assert os.lstat(f"{out}/a/{k}").st_nlink == (1 if k == "symlink" else 2), k

    mnt2 = str(tmp_path / "mnt2")
    m2 = mounts(store, archive, mnt2, "-r")
    assert rsync_diff(ref, mnt2, times=False) == []
    a, b = os.lstat(f"{mnt2}/a/chr"), os.lstat(f"{mnt2}/b/chr-2")
    assert a.st_ino == b.st_ino and a.st_nlink == 2 and a.st_rdev == os.makedev(1, 3)
    assert m2.umount() == 0, m2.output()


def test_packed_links_of_every_type_mount_and_repack(place, mounts, tmp_path):
    store, archive, mnt = place
    src = str(tmp_path / "src")
    make_objects(src)
    for k in NAMES:
        os.link(f"{src}/a/{k}", f"{src}/b/{k}-2", follow_symlinks=False)
    vt("-S", store, "pack", "-a", archive, src)
    m = mounts(store, archive, mnt)
    assert rsync_diff(src, mnt) == []
    for k in NAMES:
        a, b = os.lstat(f"{mnt}/a/{k}"), os.lstat(f"{mnt}/b/{k}-2")
        assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2, k
    # a change through one name shows through the other, and is stored
    os.chmod(f"{mnt}/b/fifo-2", 0o600)
    assert stat.S_IMODE(os.lstat(f"{mnt}/a/fifo").st_mode) == 0o600
    assert m.umount() == 0, m.output()
    out = str(tmp_path / "out")
    vt("-S", store, "unpack", archive, out)
    os.chmod(f"{src}/a/fifo", 0o600)
    assert rsync_diff(src, out) == []
