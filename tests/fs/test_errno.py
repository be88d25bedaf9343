"""The errno sweep: one call per error path, on the mount and on a tmpfs
directory side by side; every result and errno must match.

`test_posix.py` finds differences by random sequences; this module names each
error path once, so a regression says which one (ENAMETOOLONG from a lookup,
EOPNOTSUPP for an unknown xattr namespace, links of every type, ...).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile

import pytest

from .conftest import Mounted, needs_fuse

pytestmark = needs_fuse

LONG = "x" * 256  # one octet over NAME_MAX
MAX = "y" * 255  # exactly NAME_MAX
LONG_UTF8 = "é" * 128  # 256 octets in 128 characters


def _setup(r: str) -> None:
    os.mkdir(f"{r}/{MAX}")
    os.mkdir(f"{r}/full")
    with open(f"{r}/full/x", "w") as f:
        f.write("x")
    with open(f"{r}/f", "wb") as f:
        f.write(b"data")
    os.mkfifo(f"{r}/fifo")
    os.symlink("target", f"{r}/sl")
    os.mknod(f"{r}/sock", 0o600 | stat.S_IFSOCK)
    os.mknod(f"{r}/chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(f"{r}/blk", 0o600 | stat.S_IFBLK, os.makedev(7, 0))


def _close(fd: int) -> None:
    os.close(fd)


# (name, call on a root directory); run in this order on both roots
SWEEP = [
    ("lstat of a long name", lambda r: os.lstat(f"{r}/{LONG}")),
    ("lstat of a long UTF-8 name", lambda r: os.lstat(f"{r}/{LONG_UTF8}")),
    ("lstat of a long name below a dir", lambda r: os.lstat(f"{r}/{MAX}/{LONG}")),
    ("open of a long name", lambda r: _close(os.open(f"{r}/{LONG}", os.O_RDONLY))),
    ("create a long name", lambda r: _close(os.open(f"{r}/{LONG}", os.O_CREAT | os.O_WRONLY))),
    ("mkdir of a long name", lambda r: os.mkdir(f"{r}/{LONG}")),
    ("mkfifo of a long name", lambda r: os.mkfifo(f"{r}/{LONG}")),
    ("symlink to a long name", lambda r: os.symlink("t", f"{r}/{LONG}")),
    ("link to a long name", lambda r: os.link(f"{r}/f", f"{r}/{LONG}")),
    ("unlink of a long name", lambda r: os.unlink(f"{r}/{LONG}")),
    ("rmdir of a long name", lambda r: os.rmdir(f"{r}/{LONG}")),
    ("rename from a long name", lambda r: os.rename(f"{r}/{LONG}", f"{r}/z")),
    ("rename to a long name", lambda r: os.rename(f"{r}/f", f"{r}/{LONG}")),
    ("chmod of a long name", lambda r: os.chmod(f"{r}/{LONG}", 0o600)),
    ("getxattr of a long name", lambda r: os.getxattr(f"{r}/{LONG}", "user.a")),
    ("a name of 255 octets works", lambda r: os.lstat(f"{r}/{MAX}").st_mode),
    ("a path over PATH_MAX", lambda r: os.lstat(r + "/" + "/".join(["a" * 200] * 30))),
    # xattrs
    (
        "setxattr XATTR_CREATE on an existing name",
        lambda r: (
            os.setxattr(f"{r}/f", "user.a", b"1"),
            os.setxattr(f"{r}/f", "user.a", b"2", os.XATTR_CREATE),
        ),
    ),
    (
        "setxattr XATTR_REPLACE of a missing name",
        lambda r: os.setxattr(f"{r}/f", "user.b", b"1", os.XATTR_REPLACE),
    ),
    ("getxattr of a missing name", lambda r: os.getxattr(f"{r}/f", "user.missing")),
    ("removexattr of a missing name", lambda r: os.removexattr(f"{r}/f", "user.missing")),
    ("xattr name over 255 octets", lambda r: os.setxattr(f"{r}/f", "user." + "n" * 300, b"1")),
    ("xattr value over 64 KiB", lambda r: os.setxattr(f"{r}/f", "user.big", b"1" * 70_000)),
    (
        "user xattr on a symlink",
        lambda r: os.setxattr(f"{r}/sl", "user.a", b"1", follow_symlinks=False),
    ),
    (
        "user xattr on a fifo",
        lambda r: os.setxattr(f"{r}/fifo", "user.a", b"1", follow_symlinks=False),
    ),
    ("xattr of an unknown namespace", lambda r: os.setxattr(f"{r}/f", "foo.a", b"1")),
    ("getxattr of an unknown namespace", lambda r: os.getxattr(f"{r}/f", "foo.a")),
    ("removexattr of an unknown namespace", lambda r: os.removexattr(f"{r}/f", "foo.a")),
    (
        "trusted xattr",
        lambda r: (
            os.setxattr(f"{r}/f", "trusted.a", b"1"),
            os.getxattr(f"{r}/f", "trusted.a"),
        ),
    ),
    # directories and files in the wrong place
    ("open a directory for writing", lambda r: os.open(f"{r}/{MAX}", os.O_WRONLY)),
    ("truncate a directory", lambda r: os.truncate(f"{r}/{MAX}", 0)),
    ("readlink of a file", lambda r: os.readlink(f"{r}/f")),
    ("a file with a trailing slash", lambda r: os.open(f"{r}/f/", os.O_RDONLY)),
    ("mkdir below a file", lambda r: os.mkdir(f"{r}/f/x")),
    ("rename a dir over a file", lambda r: os.rename(f"{r}/{MAX}", f"{r}/f")),
    ("rename a file over a dir", lambda r: os.rename(f"{r}/f", f"{r}/{MAX}")),
    ("rename a dir over a non-empty dir", lambda r: os.rename(f"{r}/{MAX}", f"{r}/full")),
    ("rename a dir into itself", lambda r: os.rename(f"{r}/{MAX}", f"{r}/{MAX}/in")),
    ("rename of .", lambda r: os.rename(f"{r}/{MAX}/.", f"{r}/q")),
    ("rmdir of .", lambda r: os.rmdir(f"{r}/{MAX}/.")),
    ("rmdir of a file", lambda r: os.rmdir(f"{r}/f")),
    ("rmdir of a non-empty dir", lambda r: os.rmdir(f"{r}/full")),
    ("unlink of a dir", lambda r: os.unlink(f"{r}/{MAX}")),
    ("link of a dir", lambda r: os.link(f"{r}/{MAX}", f"{r}/dl")),
    ("link over an existing name", lambda r: os.link(f"{r}/f", f"{r}/fifo")),
    ("link from a missing name", lambda r: os.link(f"{r}/nope", f"{r}/n2")),
    ("O_EXCL of an existing file", lambda r: os.open(f"{r}/f", os.O_CREAT | os.O_EXCL)),
    ("O_DIRECTORY of a file", lambda r: os.open(f"{r}/f", os.O_RDONLY | os.O_DIRECTORY)),
    ("mkfifo over a file", lambda r: os.mkfifo(f"{r}/f")),
    ("utime of a missing name", lambda r: os.utime(f"{r}/nope")),
    ("chown of a missing name", lambda r: os.chown(f"{r}/nope", 1, 1)),
    ("open a fifo's missing sibling", lambda r: os.open(f"{r}/nope", os.O_RDONLY)),
]

# hard links to every non-directory (issue 19, item 1)
LINK_SWEEP = [
    ("link a fifo", lambda r: os.link(f"{r}/fifo", f"{r}/fifo2")),
    ("link a symlink", lambda r: os.link(f"{r}/sl", f"{r}/sl2", follow_symlinks=False)),
    ("link a socket", lambda r: os.link(f"{r}/sock", f"{r}/sock2")),
    ("link a char device", lambda r: os.link(f"{r}/chr", f"{r}/chr2")),
    ("link a block device", lambda r: os.link(f"{r}/blk", f"{r}/blk2")),
    (
        "link counts",
        lambda r: [
            os.lstat(f"{r}/{n}").st_nlink for n in ("fifo", "sl", "sock", "chr", "blk", "f")
        ],
    ),
    ("readlink through the second name", lambda r: os.readlink(f"{r}/sl2")),
    (
        "second names are the same inode",
        lambda r: [
            os.lstat(f"{r}/{n}").st_ino == os.lstat(f"{r}/{n}2").st_ino
            for n in ("fifo", "sl", "sock", "chr", "blk")
        ],
    ),
    (
        "rename over a linked symlink",
        lambda r: (
            os.symlink("other", f"{r}/sl3"),
            os.rename(f"{r}/sl3", f"{r}/sl2"),
            os.lstat(f"{r}/sl").st_nlink,
            os.readlink(f"{r}/sl2"),
        ),
    ),
    (
        "unlink one name of a linked fifo",
        lambda r: (
            os.unlink(f"{r}/fifo"),
            os.lstat(f"{r}/fifo2").st_nlink,
        ),
    ),
    (
        "chmod through one name shows on the other",
        lambda r: (
            os.chmod(f"{r}/chr2", 0o640),
            stat.S_IMODE(os.lstat(f"{r}/chr").st_mode),
        ),
    ),
]


def outcome(fn, root):
    try:
        return ("ok", fn(root))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("errno")
    m = Mounted(str(base / "store"), str(base / "tree.vt"), str(base / "mnt"))
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    ref = tempfile.mkdtemp(prefix="vt-errno-", dir=shm or str(base))
    try:
        for r in (m.mnt, ref):
            _setup(r)
        yield m.mnt, ref
    finally:
        shutil.rmtree(ref, ignore_errors=True)
        assert m.umount() == 0, m.output()


@pytest.mark.parametrize("what,call", SWEEP, ids=[w for w, _ in SWEEP])
def test_errno_matches_tmpfs(roots, what, call):
    mnt, ref = roots
    assert outcome(call, mnt) == outcome(call, ref), what


@pytest.mark.parametrize("what,call", LINK_SWEEP, ids=[w for w, _ in LINK_SWEEP])
def test_links_of_every_type_match_tmpfs(roots, what, call):
    mnt, ref = roots
    assert outcome(call, mnt) == outcome(call, ref), what
