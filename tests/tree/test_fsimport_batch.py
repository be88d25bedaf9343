"""The importer adds small files to the store in batches, not one by one.

The batched import must give exactly the dirents of the file-by-file one (same
blocks, same directory encodings), whatever the batch limits, with hard links,
empty and literal-sized files, files just over the whole-file limit, and
directories nested between the files of their parent.
"""

import os

import pytest

from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.tree import fsimport
from vtstore.tree.dir import walk
from vtstore.tree.dirent import T_FILE
from vtstore.tree.fsimport import WHOLE_FILE_MAX, default_file_blockifier, import_tree


def make_tree(root, dirs=8, files=60):
    """`dirs` directories of `files` small files, with a subdirectory in the
    middle of each (so a parent's files wait while its child is imported)."""
    rnd = os.urandom
    for d in range(dirs):
        sub = root / f"d{d:02d}"
        (sub / "m-inner").mkdir(parents=True)
        for f in range(files):
            size = (0, 5, 100, 3000, WHOLE_FILE_MAX, WHOLE_FILE_MAX + 1)[f % 6] + f
            (sub / f"f{f:03d}").write_bytes(rnd(size))
        for f in range(5):
            (sub / "m-inner" / f"g{f}").write_bytes(rnd(700))
    os.link(root / "d00" / "f003", root / "d01" / "hardlink")
    (root / "top").write_bytes(b"same content\n" * 100)
    (root / "d03" / "dup").write_bytes(b"same content\n" * 100)


def one_by_one(path, store, name, mime_type, size):
    """The default blockifier behind another name: the importer then adds each
    file on its own, as before batching."""
    return default_file_blockifier(path, store, name, mime_type, size)


class CountingStore(MemoryStore):
    """A memory store that records how many blocks each `add_many` call adds
    (and each `add_tree_many` call, of directory blocks)."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []
        self.tree_batches: list[int] = []

    def add_many(self, datas):
        self.batches.append(len(datas))
        return super().add_many(datas)

    def add_tree_many(self, datas):
        self.tree_batches.append(len(datas))
        return super().add_tree_many(datas)


@pytest.mark.parametrize("limits", [None, (7, 1 << 20), (10_000, 50_000)])
@pytest.mark.parametrize("native", [True, False])
def test_batched_import_equals_file_by_file(tmp_path, monkeypatch, limits, native):
    """...and, with `native`, plain files' dirents encoded by `_treecodec`
    equal those of Dirent.encode (the file-by-file import builds Dirents)."""
    make_tree(tmp_path / "t")
    os.setxattr(tmp_path / "t" / "d02" / "f004", "user.x", b"y")  # not a plain file
    if limits is not None:
        monkeypatch.setattr(fsimport, "SMALL_BATCH_FILES", limits[0])
        monkeypatch.setattr(fsimport, "SMALL_BATCH_BYTES", limits[1])
    if native and fsimport._file_dirent is None:
        pytest.skip("vtstore.tree._treecodec is not built")
    a = DataDir(tmp_path / "a")
    b = DataDir(tmp_path / "b")
    if not native:
        monkeypatch.setattr(fsimport, "_file_dirent", None)
    da, sa = import_tree(str(tmp_path / "t"), a)
    monkeypatch.setattr(fsimport, "_file_dirent", None)
    db, sb = import_tree(str(tmp_path / "t"), b, blockifier=one_by_one)
    assert da == db
    assert [e.encode() for _, e in walk(da, a)] == [e.encode() for _, e in walk(db, b)]
    assert (sa.files, sa.bytes_read, sa.files_new) == (sb.files, sb.bytes_read, sb.files_new)
    assert sa.errors == []
    checked = 0
    for path, d in walk(da, a):
        if d.type == T_FILE:
            assert d.block.data(a) == (tmp_path / "t" / path).read_bytes(), path
            checked += 1
    assert checked == sa.files - 1  # the second name of the hard link is no T_FILE
    a.close()
    b.close()


def test_small_files_are_added_in_few_calls(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    for i in range(3000):
        (root / f"f{i:04d}").write_bytes(b"%d\n" % i * 40)
    store = CountingStore()
    d, stats = import_tree(str(root), store)
    assert stats.files == 3000
    # file by file every call added one block; batches hold up to 2048 files
    assert max(store.batches) == fsimport.SMALL_BATCH_FILES
    assert sum(store.batches) < 3100  # the rest are the directory's blocks
    assert {p: e.block.data(store) for p, e in walk(d, store) if e.type == T_FILE} == {
        f"f{i:04d}": b"%d\n" % i * 40 for i in range(3000)
    }


def test_small_directories_are_added_many_at_a_time(tmp_path):
    """A tree of many small directories (like a source tree's: 2,426
    directories for 3,611 files in the bench_peers git data set) is stored in
    a few calls, not two a directory; its dirents are those of the
    file-by-file import, and every file reads back."""
    root = tmp_path / "t"
    for d in range(600):
        sub = root / f"p{d % 7}" / f"d{d:03d}"
        sub.mkdir(parents=True)
        (sub / "a.py").write_bytes(b"x = %d\n" % d * 20)
        if d % 3 == 0:
            (sub / "b.txt").write_bytes(os.urandom(100 + d))
    store = CountingStore()
    d, stats = import_tree(str(root), store)
    assert stats.files == 800 and stats.dirs == 608
    assert len(store.batches) + len(store.tree_batches) <= 4, (
        store.batches,
        store.tree_batches,
    )
    other = MemoryStore()
    d2, _ = import_tree(str(root), other, blockifier=one_by_one)
    assert d == d2
    assert {p: e.block.data(store) for p, e in walk(d, store) if e.type == T_FILE} == {
        p: (root / p).read_bytes() for p, e in walk(d2, other) if e.type == T_FILE
    }
