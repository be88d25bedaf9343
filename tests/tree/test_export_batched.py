"""The batched, threaded restore (`Exporter` with `store.get_many` batches and a
writing pool): damage still costs only its range, the tree comes back identical
(rsync -naHAXc) at tens of thousands of files, and memory stays bounded with a
1 GiB file.  Real datadirs, real files, real `vt` processes."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import resolve
from vtstore.tree.fsexport import BATCH_LEAVES, DAMAGED_SUFFIX, Exporter
from vtstore.tree.fsimport import import_tree

from .conftest import rsync_diff
from .test_restore_damage import corrupt_block, delete_blocks, leaf_hashcodes


class CountingStore:
    """A real store, forwarded, counting how blocks are asked for."""

    def __init__(self, store):
        self.store = store
        self.batches: list[int] = []
        self.single = 0

    def get_many(self, hs):
        hs = list(hs)
        self.batches.append(len(hs))
        return self.store.get_many(hs)

    def __getitem__(self, h):
        self.single += 1
        return self.store[h]

    def __getattr__(self, name):
        return getattr(self.store, name)


def _small_files(root, n, seed=3) -> None:
    rnd = random.Random(seed)
    for i in range(n):
        sub = os.path.join(root, f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(sub)
        with open(os.path.join(sub, f"f{i:05d}"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(0, 6000)))


@pytest.mark.parametrize("threads", [0, 2])
def test_a_damaged_leaf_inside_a_batch_costs_only_its_range(tmp_path, threads):
    src = tmp_path / "src"
    _small_files(str(src), 600)
    rnd = random.Random(5)
    big = rnd.randbytes(3 << 20)  # several leaves, stored plain (random)
    with open(src / "d003" / "big.bin", "wb") as f:
        f.write(big)
    dd = str(tmp_path / "dd")
    with DataDir(dd) as S:
        d, _ = import_tree(str(src), S)
        small = resolve(d, "d002/f00250", S)
        bigd = resolve(d, "d003/big.bin", S)
        small_leaves = leaf_hashcodes(small.block, S)
        big_leaves = leaf_hashcodes(bigd.block, S)
    assert len(small_leaves) == 1 and len(big_leaves) >= 3
    victim = big_leaves[1]
    delete_blocks(dd, small_leaves)  # a missing leaf amid hundreds of good ones
    corrupt_block(dd, victim)  # and a corrupt one in the middle of a big file
    out = tmp_path / "out"
    with DataDir(dd, readonly=True) as S:
        counting = CountingStore(S)
        stats = Exporter(counting, threads=threads).export(d, str(out))
    # batched: a few get_many calls for 600 files, each under the batch limit
    assert len(counting.batches) < 20, counting.batches
    assert max(counting.batches) <= BATCH_LEAVES + 1
    # the batches holding the damage were read again leaf by leaf, only they
    assert 0 < counting.single <= 2 * (BATCH_LEAVES + 1)
    assert sorted(x.path for x in stats.damaged) == ["d002/f00250", "d003/big.bin"]
    lost = {x.path: x.lost_bytes for x in stats.damaged}
    assert lost["d002/f00250"] == small.size
    with open(out / "d003" / ("big.bin" + DAMAGED_SUFFIX), "rb") as f:
        got = f.read()
    assert len(got) == len(big)
    # exactly one leaf's range is zeros, everything else is the file
    diff = [i for i in range(0, len(big), 4096) if got[i : i + 4096] != big[i : i + 4096]]
    assert diff, "the corrupt leaf was restored"
    first, last = diff[0], diff[-1] + 4096
    assert last - first <= lost["d003/big.bin"] + 8192
    assert got[:first] == big[:first] and got[last:] == big[last:]
    # every other file is whole, under its own name
    assert not os.path.exists(out / "d003" / "big.bin")
    rest = [x for x in rsync_diff(str(src), str(out)) if "f00250" not in x and "big.bin" not in x]
    assert rest == []
    assert stats.files == 601  # the damaged ones counted, as before


def _rich_big_tree(root: str, nfiles: int) -> None:
    """`nfiles` small files with varied modes, times and xattrs, hard links,
    symlinks, sparse files and empty ones, in directories of 200."""
    rnd = random.Random(9)
    for i in range(nfiles):
        sub = os.path.join(root, f"g{i // 5000}", f"d{(i // 200) % 25:02d}")
        if i % 200 == 0:
            os.makedirs(sub)
        p = os.path.join(sub, f"f{i:05d}")
        with open(p, "wb") as f:
            if i % 97 == 0:
                f.truncate(rnd.randint(2 << 20, 4 << 20))  # mostly hole
                f.seek(rnd.randint(0, 1 << 20))
                f.write(b"island")
            elif i % 13:
                f.write(rnd.randbytes(rnd.randint(0, 4000)))
        os.chmod(p, rnd.choice([0o644, 0o600, 0o755, 0o440, 0o664, 0o4755]))
        if i % 50 == 0:
            os.setxattr(p, "user.n", str(i).encode())
        if i % 500 == 1:
            os.link(p, os.path.join(root, f"link{i:05d}"))
        if i % 700 == 2:
            os.symlink(f"f{i:05d}", os.path.join(sub, f"sym{i:05d}"))
        t = 1_600_000_000 + i * 1000
        os.utime(p, ns=(t * 10**9 + 7, t * 10**9 + 11))
    for dirpath, dirs, _ in os.walk(root, topdown=False):
        for n in dirs:
            os.chmod(os.path.join(dirpath, n), 0o750)
            os.utime(os.path.join(dirpath, n), ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))


@pytest.mark.slow
def test_20k_files_come_back_identical(tmp_path):
    src = str(tmp_path / "src")
    _rich_big_tree(src, 20_000)
    dd = str(tmp_path / "dd")
    with DataDir(dd) as S:
        d, st = import_tree(src, S)
        assert not st.errors
    for threads in (2, 0):
        out = str(tmp_path / f"out{threads}")
        with DataDir(dd, readonly=True) as S:
            stats = Exporter(S, threads=threads).export(d, out)
        assert not stats.errors and not stats.damaged
        assert stats.files == 20_000 + 40
        assert rsync_diff(src, out) == []
        # holes stay holes
        sparse = os.path.join("g0", "d00", "f00097")
        assert os.stat(os.path.join(out, sparse)).st_size > 2 << 20
        assert os.stat(os.path.join(out, sparse)).st_blocks * 512 < 256 << 10
        subprocess.run(["rm", "-rf", out], check=True)


@pytest.mark.slow
def test_1gib_file_restores_in_bounded_memory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "one.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 << 20))
    dd = str(tmp_path / "dd")
    vt = [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", dd]
    subprocess.run([*vt, "pack", str(src)], check=True, capture_output=True)
    out = tmp_path / "out"
    r = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *vt, "unpack", str(tmp_path / "src.vt"), str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rss_mib = int(r.stderr.strip().splitlines()[-1]) / 1024
    print(f"peak RSS of vt unpack of a 1 GiB file: {rss_mib:.0f} MiB")
    assert rss_mib < 100
    assert os.path.getsize(out / "one.bin") == 1 << 30
    cmp = subprocess.run(["cmp", str(src / "one.bin"), str(out / "one.bin")])
    assert cmp.returncode == 0


def _modes_tree(root) -> None:
    os.makedirs(os.path.join(root, "sub"))
    for i, mode in enumerate([0o644, 0o664, 0o600, 0o755, 0o444, 0o640, 0o4755, 0o2750]):
        p = os.path.join(root, "sub" if i % 2 else "", f"m{i}")
        with open(p, "wb") as f:
            f.write(b"x" * i)
        os.chmod(p, mode)
        os.utime(p, ns=(10**18 + i, 10**18 + i))


def test_setgid_target_does_not_pass_its_group_on(tmp_path):
    # new files in a setgid directory take its group: the chown that a fresh
    # file "does not need" is needed there
    src = tmp_path / "src"
    _modes_tree(str(src))
    S = DataDir(str(tmp_path / "dd"))
    with S:
        d, _ = import_tree(str(src), S)
        out = tmp_path / "out"
        out.mkdir()
        os.chown(out, 0, 65534)
        os.chmod(out, 0o2775)
        Exporter(S).export(d, str(out))
    for dirpath, _, names in os.walk(out):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            assert (st.st_uid, st.st_gid) == (0, 0), n
    # all but the target itself (its mode and group were set here) is identical
    assert [x for x in rsync_diff(str(src), str(out)) if not x.endswith(" ./")] == []


@pytest.fixture
def open_tmp():
    """A directory another user can reach (pytest's are root's, 0700)."""
    top = tempfile.mkdtemp(prefix="vt-export-")
    os.chmod(top, 0o777)
    yield Path(top)
    shutil.rmtree(top)


def test_another_user_gets_modes_and_times(open_tmp):
    # as nobody (umask 022): fresh files skip chown, and chmod only where the
    # umask took bits away
    tmp_path = open_tmp
    src = tmp_path / "src"
    _modes_tree(str(src))
    dd = tmp_path / "dd"
    vt = [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(dd)]
    subprocess.run([*vt, "pack", str(src)], check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", str(dd), str(tmp_path / "src.vt")], check=True)
    out = tmp_path / "out"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    old = os.umask(0o022)  # inherited: the umask takes 0o020 from 0o664
    try:
        r = subprocess.run(
            [*nobody, *vt, "unpack", str(tmp_path / "src.vt"), str(out)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("VT_")}
            | {"HOME": str(tmp_path)},
        )
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    for dirpath, _, names in os.walk(src):
        for n in names:
            a = os.lstat(os.path.join(dirpath, n))
            b = os.lstat(os.path.join(out, os.path.relpath(dirpath, src), n))
            assert (b.st_uid, b.st_gid) == (65534, 65534)
            assert b.st_mode == a.st_mode, n
            assert b.st_mtime_ns == a.st_mtime_ns and b.st_size == a.st_size


@pytest.mark.parametrize("threads", [0, 2])
def test_multi_leaf_files_have_their_index_blocks_read_in_batches(tmp_path, threads):
    """A directory of 300 files of a few leaves each: their top indirect
    blocks are read with a few get_many, not one store lookup a file; the
    tree comes back byte for byte."""
    src = tmp_path / "src"
    rnd = random.Random(8)
    for i in range(300):
        sub = src / f"d{i // 150}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}").write_bytes(rnd.randbytes(rnd.randint(20_000, 60_000)))
    dd = str(tmp_path / "dd")
    with DataDir(dd) as S:
        d, _ = import_tree(str(src), S)
    out = tmp_path / "out"
    with DataDir(dd, readonly=True) as S:
        counting = CountingStore(S)
        Exporter(counting, threads=threads).export(d, str(out))
    # was 310: one a file, and the directories' data blocks (those still are)
    assert counting.single < 20, counting.single
    for p in src.rglob("f*"):
        assert (out / p.relative_to(src)).read_bytes() == p.read_bytes()
