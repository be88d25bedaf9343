"""Deep trees: 1,000 directory levels pack, re-pack, walk and merge without
Python's recursion limit (issue 12, item 11).  Real directories, real `vt`
processes; names are one letter so the deepest path (2,000 octets) stays under
PATH_MAX."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vtstore.archive import Archive
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir, resolve, tree_stats, walk
from vtstore.tree.dirent import FileDirent
from vtstore.tree.fsimport import import_tree
from vtstore.tree.merge import merge

DEPTH = 1000


def make_deep(root: str, depth: int = DEPTH, leaf: bytes = b"bottom\n") -> str:
    """`root/d/d/.../d/f` with `depth` directories below root; return the file's path."""
    os.makedirs(root)
    path = root
    for _ in range(depth):  # os.makedirs recurses once per level: a loop instead
        path = os.path.join(path, "d")
        os.mkdir(path)
    f = os.path.join(path, "f")
    with open(f, "wb") as fh:
        fh.write(leaf)
    return f


@pytest.fixture
def deep(tmp_path):
    """A 1,000-level tree, removed bottom up afterwards (shutil.rmtree, which
    pytest's temporary-directory cleanup uses, recurses once per level)."""
    root = str(tmp_path / "deep")
    f = make_deep(root)
    yield root
    os.unlink(f)
    path = os.path.dirname(f)
    while path != root:
        os.rmdir(path)
        path = os.path.dirname(path)


def vt(store, *args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), *args],
        capture_output=True,
    )
    assert b"Traceback" not in r.stderr, r.stderr.decode()[-2000:]
    if check:
        assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r


def test_pack_and_repack_a_1000_level_tree(tmp_path, deep):
    src = deep
    store = tmp_path / "store"
    vt(store, "pack", src)
    archive = Archive(src + ".vt")
    first = archive.last().dirent
    # again, unchanged: the re-pack path (stat cache over stored directories)
    vt(store, "pack", src)
    second = Archive(src + ".vt").last().dirent
    assert second.block == first.block
    # a change at the bottom is found and only that path is rewritten
    with open(os.path.join(src, *(["d"] * DEPTH), "f"), "ab") as fh:
        fh.write(b"more\n")
    vt(store, "pack", src)
    third = Archive(src + ".vt").last().dirent
    assert third.block != first.block
    inner = "/".join(["d"] * DEPTH) + "/f"
    out = vt(store, "cat", f"{src}.vt/{inner}").stdout
    assert out == b"bottom\nmore\n"
    # fsck walks every state down to the bottom (it recursed once per level)
    r = vt(store, "fsck", f"{src}.vt")
    assert b"ok" in r.stdout and b"3 states" in r.stdout, r.stdout


def test_import_walk_resolve_stats_merge_in_process(deep):
    src = deep
    store = MemoryStore()
    root, stats = import_tree(src, store)
    assert stats.errors == [] and stats.dirs == DEPTH + 1 and stats.files == 1
    paths = [p for p, _ in walk(root, store)]
    assert len(paths) == DEPTH + 2
    assert paths[-1] == "/".join(["d"] * DEPTH) + "/f"
    assert tree_stats(root, store) == {"files": 1, "dirs": DEPTH + 1, "other": 0, "bytes": 7}
    leaf = resolve(root, paths[-1], store)
    assert leaf.block.data(store) == b"bottom\n"
    # re-import over the previous state
    again, stats2 = import_tree(src, store, previous=root)
    assert again == root and stats2.files_reused == 1
    # merge an overlay of the same depth that adds a file at the bottom
    overlay = make_dir([FileDirent("g", block=None)], store, name="d")
    for _ in range(DEPTH - 1):
        overlay = make_dir([overlay], store, name="d")
    overlay = make_dir([overlay], store, name=root.name)
    merged = merge(root, overlay, store)
    names = sorted(p.rsplit("/", 1)[-1] for p, e in walk(merged, store) if not e.is_dir)
    assert names == ["f", "g"]


@pytest.mark.parametrize("depth", [63, 64])
def test_merge_keeps_the_base_name_at_every_depth(depth):
    store = MemoryStore()
    base = make_dir([FileDirent("x")], store, name="n")
    over = make_dir([FileDirent("y")], store, name="n")
    for _ in range(depth):
        base = make_dir([base], store, name="n")
        over = make_dir([over], store, name="n")
    base = base.renamed("top")
    m = merge(base, over, store)
    assert m.name == "top"
    files = sorted(p for p, e in walk(m, store) if e.is_file)
    assert files == ["/".join(["n"] * depth) + "/" + f for f in ("x", "y")]
