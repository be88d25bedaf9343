"""`vt unpack` / `vt export` as a user runs them: past a really damaged datadir,
--resume after a real `kill -9`, --max-size/--max-files against hostile trees,
--safe as root, hard links across subtrees, 1,000-level trees."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from vtstore.archive import Archive
from vtstore.blocks import LiteralBlock, RLEBlock
from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import make_dir, resolve
from vtstore.tree.dirent import T_FILE, Dirent

from ..tree.conftest import rsync_diff
from ..tree.test_restore_damage import (
    _bomb,
    corrupt_block,
    delete_blocks,
    leaf_hashcodes,
    make_tree,
    read_tree,
)


def vt(store, *args, check=True, **kw):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), *args],
        capture_output=True,
        **kw,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    return r


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


def test_unpack_and_export_go_on_past_damage(store, tmp_path):
    src = str(tmp_path / "src")
    files = make_tree(src)
    vt(store, "pack", src)
    d = Archive(src + ".vt").last().dirent
    with DataDir(store, readonly=True) as s:
        big = resolve(d, "d3/f007", s)
        missing = leaf_hashcodes(big.block, s)[2]
        one = resolve(d, "d1/f013", s).block.hashcode
    delete_blocks(store, [missing])
    corrupt_block(store, one)

    out = tmp_path / "out"
    r = vt(store, "unpack", src + ".vt", str(out), check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1, err
    assert re.match(r"vt unpack: 40 files restored, 2 damaged: d1/f013 \(corrupt block ", err), err
    assert f"d3/f007 (missing block {missing} (bytes " in err
    got = read_tree(out)
    for rel, data in files.items():
        if rel in ("d3/f007", "d1/f013"):
            assert rel not in got and len(got[rel + ".vt-damaged"]) == len(data)
        else:
            assert got[rel] == data, rel

    r = vt(store, "unpack", "--json", src + ".vt", str(tmp_path / "out2"), check=False)
    summary = json.loads(r.stdout)
    assert r.returncode == 1 and summary["files"] == 40
    assert {x["path"] for x in summary["damaged"]} == {"d3/f007", "d1/f013"}
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-v", "-S", str(store), "unpack"]
        + [src + ".vt", str(tmp_path / "out3")],
        capture_output=True,
        text=True,
    )
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and lines[-1].startswith("vt unpack: 40 files restored, 2 damaged")
    assert sorted(x.split(": ")[2] for x in lines if x.startswith("vt unpack: damaged: ")) == [
        "d1/f013",
        "d3/f007",
    ]

    # the blocks come back (fsck --repair drops the corrupt one, saving the two
    # files again adds both): --resume restores them whole, keeps the rest
    r = vt(store, "fsck", "--repair", check=False)
    assert r.returncode == 1, r.stderr
    vt(store, "save", f"{src}/d3/f007", f"{src}/d1/f013")
    r = vt(store, "unpack", "--resume", "--json", src + ".vt", str(out))
    assert json.loads(r.stdout)["skipped"] == 38
    assert read_tree(out) == files

    delete_blocks(store, [missing])
    corrupt_block(store, one)
    tar = tmp_path / "t.tar"
    r = vt(store, "export", src + ".vt", "-o", str(tar), check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and "40 files exported, 2 damaged" in err, err
    with tarfile.open(tar) as tf:
        got = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    for rel, data in files.items():
        assert len(got[rel]) == len(data)
        assert (got[rel] == data) == (rel not in ("d3/f007", "d1/f013")), rel


def _big_tree(root, nfiles=2500) -> None:
    rnd = random.Random(3)
    for i in range(nfiles):
        sub = os.path.join(root, f"dir{i % 25:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"file{i:05d}"), "wb") as f:
            f.write(rnd.randbytes(20_000 + i * 7))
    for i in range(4):
        with open(os.path.join(root, f"large{i}"), "wb") as f:
            f.write(rnd.randbytes(25 << 20))
    os.link(os.path.join(root, "large0"), os.path.join(root, "dir24", "zz-link"))
    os.symlink("large1", os.path.join(root, "sym"))


@pytest.mark.slow
def test_resume_after_kill_9(store, tmp_path):
    src = str(tmp_path / "src")
    _big_tree(src)
    vt(store, "pack", src)
    out = tmp_path / "out"
    p = subprocess.Popen(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), "unpack"]
        + [src + ".vt", str(out)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if out.exists() and sum(len(f) for _, _, f in os.walk(out)) > 800:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the unpack ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()
    assert rsync_diff(src, str(out)) != []
    r = vt(store, "unpack", src + ".vt", str(out), check=False)
    assert r.returncode == 1 and b"not empty" in r.stderr
    (out / "dir00").mkdir(exist_ok=True)
    (out / "dir00" / ".vt-part-0123456789ab").write_bytes(b"left by a killed --resume")
    r = vt(store, "unpack", "--resume", "--json", src + ".vt", str(out))
    summary = json.loads(r.stdout)
    assert summary["skipped"] >= 700 and summary["files"] == 2505, summary
    assert rsync_diff(src, str(out)) == []
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.startswith(".vt-part-")]

    # a file changed in place with its size and mtime kept: the quick check keeps
    # it, =verify finds it and rewrites it
    victim = out / "dir03" / "file00003"
    st = victim.stat()
    with open(victim, "r+b") as f:
        f.write(b"tampered")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = json.loads(vt(store, "unpack", "--continue", "--json", src + ".vt", str(out)).stdout)
    assert summary["skipped"] == 2505 + 1  # and the symlink
    assert victim.read_bytes().startswith(b"tampered")
    r = vt(store, "unpack", "--resume", "--verify", "--json", src + ".vt", str(out))
    assert json.loads(r.stdout)["skipped"] == 2505
    assert rsync_diff(src, str(out)) == []


@pytest.fixture
def deep_out(tmp_path):
    """A target for a deep tree, removed by `rm -rf`: pytest's cleanup recurses."""
    out = tmp_path / "out"
    yield out
    subprocess.run(["rm", "-rf", str(out)], check=True)


def _ref_store(store, build) -> str:
    with DataDir(store) as s:
        return str(build(s))


def test_limits_stop_hostile_trees(store, tmp_path):
    bomb = _ref_store(store, _bomb)  # 10**8 files in 80 directory entries
    t0 = time.monotonic()
    r = vt(store, "unpack", bomb, str(tmp_path / "out"), check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and "more than 10,000,000 entries (--max-files)" in err, err
    assert err.count("\n") == 1
    r = vt(store, "export", bomb, "-o", str(tmp_path / "t.tar"), check=False)
    assert r.returncode == 1 and b"--max-files" in r.stderr
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")

    small = _ref_store(store, lambda s: _bomb(s, levels=3, fan=5))
    r = vt(store, "unpack", "--max-files", "100", small, str(tmp_path / "s1"), check=False)
    assert r.returncode == 1 and b"more than 100 entries" in r.stderr
    vt(store, "unpack", "--max-files", "0", small, str(tmp_path / "s2"))
    assert sum(len(f) for _, _, f in os.walk(tmp_path / "s2")) == 125

    def sparse(s):
        return make_dir([Dirent(T_FILE, name="zeros", block=RLEBlock(1 << 50))], s)

    huge = _ref_store(store, sparse)  # a 1 PiB file: more than this disk holds
    r = vt(store, "unpack", huge, str(tmp_path / "h"), check=False)
    assert r.returncode == 1 and b"--max-size" in r.stderr, r.stderr
    r = vt(store, "export", huge, "-o", str(tmp_path / "h.tar"), check=False)
    assert r.returncode == 1 and b"--max-size" in r.stderr, r.stderr
    ten = _ref_store(
        store, lambda s: make_dir([Dirent(T_FILE, name="z", block=RLEBlock(10 << 20))], s)
    )
    r = vt(store, "unpack", "--max-size", "1M", ten, str(tmp_path / "t1"), check=False)
    assert r.returncode == 1 and b"1,048,576 bytes" in r.stderr
    vt(store, "unpack", "--max-size", "none", ten, str(tmp_path / "t2"))
    assert (tmp_path / "t2" / "z").stat().st_size == 10 << 20
    r = vt(store, "unpack", "--max-size", "12Q", ten, str(tmp_path / "t3"), check=False)
    assert r.returncode == 1 and r.stderr.startswith(b"vt unpack: bad size '12Q'")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (device nodes, capabilities)")
def test_safe_as_root(store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (src / "suid").write_text("#!/bin/sh\n")
    os.chmod(src / "suid", 0o4755)
    (src / "capped").write_text("cap")
    cap = bytes.fromhex("0100000200040000000000000000000000000000")
    os.setxattr(src / "capped", "security.capability", cap)
    vt(store, "pack", str(src))
    full = tmp_path / "full"
    vt(store, "unpack", str(src) + ".vt", str(full))
    assert rsync_diff(str(src), str(full)) == []
    assert os.getxattr(full / "capped", "security.capability") == cap
    safe = tmp_path / "safe"
    r = vt(store, "unpack", "--safe", "--json", str(src) + ".vt", str(safe))
    assert json.loads(r.stdout)["unsafe_skipped"] == 1
    assert sorted(os.listdir(safe)) == ["capped", "suid"]
    assert os.stat(safe / "suid").st_mode & 0o7777 == 0o755
    assert "security.capability" not in os.listxattr(safe / "capped")


def test_hard_link_whose_file_is_outside_the_subtree(store, tmp_path):
    src = tmp_path / "x"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "f").write_bytes(b"linked " * 5000)
    os.link(src / "a" / "f", src / "b" / "g")
    vt(store, "pack", str(src))
    out = tmp_path / "out"
    vt(store, "unpack", f"{src}.vt/b", str(out))
    assert os.listdir(out) == ["g"] and (out / "g").read_bytes() == b"linked " * 5000
    vt(store, "export", f"{src}.vt/b", "-o", str(tmp_path / "b.tar"))
    with tarfile.open(tmp_path / "b.tar") as tf:
        assert tf.extractfile("g").read() == b"linked " * 5000


def test_thousand_level_tree(store, tmp_path, deep_out):
    def deep(s):
        d = make_dir([Dirent(T_FILE, name="bottom", block=LiteralBlock(b"deep"))], s, name="d999")
        for i in reversed(range(999)):
            d = make_dir([d], s, name=f"d{i}")
        return make_dir([d], s)

    ref = _ref_store(store, deep)

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    out = deep_out
    vt(store, "unpack", ref, str(out), preexec_fn=few_fds)
    r = subprocess.run(["find", str(out), "-name", "bottom"], capture_output=True, text=True)
    assert r.stdout.strip().count("/d") == 1000
    vt(store, "export", ref, "-o", str(tmp_path / "deep.tar"), preexec_fn=few_fds)
    with tarfile.open(tmp_path / "deep.tar") as tf:
        names = tf.getnames()
    assert len(names) == 1002 and names[-1].endswith("/d999/bottom")
    assert sum(1 for n in names if n.count("/") == 999) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_full_disk_stops_the_restore(store, tmp_path):
    """ENOSPC is not damage: the restore stops at once with one clear line."""
    src = str(tmp_path / "src")
    make_tree(src)  # 40 files, 4.4 MB
    vt(store, "pack", src)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        # the default --max-size (the free space) refuses before writing anything
        r = vt(store, "unpack", src + ".vt", str(small / "out"), check=False)
        assert r.returncode == 1 and b"--max-size" in r.stderr, r.stderr
        assert not (small / "out").exists() or not os.listdir(small / "out")
        r = vt(store, "unpack", "--max-size", "none", src + ".vt", str(small / "out"), check=False)
        err = r.stderr.decode()
        assert r.returncode == 1 and err.count("\n") == 1, err
        assert "No space left on device" in err and "damaged" not in err
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops capabilities from root")
def test_an_object_the_target_refuses_is_reported_and_the_rest_restored(store, tmp_path):
    """Root without CAP_MKNOD (as in a container): the device node cannot be made;
    that is reported in the summary, everything else is restored, exit 1."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (src / "z").write_text("z")
    vt(store, "pack", str(src))
    out = tmp_path / "out"
    r = subprocess.run(
        ["setpriv", "--bounding-set=-mknod", sys.executable, "-m", "vtstore.cli.main", "-q"]
        + ["-S", str(store), "unpack", f"{src}.vt", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and r.stderr == (
        "vt unpack: 2 files restored, 1 could not be restored: null: Operation not permitted\n"
    )
    assert sorted(os.listdir(out)) == ["a", "z"]
