"""POSIX conformance: random operation sequences on the mount and on a tmpfs
(or tmp) directory side by side; every result, errno included, must match."""

from __future__ import annotations

import itertools
import os
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from .conftest import Mounted, needs_fuse

pytestmark = needs_fuse

NAMES = ["a", "b", "c", "d0", "d1", "d0/a", "d0/b", "d1/c", "d0/d1", "d0/d1/a"]
# a name of NAME_MAX octets works, one octet more is ENAMETOOLONG in every call
NAMES += ["d0/" + "m" * 255, "d1/" + "l" * 256]
paths = st.sampled_from(NAMES)
_counter = itertools.count()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("posix")
    m = Mounted(
        str(base / "store"), str(base / "tree.vt"), str(base / "mnt"), "--sync-interval", "2"
    )
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    ref = tempfile.mkdtemp(prefix="vt-posix-", dir=shm or str(base))
    yield m.mnt, ref
    import shutil

    shutil.rmtree(ref, ignore_errors=True)
    assert m.umount() == 0, m.output()


def outcome(fn, *a):
    try:
        return ("ok", fn(*a))
    except OSError as e:
        return ("err", e.errno)


def stat_of(p):
    st_ = os.lstat(p)
    rec = [stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_gid]
    if stat.S_ISREG(st_.st_mode):
        rec += [st_.st_size]
    if not stat.S_ISDIR(st_.st_mode):
        rec += [st_.st_nlink, os.readlink(p) if stat.S_ISLNK(st_.st_mode) else None]
    return tuple(rec)


def read_all(p):
    with open(p, "rb") as f:
        return f.read()


def pwrite(p, off, data):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def unlink_while_open(p, data):
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        os.pwrite(fd, data, 3)
        os.lseek(fd, 0, os.SEEK_SET)
        got = os.read(fd, 1 << 20)
        return got, os.fstat(fd).st_nlink
    finally:
        os.close(fd)


def readdir_deleting(d):
    """List `d` while removing one of its files: each name is seen at most once,
    every name that stays is seen, and the removed one may or may not be."""
    files = sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)))
    victim = files[0] if files else None
    seen = []
    with os.scandir(d) as it:
        for e in it:
            if victim is not None and not seen:
                os.unlink(os.path.join(d, victim))
            seen.append(e.name)
    remaining = set(os.listdir(d))
    assert len(seen) == len(set(seen)), seen
    assert remaining <= set(seen) <= remaining | {victim}, (seen, remaining)
    return sorted(remaining)


class Compare(RuleBasedStateMachine):
    roots: tuple[str, str] = ("", "")

    @initialize()
    def fresh(self):
        n = next(_counter)
        self.dirs = []
        for r in self.roots:
            d = os.path.join(r, f"case{n}")
            os.mkdir(d)
            self.dirs.append(d)

    def both(self, fn, *paths_and_args, npaths=1):
        res = []
        for d in self.dirs:
            args = [os.path.join(d, p) for p in paths_and_args[:npaths]] + list(
                paths_and_args[npaths:]
            )
            res.append(outcome(fn, *args))
        assert res[0] == res[1], (
            f"{getattr(fn, '__name__', fn)}{paths_and_args}: mount {res[0]} != ref {res[1]}"
        )
        return res[0]

    def openable(self, p) -> bool:
        """Opening a fifo would block, a device is nodev on the mount: not tried."""
        try:
            mode = os.stat(os.path.join(self.dirs[1], p)).st_mode
        except OSError:
            return True
        return not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode))

    @rule(p=paths, off=st.integers(0, 200_000), data=st.binary(min_size=1, max_size=5000))
    def write(self, p, off, data):
        assume(self.openable(p))
        self.both(pwrite, p, off, data)

    @rule(p=paths, n=st.integers(0, 300_000))
    def truncate(self, p, n):
        self.both(os.truncate, p, n)

    @rule(p=paths)
    def mkdir(self, p):
        self.both(os.mkdir, p)

    @rule(p=paths)
    def rmdir(self, p):
        self.both(os.rmdir, p)

    @rule(p=paths)
    def unlink(self, p):
        self.both(os.unlink, p)

    @rule(a=paths, b=paths)
    def rename(self, a, b):
        self.both(os.rename, a, b, npaths=2)

    @rule(a=paths, b=paths)
    def link(self, a, b):
        # every non-directory: files, symlinks (the link itself), fifos, sockets
        self.both(lambda s, d: os.link(s, d, follow_symlinks=False), a, b, npaths=2)

    @rule(p=paths, kind=st.sampled_from([stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR]))
    def mknod(self, p, kind):
        self.both(os.mknod, p, 0o640 | kind, os.makedev(1, 7) if kind == stat.S_IFCHR else 0)

    @rule(a=paths, b=paths)
    def symlink(self, a, b):
        self.both(lambda t, link: os.symlink(a, link), a, b, npaths=2)

    @rule(p=paths, data=st.binary(min_size=1, max_size=100))
    def unlink_open_file(self, p, data):
        assume(self.openable(p))
        self.both(unlink_while_open, p, data)

    @rule(p=paths, mode=st.integers(0, 0o7777))
    def chmod(self, p, mode):
        self.both(os.chmod, p, mode)

    @rule(p=paths, t=st.integers(0, 2**40))
    def utime(self, p, t):
        self.both(lambda q: os.utime(q, ns=(t, t), follow_symlinks=False), p)
        self.both(lambda q: os.lstat(q).st_mtime_ns, p)

    @rule(p=paths, name=st.sampled_from(["user.x", "user.y"]), v=st.binary(max_size=50))
    def setxattr(self, p, name, v):
        self.both(lambda q: os.setxattr(q, name, v, follow_symlinks=False), p)

    @rule(p=paths, name=st.sampled_from(["user.x", "user.y"]))
    def removexattr(self, p, name):
        self.both(lambda q: os.removexattr(q, name, follow_symlinks=False), p)

    @rule(p=paths)
    def xattrs(self, p):
        self.both(
            lambda q: sorted(
                (n, os.getxattr(q, n, follow_symlinks=False))
                for n in os.listxattr(q, follow_symlinks=False)
                if n.startswith("user.")
            ),
            p,
        )

    @rule(p=st.sampled_from(["", "d0", "d1", "d0/d1"]))
    def readdir_during_delete(self, p):
        self.both(readdir_deleting, p)

    @rule(p=paths)
    def read(self, p):
        assume(self.openable(p))
        self.both(read_all, p)

    @precondition(lambda self: hasattr(self, "dirs"))
    @invariant()
    def same_tree(self):
        def tree(d):
            out = []
            for dirpath, dirnames, filenames in os.walk(d):
                for n in sorted(dirnames + filenames):
                    p = os.path.join(dirpath, n)
                    out.append((os.path.relpath(p, d), stat_of(p)))
            return sorted(out)

        assert tree(self.dirs[0]) == tree(self.dirs[1])


def test_posix_against_reference(roots):
    from hypothesis.stateful import run_state_machine_as_test

    Compare.roots = roots
    run_state_machine_as_test(
        Compare,
        settings=settings(
            max_examples=int(os.environ.get("VT_POSIX_EXAMPLES", "40")),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
