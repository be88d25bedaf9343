"""Concurrent writable mounts of one archive merge (issue 19, item 4).

Two mounts of one archive that both record states: each records, once the
other has recorded meanwhile, the three-way merge of its changes into the
archive's latest state (base: its own last recorded tree).  Disjoint edits
combine; a conflicting edit keeps both versions (`NAME.vt-conflict`) and the
state's comment says so.  Also `tree.merge.merge3` alone.
"""

from __future__ import annotations

import os

from vtstore.archive import Archive
from vtstore.fs.filesystem import ROOT_INO, FileSystem
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir, walk
from vtstore.tree.merge import merge3

from .conftest import needs_fuse, vt


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _sync(mnt: str) -> None:
    os.setxattr(mnt, "x-vt-control", b"sync")


def _tree(store: str, archive: str, tmp_path, name: str) -> dict[str, str]:
    out = str(tmp_path / name)
    vt("-S", store, "unpack", archive, out)
    found = {}
    for d, _, files in os.walk(out):
        for f in files:
            p = os.path.join(d, f)
            found[os.path.relpath(p, out)] = open(p).read()
    return found


@needs_fuse
def test_two_mounts_merge_disjoint_and_conflicting_edits(place, mounts, tmp_path):
    store, archive, mnt1 = place
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for n, t in (("a", "a0"), ("b", "b0"), ("x", "x0"), ("d/c", "c0")):
        _write(str(src / n), t)
    vt("-S", store, "pack", "-a", archive, str(src))
    mnt2 = str(tmp_path / "mnt2")
    m1 = mounts(store, archive, mnt1)
    m2 = mounts(store, archive, mnt2)
    # disjoint edits
    _write(f"{mnt1}/a", "a1")
    _write(f"{mnt1}/m1-new", "from m1")
    _sync(mnt1)
    _write(f"{mnt2}/d/c", "c2")
    os.unlink(f"{mnt2}/b")
    _write(f"{mnt2}/m2-new", "from m2")
    _sync(mnt2)
    want = {"a": "a1", "x": "x0", "d/c": "c2", "m1-new": "from m1", "m2-new": "from m2"}
    assert _tree(store, archive, tmp_path, "t1") == want
    # a conflict: both change x
    _write(f"{mnt1}/x", "x from m1")
    _sync(mnt1)
    _write(f"{mnt2}/x", "x from m2")
    _sync(mnt2)
    last = Archive(archive).last()
    assert "conflict" in (last.comment or "") and "x" in last.comment
    want.update({"x": "x from m2", "x.vt-conflict": "x from m1"})
    assert _tree(store, archive, tmp_path, "t2") == want
    # the first mount goes on: its next change lands on the merge, nothing is lost
    _write(f"{mnt1}/later", "later")
    _sync(mnt1)
    want["later"] = "later"
    got = _tree(store, archive, tmp_path, "t3")
    assert got == want, got
    assert m1.umount() == 0, m1.output()
    assert m2.umount() == 0, m2.output()
    assert _tree(store, archive, tmp_path, "t4") == want


def _fs_tree(S, files: dict[str, bytes], base=None):
    fs = FileSystem(S, base if base is not None else make_dir([], S))
    try:
        for path, data in files.items():
            parent = ROOT_INO
            parts = path.split("/")
            for p in parts[:-1]:
                try:
                    parent = fs.lookup(parent, p).ino
                except OSError:
                    parent = fs.mkdir(parent, p, 0o755, 0, 0).ino
            if data is None:
                fs.unlink(parent, parts[-1])
                continue
            try:
                ino = fs.lookup(parent, parts[-1]).ino
                fh = fs.open(ino, os.O_WRONLY | os.O_TRUNC)
            except OSError:
                fh, _ = fs.create(parent, parts[-1], 0o100644, os.O_WRONLY, 0, 0)
            fs.write(fh, 0, data)
            fs.release(fh)
        return fs.sync()
    finally:
        fs.close()


def _contents(top, S) -> dict[str, bytes]:
    return {p: e.block.read(S) for p, e in walk(top, S) if e.is_file}


def test_merge3_rules():
    S = MemoryStore()
    base = _fs_tree(S, {"keep": b"k", "gone": b"g", "both": b"0", "d/e/f": b"f0", "del": b"d"})
    ours = _fs_tree(S, {"both": b"ours", "d/e/f": b"f-ours", "gone": None, "o": b"o"}, base)
    theirs = _fs_tree(S, {"both": b"theirs", "d/e/new": b"n", "t": b"t", "del": b"d2"}, base)
    ours = _fs_tree(S, {"del": None}, ours)
    merged, conflicts = merge3(base, ours, theirs, S)
    assert _contents(merged, S) == {
        "keep": b"k",
        "both": b"ours",
        "both.vt-conflict": b"theirs",
        "d/e/f": b"f-ours",
        "d/e/new": b"n",
        "o": b"o",
        "t": b"t",
        "del": b"d2",  # removed here, changed there: the change is kept
    }
    assert sorted(conflicts) == ["both", "del"]
    # one side unchanged: the other side, as it is
    same, none = merge3(base, base, theirs, S)
    assert none == [] and _contents(same, S) == _contents(theirs, S)


def test_vt_merge_of_two_states(tmp_path):
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    for n in ("a", "b", "c"):
        _write(str(src / n), n + "0")
    archive = str(tmp_path / "t.vt")
    vt("-S", store, "pack", "-a", archive, str(src))  # state 1: the base
    _write(str(src / "a"), "a1")
    vt("-S", store, "pack", "-a", archive, str(src))  # state 2: a changed
    # state 3 made from state 1 by another writer: b changed, c removed
    other = tmp_path / "other"
    vt("-S", store, "unpack", archive + "@1", str(other))
    _write(str(other / "b"), "b1")
    os.unlink(other / "c")
    vt("-S", store, "pack", "-a", archive, str(other))
    r = vt("-S", store, "merge", "--json", "-a", archive, "-m", "merged", archive + "@2", archive)
    import json

    assert json.loads(r.stdout)["conflicts"] == []
    got = _tree(store, archive, tmp_path, "m")
    assert got == {"a": "a1", "b": "b1"}
    assert Archive(archive).last().comment == "merged"
    r = vt("-S", store, "merge", archive, 'D{name:"x"}', check=False)
    assert r.returncode == 1 and "give --base" in r.stderr


def test_merge3_keeps_a_salted_tree_salted():
    from vtstore.tree.dir import new_salt, salt_of

    S = MemoryStore()
    salt = new_salt()
    fs = FileSystem(S, make_dir([], S), dir_salt=salt)
    try:
        fs.mkdir(ROOT_INO, "d", 0o755, 0, 0)
        base = fs.sync()
    finally:
        fs.close()
    ours = _fs_tree(S, {"d/o": b"o"}, base)
    theirs = _fs_tree(S, {"d/t": b"t"}, base)
    merged, conflicts = merge3(base, ours, theirs, S)
    assert conflicts == [] and _contents(merged, S) == {"d/o": b"o", "d/t": b"t"}
    assert salt_of(merged, S) == salt
    assert all(salt_of(e, S) == salt for _, e in walk(merged, S) if e.is_dir)
