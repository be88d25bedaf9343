"""Hard-link groups whose first name lies outside the subtree being read.

`a/f` (first in walk order: the file dirent holding the content) and `b/g`,
`b/h` (hard-link dirents) are one inode: reading `X.vt/b` alone must still
find the content, through `LinkResolver`, `vt cat`, `vt ls -l`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vtstore.archive import Archive
from vtstore.blocks import block_for
from vtstore.cli.refs import resolve_special
from vtstore.errors import FormatError, MissingBlockError
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import dir_entries, make_dir, resolve, walk
from vtstore.tree.dirent import T_FILE, T_HARDLINK, Dirent, FileDirent, HardLinkDirent
from vtstore.tree.links import LinkResolver, iter_tree


def vt(store, *args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), *args],
        capture_output=True,
    )
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    return r


@pytest.fixture
def packed(tmp_path):
    """A real tree with a hard-link group spanning a/ and b/, packed into a datadir."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    content = os.urandom(300_000)
    (src / "a" / "f").write_bytes(content)
    os.chmod(src / "a" / "f", 0o640)
    os.link(src / "a" / "f", src / "b" / "g")
    os.link(src / "a" / "f", src / "b" / "h")
    (src / "b" / "plain").write_text("plain")
    store = tmp_path / "store"
    vt(store, "pack", str(src))
    return store, str(src) + ".vt", content


def test_packed_tree_has_the_file_outside_b(packed):
    store, archive, _ = packed
    with DataDir(store, readonly=True) as s:
        top = Archive(archive).last().dirent
        g = resolve(top, "b/g", s)
        assert g.type == T_HARDLINK and g.ino is not None
        assert resolve(top, "a/f", s).type == T_FILE


def test_resolver_finds_the_group_file(packed):
    store, archive, content = packed
    with DataDir(store, readonly=True) as s:
        top = Archive(archive).last().dirent
        r = LinkResolver(top, s)
        g = resolve(top, "b/g", s)
        f = r.resolve(g.ino)
        assert f is not None and f.type == T_FILE and f.name == "f"
        assert f.block.data(s) == content
        assert r.path_of(g.ino) == ("a", "f")
        assert r.resolve(g.ino) is f  # cached
        assert r.resolve(987654) is None
        linked = r.resolve_link(g)
        assert linked.name == "g" and linked.block == f.block and linked.meta == f.meta


def test_target_of_a_subpath_has_links_and_cat_ls_work(packed):
    store, archive, content = packed
    with DataDir(store, readonly=True) as s:
        t = resolve_special(archive + "/b/g", s)
        assert t.links is not None
        assert t.dirent.type == T_FILE and t.dirent.name == "g"
        assert t.dirent.block.data(s) == content
        top = resolve_special(archive, s)
        assert top.links is not None
    assert vt(store, "cat", archive + "/b/g").stdout == content
    assert vt(store, "cat", archive + "/b/h").stdout == content
    long = vt(store, "ls", "-l", archive + "/b").stdout.decode().splitlines()
    byname = {line.rsplit(" ", 1)[-1]: line for line in long}
    for name in ("g", "h"):
        assert f" {len(content)} " in byname[name], byname[name]
        assert byname[name].startswith("-rw-r-----"), byname[name]
    one = vt(store, "ls", "-l", archive + "/b/g").stdout.decode()
    assert f" {len(content)} " in one and one.startswith("-rw-r-----")


def test_dirent_ref_with_subpath(packed):
    store, archive, content = packed
    ref = str(Archive(archive).last().dirent)
    assert vt(store, "cat", ref + "/b/g").stdout == content


def test_resolver_is_lazy_and_walks_once():
    s = MemoryStore()
    reads = []

    class Counting:
        def __getattr__(self, name):
            return getattr(s, name)

        def __getitem__(self, h):
            reads.append(h)
            return s[h]

    files = [FileDirent(f"f{i:03d}", block_for(b"x%d" % i * 20, s), ino=i + 1) for i in range(50)]
    dirs = [make_dir(files[i : i + 10], s, name=f"d{i}") for i in range(0, 50, 10)]
    top = make_dir(dirs, s)
    r = LinkResolver(top, Counting())
    assert reads == []
    assert r.resolve(3).name == "f002"
    n = len(reads)
    assert r.resolve(1).name == "f000" and len(reads) == n  # seen on the way
    assert r.resolve(50).name == "f049"
    total = len(reads)
    assert r.resolve(999) is None and r.resolve(998) is None
    assert len(reads) == total  # the walk ended once, nothing read again


def test_resolver_skips_an_unreadable_directory():
    s = MemoryStore()
    lost = make_dir([FileDirent("x", block_for(b"lost" * 30, s), ino=1)], s, name="a")
    kept = make_dir([FileDirent("y", block_for(b"kept" * 30, s), ino=2)], s, name="b")
    top = make_dir([lost, kept], s)
    other = MemoryStore()
    for h in s.hashcodes():
        if h != lost.block.hashcode:
            other.add(s[h])
    with pytest.raises(MissingBlockError):
        list(walk(top, other))
    r = LinkResolver(top, other)
    assert r.resolve(2).name == "y"
    assert r.resolve(1) is None
    assert len(r.errors) == 1 and "a" in r.errors[0]
    with pytest.raises(FormatError, match="no file of the tree"):
        r.resolve_link(HardLinkDirent("z", 1))


def test_iter_tree_matches_walk_order():
    s = MemoryStore()
    inner = make_dir([FileDirent("z"), FileDirent("a")], s, name="m")
    top = make_dir([FileDirent("b"), inner, FileDirent("n"), make_dir([], s, name="e")], s)
    assert [p for p, _ in walk(top, s)] == ["/".join(p) for p, _ in iter_tree(top, s)]


def deep_tree(s, depth: int) -> Dirent:
    """`d/d/.../d/file` (ino 7) `depth` levels deep beside a top-level link to it."""
    e = make_dir([FileDirent("file", block_for(b"bottom", s), ino=7)], s, name="d")
    for _ in range(depth - 1):
        e = make_dir([e], s, name="d")
    return make_dir([e, HardLinkDirent("link", 7)], s)


def test_resolver_in_a_tree_2000_levels_deep():
    s = MemoryStore()
    top = deep_tree(s, 2000)
    r = LinkResolver(top, s)
    f = r.resolve(7)
    assert f is not None and f.block.data(s) == b"bottom"
    assert len(r.path_of(7)) == 2001
    t = resolve_special(str(top) + "/link", s)
    assert t.dirent.block.data(s) == b"bottom"


def test_resolver_at_size_reads_each_directory_once(tmp_path):
    """40,000 files in 400 directories, 2,000 groups: every group found in one walk."""
    import time

    with DataDir(tmp_path / "dd") as s:
        dirs = []
        for d in range(400):
            files = [
                FileDirent(
                    f"f{i:03d}",
                    block_for(b"%d/%d " % (d, i) * 8, s),
                    ino=(d * 100 + i) // 20 + 1 if i % 20 == 0 else None,
                )
                for i in range(100)
            ]
            dirs.append(make_dir(files, s, name=f"d{d:03d}"))
        top = make_dir(dirs, s)
        n_dir_blocks = sum(len(list(d.block.leaves(s))) for d in dirs) + 1
        reads = []

        class Counting:
            def __getattr__(self, name):
                return getattr(s, name)

            def __getitem__(self, h):
                reads.append(h)
                return s[h]

        r = LinkResolver(top, Counting())
        t0 = time.perf_counter()
        found = [r.resolve(g) for g in range(2000, 0, -1)]  # the last first: one full walk
        dt = time.perf_counter() - t0
        assert all(f is not None for f in found)
        assert len(set(reads)) == len(reads) <= n_dir_blocks + len(list(top.block.leaves(s)))
        print(f"resolved 2,000 groups among 40,000 files in {dt:.3f} s, {len(reads)} reads")
        assert dt < 10


def test_resolver_uses_a_mounts_table_and_checks_it():
    """A tree written by a mount has a link table: used without a walk, but trusted
    only where the tree agrees."""
    import os as _os

    from vtstore.fs.filesystem import ROOT_INO, FileSystem
    from vtstore.fs.mount import replace_at

    s = MemoryStore()
    many = [
        make_dir([FileDirent("y", block_for(b"%d" % i * 40, s))], s, name=f"n{i:03d}")
        for i in range(200)
    ]
    fs = FileSystem(s, make_dir(many, s))
    try:
        fh, a = fs.create(ROOT_INO, "f", 0o100644, _os.O_WRONLY, 0, 0)
        fs.write(fh, 0, b"linked content" * 10)
        fs.release(fh)
        d = fs.mkdir(ROOT_INO, "zd", 0o755, 0, 0)
        fs.link(a.ino, d.ino, "again")
        top = fs.sync()
    finally:
        fs.close()
    assert top.ext and top.ext.startswith(b"VTFS")
    link = resolve(top, "zd/again", s)
    assert link.type == T_HARDLINK
    reads = []

    class Counting:
        def __getattr__(self, name):
            return getattr(s, name)

        def __getitem__(self, h):
            reads.append(h)
            return s[h]

    r = LinkResolver(top, Counting())
    f = r.resolve(link.ino)
    assert f.name == "f" and f.block.data(s) == b"linked content" * 10
    assert len(reads) < 10 and r._walk is None  # the table, no walk of 200 directories
    # the tree changed under the table (the file moved): the tree wins
    moved = make_dir([e for e in dir_entries(top, s) if e.name != "f"], s, ext=top.ext)
    moved = replace_at(moved, ("zd", "again"), f.renamed("again"), s)
    r = LinkResolver(moved, s)
    g = r.resolve(link.ino)
    assert g is not None and r.path_of(link.ino) == ("zd", "again")


def test_ls_recursive_goes_on_past_an_unreadable_directory(packed, tmp_path):
    store, archive, _ = packed
    top = Archive(archive).last().dirent
    damaged = tmp_path / "damaged"
    with DataDir(store, readonly=True) as s, DataDir(damaged) as d:
        lost = resolve(top, "a", s).block
        for h in s.hashcodes():
            if h != getattr(lost, "hashcode", None):
                d.add(s[h])
    r = vt(damaged, "ls", "-lR", archive, check=False)
    assert r.returncode == 1
    out = r.stdout.decode()
    assert "b:" in out and " g" in out and "plain" in out
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "a" in err[0] and "missing block" in err[0], err
    r = vt(damaged, "ls", archive + "/a", check=False)
    assert r.returncode == 1 and "missing block" in r.stderr.decode()
