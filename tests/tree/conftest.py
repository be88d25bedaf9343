"""Fixtures for tree tests: a rich real tree with every kind of entry."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest


def _set_acl(path: str, spec: str, default: bool = False) -> bool:
    if not shutil.which("setfacl"):
        return False
    args = ["setfacl", "-d", "-m", spec, path] if default else ["setfacl", "-m", spec, path]
    return subprocess.run(args, capture_output=True).returncode == 0


def make_rich_tree(root: str) -> dict:
    """Build a tree with every kind of entry under `root`; return what it holds."""
    os.makedirs(root)
    info = {"acl": False, "device": False}
    rnd = os.urandom
    with open(f"{root}/regular.txt", "w") as f:
        f.write("hello world\n" * 100)
    open(f"{root}/empty", "w").close()
    with open(f"{root}/large.bin", "wb") as f:
        f.write(rnd(3 * 1024 * 1024 + 17))
    with open(f"{root}/sparse.img", "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(1024 * 1024)
        f.write(rnd(5000))
        f.seek(6 * 1024 * 1024)
        f.write(b"tail data")
    os.symlink("regular.txt", f"{root}/link-to-regular")
    os.symlink("does/not/exist", f"{root}/dangling")
    os.makedirs(f"{root}/a/b")
    os.makedirs(f"{root}/c")
    with open(f"{root}/a/b/linked", "wb") as f:
        f.write(rnd(20000))
    os.link(f"{root}/a/b/linked", f"{root}/c/linked-again")
    os.link(f"{root}/a/b/linked", f"{root}/zz-third-name")
    os.mkfifo(f"{root}/fifo")
    for name, mode in [("setuid-file", 0o4755), ("setgid-file", 0o2750)]:
        with open(f"{root}/{name}", "w") as f:
            f.write(name)
        os.chmod(f"{root}/{name}", mode)
    for name, mode in [("sticky-dir", 0o1777), ("setgid-dir", 0o2775), ("ro-dir", 0o555)]:
        os.mkdir(f"{root}/{name}")
        with open(f"{root}/{name}/inside", "w") as f:
            f.write("x")
        os.chmod(f"{root}/{name}", mode)
    with open(f"{root}/with-xattrs", "w") as f:
        f.write("xattrs")
    os.setxattr(f"{root}/with-xattrs", "user.comment", b"a comment")
    os.setxattr(f"{root}/with-xattrs", "user.binary", bytes(range(256)))
    os.setxattr(f"{root}/with-xattrs", "user.mime_type", b"text/plain")
    with open(f"{root}/acl-file", "w") as f:
        f.write("acl")
    info["acl"] = _set_acl(f"{root}/acl-file", "u:nobody:r--")
    os.mkdir(f"{root}/acl-dir")
    if info["acl"]:
        _set_acl(f"{root}/acl-dir", "u:nobody:rwx", default=True)
    for odd in [
        "spaces in name",
        "new\nline",
        "ünïcödé ✓",
        "tab\there",
        "-dash",
        "'quote\"",
        "back\\slash",
        "{braces}",
    ]:
        with open(os.path.join(root, odd), "w") as f:
            f.write(odd)
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9\xff"), "w") as f:
        f.write("not utf-8 name")
    deep = root
    for i in range(40):
        deep = os.path.join(deep, f"d{i}")
    os.makedirs(deep)
    with open(os.path.join(deep, "bottom"), "w") as f:
        f.write("deep")
    if os.geteuid() == 0:
        try:
            os.mknod(f"{root}/null-dev", 0o666 | 0o020000, os.makedev(1, 3))
            info["device"] = True
        except OSError:
            pass
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(f"{root}/sock")
    except OSError:
        pass
    finally:
        s.close()
    os.utime(f"{root}/regular.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return info


@pytest.fixture
def rich_tree(tmp_path):
    root = str(tmp_path / "src")
    info = make_rich_tree(root)
    yield root, info
    subprocess.run(["chmod", "-R", "u+rwx", str(tmp_path)], capture_output=True)


def rsync_diff(src: str, dst: str) -> list[str]:
    """Lines of `rsync -aHAXc --dry-run --itemize-changes src/ dst/` (empty when identical)."""
    r = subprocess.run(
        ["rsync", "-aHAXc", "--dry-run", "--itemize-changes", f"{src}/", f"{dst}/"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.strip()]
