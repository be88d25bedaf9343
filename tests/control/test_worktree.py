"""The control API (`vtstore.control.WorkTree`) over a real store."""

from __future__ import annotations

import os

import pytest

from vtstore.archive import Archive
from vtstore.blocks import block_for
from vtstore.control import ControlError, WorkTree
from vtstore.control.content import EditError
from vtstore.stores.spec import open_store_spec
from vtstore.tree.dir import dir_entries, walk

from ..tree.conftest import make_rich_tree, rsync_diff


@pytest.fixture
def store():
    s = open_store_spec("memory:")
    yield s
    s.close()


def _paths(wt):
    return sorted(p for p, _ in walk(wt.root, wt.store) if p)


def test_edits_rebuild_the_path(store, tmp_path):
    wt = WorkTree(store)
    wt.mkdir("a/b/c", parents=True)
    wt.cd("a/b")
    assert wt.pwd() == "/a/b"
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    wt.put(str(tmp_path / "f"))
    wt.clone("f", "/g")
    wt.link("../g", "c/l")
    wt.mv("/g", "/a/h")
    assert _paths(wt) == ["a", "a/b", "a/b/c", "a/b/c/l", "a/b/f", "a/h"]
    assert wt.lookup("/a/h").block == wt.lookup("f").block
    with pytest.raises(ControlError, match="not empty"):
        wt.rm("/a")
    wt.rm("/a/b", recursive=True)
    assert wt.pwd() == "/a" and _paths(wt) == ["a", "a/h"]
    with pytest.raises(ControlError, match="no such"):
        wt.cd("/nope")
    with pytest.raises(ControlError, match="into itself"):
        wt.mv("/a", "/a/h2")
    with pytest.raises(ControlError, match="already exists"):
        wt.mkdir("/a")


def test_put_get_roundtrip_rich_tree(store, tmp_path):
    src = str(tmp_path / "src")
    make_rich_tree(src)
    wt = WorkTree(store)
    wt.put(src, "in")
    out = str(tmp_path / "out")
    wt.get("/in", out)
    assert rsync_diff(src, out) == []


def test_splice_crop_by_reference(store):
    wt = WorkTree(store)
    data = os.urandom(300_000)
    wt.bind("f", str(block_for(data, store)))
    ins = block_for(b"INSERTED", store)
    wt.splice("f", 1000, str(ins), 5)
    assert b"".join(wt.read("f")) == data[:1000] + b"INSERTED" + data[1005:]
    wt.crop("f", 10, 2010)
    assert b"".join(wt.read("f")) == (data[:1000] + b"INSERTED" + data[1005:])[10:2010]
    with pytest.raises(EditError):
        wt.crop("f", 5, 1)


def test_sync_records_only_changes(store, tmp_path):
    a = Archive(str(tmp_path / "t.vt"))
    wt = WorkTree(store, archive=a)
    assert wt.sync() == (wt.root, False) and not a.exists()
    wt.mkdir("d")
    root, recorded = wt.sync("first")
    assert recorded and a.last().dirent == root
    assert wt.sync()[1] is False
    assert len(list(a.entries())) == 1


def test_pull_push_merge_with_peer(store, tmp_path):
    peer = open_store_spec("memory:")
    other = WorkTree(peer)
    other.mkdir("p/q", parents=True)
    other.bind("p/q/f", str(block_for(b"peer!", peer)))
    pref = str(other.lookup("p"))
    wt = WorkTree(store)
    with pytest.raises(ControlError, match="no peer"):
        wt.pull(pref)
    wt.set_peer("memory:", peer)
    with pytest.raises(ControlError, match="not in the store"):
        wt.bind("x", pref)
    wt.pull(pref, "got")
    assert b"".join(wt.read("got/q/f")) == b"peer!"
    wt.mkdir("mine")
    d, _ = wt.push("/mine")
    assert str(d) == str(wt.lookup("/mine"))
    # merge: theirs adds `t`, ours adds `o`, against the common base
    base = wt.root
    wt2 = WorkTree(store, base)
    wt2.mkdir("t")
    wt.mkdir("o")
    assert wt.merge(str(wt2.root), str(base)) == []
    assert {e.name for e in dir_entries(wt.root, store)} == {"got", "mine", "o", "t"}
    wt.close_peer()


def test_edits_in_a_directory_of_50000_entries(store):
    """Each edit re-encodes the directory but decodes it only once per session:
    10 edits in a 50,000-entry directory took 16.6 s decoding it every time."""
    import time

    from vtstore.blocks import LiteralBlock
    from vtstore.tree.dir import make_dir
    from vtstore.tree.dirent import T_FILE, Dirent

    ents = [Dirent(T_FILE, name=f"f{i:06d}", block=LiteralBlock(b"%d" % i)) for i in range(50_000)]
    wt = WorkTree(store, make_dir([make_dir(ents, store, name="big")], store))
    t = time.perf_counter()
    for i in range(5):
        wt.clone(f"big/f{i:06d}", f"big/c{i}")
    wt.mv("big/c0", "/moved")
    wt.rm("big/f000010")
    elapsed = time.perf_counter() - t
    names = [e.name for e in wt.ls("big")]
    assert len(names) == 50_000 + 4 - 1 and "f000010" not in names and "c4" in names
    assert names == sorted(names)
    assert b"".join(wt.read("/moved")) == b"0"
    assert elapsed < 15, elapsed  # about 1.2 s here; decoding per edit was 8 s
