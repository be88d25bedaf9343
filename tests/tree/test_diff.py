"""vtstore.tree.diff on real trees: every kind of change is found, equal
subtrees are skipped without a block read, damage is reported, not raised."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from vtstore.stores.memory import MemoryStore
from vtstore.tree.diff import TreeDiff, diff_trees
from vtstore.tree.dir import resolve, walk
from vtstore.tree.fsimport import import_tree

from .conftest import make_rich_tree


class CountingStore(MemoryStore):
    """A real memory store that counts the blocks read from it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reads = 0

    def _get(self, hashcode):
        self.reads += 1
        return super()._get(hashcode)


def _changes(a, b, store, **kw):
    changes, stats = diff_trees(a, b, store, **kw)
    return {c.path: c for c in changes}, stats


def test_equal_trees_read_nothing(tmp_path):
    src = tmp_path / "src"
    make_rich_tree(str(src))
    store = CountingStore()
    a, _ = import_tree(str(src), store)
    b, _ = import_tree(str(src), store, previous=a)
    store.reads = 0
    changes, stats = _changes(a, b, store)
    assert changes == {}
    assert store.reads == 0 and stats.dirs_read == 0 and stats.dirs_skipped == 1


def test_every_kind_of_change(tmp_path):
    src = tmp_path / "src"
    make_rich_tree(str(src))
    store = MemoryStore()
    a, _ = import_tree(str(src), store)
    time.sleep(0.01)  # new mtimes differ
    (src / "regular.txt").write_text("changed content\n")  # content
    os.chmod(src / "setuid-file", 0o755)  # mode
    os.chown(src / "empty", 65534, 65534)  # owner
    os.utime(src / "with-xattrs", ns=(1, 10**18))  # mtime
    os.setxattr(src / "setgid-file", "user.new", b"v")  # xattrs
    os.unlink(src / "link-to-regular")
    os.symlink("elsewhere", src / "link-to-regular")  # target
    os.unlink(src / "fifo")
    (src / "fifo").write_text("now a file")  # type
    shutil.rmtree(src / "c")  # a directory with its entries removed
    (src / "added-dir" / "deeper").mkdir(parents=True)
    (src / "added-dir" / "deeper" / "f").write_bytes(b"x" * 1000)
    os.unlink(src / "zz-third-name")
    (src / "zz-third-name").write_bytes(b"no longer a hard link")  # link -> file
    b, _ = import_tree(str(src), store, previous=a)
    changes, stats = _changes(a, b, store)
    kinds = {p: (c.kind, c.what) for p, c in changes.items()}
    assert kinds["regular.txt"][0] == "M" and "content" in kinds["regular.txt"][1]
    assert "mode" in kinds["setuid-file"][1]
    assert "owner" in kinds["empty"][1]
    assert kinds["with-xattrs"] == ("M", ("mtime",))
    assert "xattrs" in kinds["setgid-file"][1]
    assert "target" in kinds["link-to-regular"][1]
    assert kinds["fifo"] == ("T", ("type",))
    assert kinds["c"][0] == "-" and kinds["c/linked-again"][0] == "-"
    for p in ("added-dir", "added-dir/deeper", "added-dir/deeper/f"):
        assert kinds[p][0] == "+", p
    assert kinds["zz-third-name"][0] in ("M", "T")
    assert changes["regular.txt"].old.size == 1200
    assert changes["regular.txt"].new.size == len("changed content\n")
    # nothing unchanged is listed, and the listing is in walk (path) order
    assert "large.bin" not in changes and "ro-dir/inside" not in changes
    # its other names gone, the first name is in no hard-link group any more
    assert kinds["a/b/linked"] == ("M", ("link",))
    order = [p for p, _ in walk(b, store) if p in changes]
    assert [p for p in changes if p in order] == order
    assert stats.added == 3 and stats.removed == 2 and stats.type_changed == 2
    assert stats.added_bytes >= 1000


def test_type_change_of_a_directory_lists_its_entries(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "one").write_text("1")
    (src / "d" / "two").write_text("2")
    store = MemoryStore()
    a, _ = import_tree(str(src), store)
    shutil.rmtree(src / "d")
    (src / "d").write_text("a file now")
    b, _ = import_tree(str(src), store, previous=a)
    changes, _ = _changes(a, b, store)
    assert [(p, c.kind) for p, c in changes.items() if p != "."] == [
        ("d", "T"),
        ("d/one", "-"),
        ("d/two", "-"),
    ]
    back, _ = _changes(b, a, store)
    assert [(p, c.kind) for p, c in back.items() if p != "."] == [
        ("d", "T"),
        ("d/one", "+"),
        ("d/two", "+"),
    ]


def _big_tree(root, dirs=30, files=1000):
    for i in range(dirs):
        d = root / f"dir{i:03d}"
        d.mkdir(parents=True)
        for j in range(files):
            (d / f"f{j:05d}").write_bytes(b"%d/%d\n" % (i, j))


def test_equal_subtrees_are_skipped_unread(tmp_path):
    """One changed file in one of 30 directories: the other 29 are not read."""
    src = tmp_path / "src"
    _big_tree(src, dirs=30, files=200)
    store = CountingStore()
    a, _ = import_tree(str(src), store)
    (src / "dir007" / "f00100").write_text("new")
    b, _ = import_tree(str(src), store, previous=a)
    store.reads = 0
    changes, stats = _changes(a, b, store)
    assert list(changes) == ["dir007/f00100"]
    # the two tops and the two dir007 listings, nothing else
    assert stats.dirs_read == 4 and stats.dirs_skipped == 29
    diff_reads = store.reads
    store.reads = 0
    list(walk(a, store))  # what reading the whole old tree costs
    assert 0 < diff_reads * 5 < store.reads, (diff_reads, store.reads)


@pytest.mark.slow
def test_thirty_thousand_files_one_percent_changed_is_fast(tmp_path):
    src = tmp_path / "src"
    _big_tree(src, dirs=30, files=1000)
    store = MemoryStore()
    a, _ = import_tree(str(src), store)
    changed = [(i, j) for i in range(30) for j in range(0, 1000, 100)]  # 300 files: 1%
    for i, j in changed:
        (src / f"dir{i:03d}" / f"f{j:05d}").write_text("changed")
    b, _ = import_tree(str(src), store, previous=a)
    t0 = time.perf_counter()
    changes, stats = _changes(a, b, store)
    took = time.perf_counter() - t0
    assert len(changes) == 300 and stats.modified == 300
    # the goal is 0.5 s; a loaded shared test machine gets slack
    assert took < 2.0, took


def _without(store, top, path):
    """A copy of `store` lacking the (first) block of the directory at `path`."""
    missing = resolve(top, path, store).block.hashcode
    out = MemoryStore()
    for h in list(store._blocks):
        if h != missing:
            out.add(store[h])
    return out


def test_damaged_directory_is_reported_and_the_rest_compared(tmp_path):
    src = tmp_path / "src"
    _big_tree(src, dirs=3, files=5)
    store = MemoryStore()
    a, _ = import_tree(str(src), store)
    (src / "dir000" / "f00000").write_text("changed")
    (src / "dir002" / "f00001").write_text("changed")
    (src / "dir001" / "f00004").write_text("changed")
    b, _ = import_tree(str(src), store, previous=a)
    # the new listing of dir001 is missing in the store
    changes, stats = _changes(a, b, _without(store, b, "dir001"))
    assert changes["dir001"].kind == "!" and changes["dir001"].error
    assert changes["dir000/f00000"].kind == "M" and changes["dir002/f00001"].kind == "M"
    assert stats.damaged == 1 and stats.problems


def test_removed_directory_with_damage_below_is_reported(tmp_path):
    src = tmp_path / "src"
    _big_tree(src, dirs=2, files=3)
    store = MemoryStore()
    a, _ = import_tree(str(src), store)
    shutil.rmtree(src / "dir001")
    b, _ = import_tree(str(src), store, previous=a)
    d = TreeDiff(_without(store, a, "dir001"))
    got = [(c.kind, c.path) for c in d.changes(a, b)]
    assert ("-", "dir001") in got and ("!", "dir001") in got
    assert d.stats.damaged == 1
