"""The filesystem layer without FUSE: hard-link table, forgetting, handles, sync."""

from __future__ import annotations

import errno
import os

import pytest

from vtstore.fs.errors import FSError
from vtstore.fs.filesystem import RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_INO, FileSystem
from vtstore.fs.handles import HandleTable
from vtstore.fs.links import decode_ext
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir, walk
from vtstore.tree.dirent import T_FILE, T_HARDLINK
from vtstore.tree.fsexport import export_tree
from vtstore.tree.fsimport import import_tree


@pytest.fixture
def fs():
    S = MemoryStore()
    f = FileSystem(S, make_dir([], S))
    yield f
    f.close()


def write_file(fs, parent, name, data):
    fh, a = fs.create(parent, name, 0o100644, os.O_WRONLY, 0, 0)
    fs.write(fh, 0, data)
    fs.release(fh)
    return a.ino


def read_file(fs, ino):
    fh = fs.open(ino, os.O_RDONLY)
    try:
        return fs.read(fh, 0, 1 << 30)
    finally:
        fs.release(fh)


def test_handle_table_reuses_slots():
    t = HandleTable()
    a, b = t.add("a"), t.add("b")
    assert (a, b) == (1, 2)
    t.remove(a)
    assert t.add("c") == a
    with pytest.raises(FSError):
        t.get(99)


def test_hard_links_survive_sync_and_export(fs, tmp_path):
    ino = write_file(fs, ROOT_INO, "f", b"shared")
    d = fs.mkdir(ROOT_INO, "d", 0o755, 0, 0)
    fs.link(ino, d.ino, "again")
    fs.link(ino, ROOT_INO, "third")
    assert fs.getattr(ino).nlink == 3
    top = fs.sync()
    info = decode_ext(top.ext)
    assert info is not None and info[2] == 1
    kinds = {p: e.type for p, e in walk(top, fs.backend)}
    assert kinds["d/again"] == T_FILE  # first in walk order carries the content
    assert kinds["f"] == kinds["third"] == T_HARDLINK
    out = tmp_path / "out"
    export_tree(top, fs.backend, str(out))
    assert os.stat(out / "f").st_ino == os.stat(out / "d/again").st_ino
    assert (out / "third").read_bytes() == b"shared"
    # a new mount finds the content through the table, writes through one name
    fs2 = FileSystem(fs.backend, top)
    a = fs2.lookup(ROOT_INO, "third")
    fh = fs2.open(a.ino, os.O_WRONLY)
    fs2.write(fh, 0, b"SHARED")
    fs2.release(fh)
    d2 = fs2.lookup(ROOT_INO, "d")
    fs2.unlink(d2.ino, "again")  # the walk-first name goes: another takes over
    top2 = fs2.sync()
    kinds = {p: e.type for p, e in walk(top2, fs.backend)}
    assert kinds["f"] == T_FILE and kinds["third"] == T_HARDLINK
    assert fs2.getattr(a.ino).nlink == 2
    out2 = tmp_path / "out2"
    export_tree(top2, fs.backend, str(out2))
    assert (out2 / "f").read_bytes() == b"SHARED"
    fs2.close()


def test_packed_tree_with_links_gets_a_table(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 100)
    os.link(src / "a", src / "b")
    S = MemoryStore()
    top, _ = import_tree(str(src), S)
    fs = FileSystem(S, top)
    b = fs.lookup(ROOT_INO, "b")
    assert b.nlink == 2 and read_file(fs, b.ino) == b"x" * 100
    assert fs.lookup(ROOT_INO, "a").ino == b.ino
    top2 = fs.sync()
    assert decode_ext(top2.ext) is not None
    fs.close()


def test_forgotten_clean_nodes_fold_back(fs):
    d = fs.mkdir(ROOT_INO, "d", 0o755, 0, 0)
    f = write_file(fs, d.ino, "f", b"data")
    fs.sync()
    fs.forget(f, 1)
    fs.forget(d.ino, 1)
    fs.sync()
    assert set(fs.inodes) == {ROOT_INO}
    d2 = fs.lookup(ROOT_INO, "d")
    f2 = fs.lookup(d2.ino, "f")
    assert read_file(fs, f2.ino) == b"data"


def test_unlinked_open_file_lives_until_release_and_is_not_stored(fs):
    fh, a = fs.create(ROOT_INO, "tmp", 0o100644, os.O_RDWR, 0, 0)
    fs.write(fh, 0, b"secret" * 1000)
    fs.unlink(ROOT_INO, "tmp")
    assert fs.read(fh, 0, 6) == b"secret"
    assert fs.getattr(a.ino).nlink == 0
    fs.release(fh)
    before = len(fs.backend)
    top = fs.sync()
    assert [p for p, _ in walk(top, fs.backend)] == [""]
    assert len(fs.backend) - before <= 2  # the directory, no file data


def test_rename_flags(fs):
    write_file(fs, ROOT_INO, "a", b"A")
    write_file(fs, ROOT_INO, "b", b"B")
    with pytest.raises(FSError) as e:
        fs.rename(ROOT_INO, "a", ROOT_INO, "b", RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    fs.rename(ROOT_INO, "a", ROOT_INO, "b", RENAME_EXCHANGE)
    assert read_file(fs, fs.lookup(ROOT_INO, "a").ino) == b"B"
    with pytest.raises(FSError) as e:
        fs.rename(ROOT_INO, "a", ROOT_INO, "zz", RENAME_EXCHANGE)
    assert e.value.errno == errno.ENOENT


def test_sync_reports_changes_only(fs):
    write_file(fs, ROOT_INO, "a", b"A")
    t1 = fs.sync()
    assert fs.sync() == t1
    fs.setattr(fs.lookup(ROOT_INO, "a").ino, mode=0o600)
    assert fs.sync() != t1


def test_append_only_and_readonly(fs):
    S = fs.backend
    write_file(fs, ROOT_INO, "a", b"A")
    top = fs.sync()
    ap = FileSystem(S, top, append_only=True)
    a = ap.lookup(ROOT_INO, "a")
    for call in (
        lambda: ap.unlink(ROOT_INO, "a"),
        lambda: ap.rename(ROOT_INO, "a", ROOT_INO, "b"),
        lambda: ap.setattr(a.ino, size=0),
    ):
        with pytest.raises(FSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    ap.close()
    ro = FileSystem(S, top, readonly=True)
    with pytest.raises(FSError) as e:
        ro.mkdir(ROOT_INO, "x", 0o755, 0, 0)
    assert e.value.errno == errno.EROFS
    ro.close()
