"""Restores past damage, at any depth, within limits: `Exporter` and `write_tar`
over real datadirs with blocks really deleted from the index or really flipped
in the data files."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
import time

import pytest

from vtstore.blocks import IndirectBlock, LiteralBlock, RLEBlock
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir, resolve, walk
from vtstore.tree.dirent import T_DIR, T_FILE, T_HARDLINK, Dirent
from vtstore.tree.fsexport import DAMAGED_SUFFIX, Exporter, export_tree
from vtstore.tree.fsimport import import_tree
from vtstore.tree.links import LinkResolver
from vtstore.tree.salvage import LEAF, LimitError, iter_content, tree_totals
from vtstore.tree.tar import write_tar

# -- damaging a real datadir ---------------------------------------------------


def delete_blocks(dd, hashcodes) -> None:
    """Make blocks missing: drop their index entries (what fsck --repair does to
    blocks that fail their check)."""
    with DataDir(dd) as s:
        s._index.commit(delete=list(hashcodes))
    with DataDir(dd, readonly=True) as s:
        assert not any(h in s for h in hashcodes)


def corrupt_block(dd, h) -> None:
    """Flip a byte of a stored (uncompressed) block in its data file."""
    with DataDir(dd, readonly=True) as s:
        e = s._index.get(h)
        path = s.data_file_path(s._index.files()[e.filenum])
    assert e.flags & 3 == 0, "the test wants a block stored plain (random data)"
    with open(path, "r+b") as f:
        f.seek(e.payload_offset + e.data_offset + e.data_length // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x5A]))


def leaf_hashcodes(block, store) -> list:
    return [
        v[0].hashcode for k, _, v in iter_content(block, store, fetch_leaves=False) if k == LEAF
    ]


def make_tree(root, nfiles=40, seed=1) -> dict[str, bytes]:
    """`nfiles` files of random content (stored plain), 20 bytes to 400 KB, in 4 dirs."""
    rnd = random.Random(seed)
    files = {}
    for i in range(nfiles):
        rel = f"d{i % 4}/f{i:03d}"
        size = [20, 3000, 40_000, 400_000][i % 4] + i
        data = rnd.randbytes(size)
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
        files[rel] = data
    return files


def read_tree(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture
def packed(tmp_path):
    """A 40-file tree packed into a real datadir: (src, dd, dirent, files)."""
    src = str(tmp_path / "src")
    files = make_tree(src)
    dd = tmp_path / "dd"
    with DataDir(dd) as s:
        d, _ = import_tree(src, s)
    return src, dd, d, files


def test_restore_goes_on_past_missing_and_corrupt_blocks(packed, tmp_path):
    src, dd, d, files = packed
    with DataDir(dd, readonly=True) as s:
        big = resolve(d, "d3/f007", s)  # 400 KB: an indirect block over leaves
        assert isinstance(big.block, IndirectBlock)
        leaves = leaf_hashcodes(big.block, s)
        one = resolve(d, "d1/f013", s)  # 3 KB: one leaf
        whole = resolve(d, "d3/f011", s)  # its indirect block goes: all of it
        mid = resolve(d, "d2/f018", s)
    delete_blocks(dd, [leaves[1], whole.block.hashcode])
    corrupt_block(dd, one.block.hashcode)
    corrupt_block(dd, leaf_hashcodes(mid.block, DataDir(dd, readonly=True))[0])
    damaged = {"d3/f007", "d1/f013", "d3/f011", "d2/f018"}
    out = tmp_path / "out"
    with DataDir(dd, readonly=True) as s:
        stats = export_tree(d, s, str(out))
    got = read_tree(out)
    # every undamaged file is there, byte-exact; the damaged ones only as .vt-damaged
    for rel, data in files.items():
        if rel in damaged:
            assert rel not in got
            assert len(got[rel + DAMAGED_SUFFIX]) == len(data)
        else:
            assert got[rel] == data, rel
    assert {x.path for x in stats.damaged} == damaged
    assert stats.files == 40 and not stats.errors
    by_path = {x.path: x for x in stats.damaged}
    assert str(leaves[1]) in by_path["d3/f007"].what[0] and "missing" in by_path["d3/f007"].what[0]
    assert "corrupt" in by_path["d1/f013"].what[0]
    assert by_path["d3/f011"].lost_bytes == len(files["d3/f011"])
    # a damaged file holds every readable range; the unreadable one is a hole of zeros
    part = got["d3/f007" + DAMAGED_SUFFIX]
    with DataDir(dd, readonly=True) as s:
        pieces = list(iter_content(big.block, s, fetch_leaves=False))
    start = pieces[0][1]
    n = pieces[1][1]
    assert part[:start] == files["d3/f007"][:start]
    assert part[start : start + n] == bytes(n)
    assert part[start + n :] == files["d3/f007"][start + n :]


def test_tar_goes_on_past_damage_with_zeros(packed, tmp_path):
    src, dd, d, files = packed
    with DataDir(dd, readonly=True) as s:
        big = resolve(d, "d3/f003", s)
        leaves = leaf_hashcodes(big.block, s)
    delete_blocks(dd, [leaves[2]])
    buf = io.BytesIO()
    with DataDir(dd, readonly=True) as s:
        stats = write_tar(d, s, buf)
    assert [x.path for x in stats.damaged] == ["d3/f003"]
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        got = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    for rel, data in files.items():
        if rel != "d3/f003":
            assert got[rel] == data
    bad = got["d3/f003"]
    assert len(bad) == len(files["d3/f003"]) and bad != files["d3/f003"]
    lost = stats.damaged[0].lost_bytes
    assert lost > 0 and bad.count(0) >= lost
    assert sum(a != b for a, b in zip(bad, files["d3/f003"], strict=True)) <= lost


def test_thousands_of_small_files_and_a_damaged_directory(tmp_path):
    """Today's "one partial file of ~7,000": a lost file leaf and a lost leaf of a
    3,000-entry directory cost those entries only."""
    src = tmp_path / "src"
    rnd = random.Random(7)
    files = {}
    for sub, n in (("big", 3000), ("small", 500)):
        (src / sub).mkdir(parents=True)
        for i in range(n):
            data = rnd.randbytes(100 + i % 700)
            (src / sub / f"file-{i:05d}").write_bytes(data)
            files[f"{sub}/file-{i:05d}"] = data
    dd = tmp_path / "dd"
    with DataDir(dd) as s:
        d, _ = import_tree(str(src), s)
        bigdir = resolve(d, "big", s)
        assert isinstance(bigdir.block, IndirectBlock)
        dir_leaves = leaf_hashcodes(bigdir.block, s)
        victim = resolve(d, "small/file-00250", s)
    assert len(dir_leaves) > 10
    delete_blocks(dd, [dir_leaves[3], victim.block.hashcode])
    out = tmp_path / "out"
    t0 = time.monotonic()
    with DataDir(dd, readonly=True) as s:
        stats = export_tree(d, s, str(out))
    elapsed = time.monotonic() - t0
    got = read_tree(out)
    lost = [r for r in files if r not in got]
    assert "small/file-00250" in lost
    assert got["small/file-00250" + DAMAGED_SUFFIX] != files["small/file-00250"]
    # the lost leaf held a stretch of consecutive names; the rest is all there
    big_lost = sorted(r for r in lost if r.startswith("big/"))
    assert 0 < len(big_lost) < 400, len(big_lost)
    nums = [int(r[-5:]) for r in big_lost]
    assert nums == list(range(nums[0], nums[0] + len(nums)))
    assert all(got[r] == files[r] for r in files if r in got)
    assert {x.path: x.kind for x in stats.damaged} == {"big": "dir", "small/file-00250": "file"}
    assert elapsed < 30


def test_safe_strips_setuid_capabilities_and_devices(tmp_path):
    S = MemoryStore()
    from vtstore.tree.meta import Meta

    cap = bytes.fromhex("0100000200040000000000000000000000000000")
    files = [
        Dirent(T_FILE, name="suid", block=LiteralBlock(b"x"), meta=Meta(mode=0o4755)),
        Dirent(
            T_FILE,
            name="capped",
            block=LiteralBlock(b"y"),
            meta=Meta(mode=0o755, xattrs=(("security.capability", cap), ("user.ok", b"1"))),
        ),
        Dirent(4, name="null", rdev=("c", 1, 3), meta=Meta(mode=0o666)),
    ]
    d = make_dir(files, S)
    out = tmp_path / "safe"
    stats = Exporter(S, safe=True).export(d, str(out))
    assert sorted(os.listdir(out)) == ["capped", "suid"]
    assert stats.unsafe_skipped == 1
    assert os.stat(out / "suid").st_mode & 0o7777 == 0o755
    assert os.listxattr(out / "capped") == ["user.ok"]


@pytest.fixture
def deep_out(tmp_path):
    """A target for a deep tree, removed by `rm -rf` after the test: pytest's own
    cleanup (shutil.rmtree) recurses and fails on 1,000 levels."""
    out = tmp_path / "out"
    yield out
    subprocess.run(["rm", "-rf", str(out)], check=True)


def test_deep_tree_exports_without_recursion_or_many_fds(tmp_path, deep_out):
    """1,000 levels (paths past PATH_MAX), hard links across the depth both ways."""
    import resource

    S = MemoryStore()
    bottom = make_dir(
        [
            Dirent(T_FILE, name="bottom", block=LiteralBlock(b"deep"), ino=2),
            Dirent(T_HARDLINK, name="link-to-top", ino=1),
        ],
        S,
        name="d999",
    )
    d = bottom
    for i in reversed(range(999)):
        d = make_dir([d], S, name=f"d{i}")
    top = make_dir(
        [
            Dirent(T_FILE, name="a-top", block=LiteralBlock(b"top"), ino=1),
            d,
            Dirent(T_HARDLINK, name="z-link-to-bottom", ino=2),
        ],
        S,
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
    try:
        stats = export_tree(top, S, str(tmp_path / "out"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert stats.dirs == 1000 and stats.files == 4 and not stats.errors
    fd = os.open(tmp_path / "out", os.O_RDONLY)
    for i in range(1000):
        nfd = os.open(f"d{i}", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    try:
        st = os.stat("bottom", dir_fd=fd)
        assert st.st_nlink == 2
        assert os.stat("link-to-top", dir_fd=fd).st_ino == os.stat(tmp_path / "out/a-top").st_ino
    finally:
        os.close(fd)
    assert os.stat(tmp_path / "out/z-link-to-bottom").st_ino == st.st_ino
    buf = io.BytesIO()
    tstats = write_tar(top, S, buf)
    assert tstats.dirs == 1001
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        names = tf.getnames()
    assert any(n.endswith("/d999/bottom") and n.count("/") == 1000 for n in names)
    assert tree_totals(top, S) == (1 + 1000 + 4, 7)


def _bomb(store, levels=8, fan=10) -> Dirent:
    """A directory whose entries all share one sub-directory block: fan**levels files."""
    d = make_dir(
        [Dirent(T_FILE, name=f"f{i}", block=LiteralBlock(b"x")) for i in range(fan)], store
    )
    for _ in range(levels - 1):
        d = make_dir([Dirent(T_DIR, name=f"d{i}", block=d.block) for i in range(fan)], store)
    return d


def test_limits_stop_a_dag_bomb_before_writing(tmp_path):
    S = MemoryStore()
    bomb = _bomb(S)
    t0 = time.monotonic()
    with pytest.raises(LimitError, match="10,000,000 entries"):
        Exporter(S, max_files=10_000_000).export(bomb, str(tmp_path / "out"))
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "out").exists()
    with pytest.raises(LimitError, match="entries"):
        write_tar(bomb, S, io.BytesIO(), max_files=10_000_000)
    # within the limit the same DAG restores whole
    small = _bomb(S, levels=3, fan=5)
    stats = Exporter(S, max_files=1000).export(small, str(tmp_path / "ok"))
    assert stats.files == 125 and stats.dirs == 30


def test_limits_stop_a_huge_sparse_file(tmp_path):
    dd = tmp_path / "dd"
    with DataDir(dd) as S:
        # an indirect block of 1,024 refs to a 1 GiB run of zeros: a 1 TiB file
        run = RLEBlock(1 << 30).encode()
        h = S.add(b"".join([run] * 1024))
        huge = Dirent(T_FILE, name="huge", block=IndirectBlock(h, 1 << 40))
        d = make_dir([huge, Dirent(T_FILE, name="small", block=RLEBlock(10 << 20))], S)
        with pytest.raises(LimitError, match="--max-size"):
            Exporter(S, max_size=100 << 30).export(d, str(tmp_path / "out"))
        assert not (tmp_path / "out").exists()
        with pytest.raises(LimitError, match="--max-size"):
            write_tar(d, S, io.BytesIO(), max_size=100 << 30)
        d2 = make_dir([Dirent(T_FILE, name="small", block=RLEBlock(10 << 20))], S)
        with pytest.raises(LimitError):
            Exporter(S, max_size=1 << 20).export(d2, str(tmp_path / "o2"))
        Exporter(S, max_size=None).export(d2, str(tmp_path / "o3"))
        st = os.stat(tmp_path / "o3/small")
        assert st.st_size == 10 << 20 and st.st_blocks == 0


def test_hard_link_group_outside_the_subtree(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a/f").write_bytes(b"shared content " * 1000)
    os.link(src / "a/f", src / "b/g")
    os.link(src / "a/f", src / "b/h")
    S = MemoryStore()
    d, _ = import_tree(str(src), S)
    sub = resolve(d, "b", S)
    assert [e.type for _, e in walk(sub, S)][1:] == [T_HARDLINK, T_HARDLINK]
    out = tmp_path / "out"
    Exporter(S, links=LinkResolver(d, S)).export(sub, str(out))
    assert (out / "g").read_bytes() == b"shared content " * 1000
    assert os.stat(out / "g").st_ino == os.stat(out / "h").st_ino
    buf = io.BytesIO()
    write_tar(sub, S, buf, links=LinkResolver(d, S))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        g, h = tf.getmember("g"), tf.getmember("h")
        assert g.isfile() and tf.extractfile(g).read() == b"shared content " * 1000
        assert h.islnk() and h.linkname == "g"


def test_dir_salvage_keeps_readable_runs(tmp_path):
    """Unit check of the salvage on a MemoryStore copy missing one leaf."""
    S = MemoryStore()
    entries = [
        Dirent(T_FILE, name=f"n{i:05d}" + "x" * 60, block=LiteralBlock(b"z")) for i in range(2000)
    ]
    d = make_dir(entries, S)
    from vtstore.tree.salvage import read_entries

    leaves = leaf_hashcodes(d.block, S)
    del S._blocks[leaves[0]]  # the first leaf holds the header
    got, problems = read_entries(d, S)
    assert problems and 1500 < len(got) < 2000
    assert [e.name for e in got] == sorted(e.name for e in got)


def test_a_damaged_file_never_keeps_its_own_name(tmp_path):
    """A 250-octet name: NAME.vt-damaged would pass NAME_MAX, so it is shortened;
    when even that is taken the partial file is removed, not left as NAME."""
    from vtstore.blocks import HashCodeBlock
    from vtstore.tree.meta import Meta

    S = MemoryStore()
    gone = HashCodeBlock(S.hashclass.from_data(b"never stored"), 5000)
    long = "n" * 250
    meta = Meta(mode=0o644, mtime_ns=1_600_000_000_000_000_000)
    d = make_dir([Dirent(T_FILE, name=long, block=gone, meta=meta)], S)
    stats = export_tree(d, S, str(tmp_path / "a"))
    assert os.listdir(tmp_path / "a") == ["n" * 244 + DAMAGED_SUFFIX]
    assert [x.path for x in stats.damaged] == [long]
    taken = Dirent(T_FILE, name="n" * 244 + DAMAGED_SUFFIX, block=LiteralBlock(b"x"))
    d2 = make_dir([Dirent(T_FILE, name=long, block=gone, meta=meta), taken], S)
    stats = export_tree(d2, S, str(tmp_path / "b"))
    # the real file of the shortened name comes first ('.' < 'n'); the damaged one
    # cannot take that name: reported, removed, nothing passes for whole
    assert long not in os.listdir(tmp_path / "b")
    assert len(stats.errors) == 1 and len(stats.damaged) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_stopped_restore_leaves_no_fd_open(tmp_path, leftovers):
    """ENOSPC 100 levels down stops the export and closes every directory."""
    S = MemoryStore()
    d = make_dir([Dirent(T_FILE, name="big", block=RLEBlock(2 << 20, 1))], S, name="d99")
    for i in reversed(range(99)):
        d = make_dir([d], S, name=f"d{i}")
    top = make_dir([d], S)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(OSError) as exc:
            export_tree(top, S, str(small / "out"))
        assert exc.value.errno == 28  # ENOSPC
        leftovers.check()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)
