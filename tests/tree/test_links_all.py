"""Hard links to every non-directory (issue 19, item 1), outside the mount.

A link group may be a file, a symlink, a fifo, a socket or a device: `pack`
stores its first name in walk order as that object with `ino=G` and every
later name as a hard-link dirent; `unpack` and the tar export restore the
links (`rsync -aHAXc` finds no difference), also for a subtree whose group's
first name lies outside it.  Trees and link tables of format 1 (file groups
only, table version 1) still read.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from vtstore.fs.filesystem import ROOT_INO, FileSystem
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir, resolve, walk
from vtstore.tree.dirent import GROUP_TYPES, T_FIFO, T_HARDLINK, T_SYMLINK, Dirent
from vtstore.tree.fsexport import export_tree
from vtstore.tree.fsimport import import_tree
from vtstore.tree.links import EXT_MAGIC, LinkResolver, decode_ext
from vtstore.tree.tar import write_tar

from .conftest import rsync_diff

KINDS = ("file", "symlink", "fifo", "socket", "chr", "blk")


def make_links_tree(root: str, sockets: bool = True) -> None:
    """Every kind of non-directory with three names in three directories."""
    os.makedirs(f"{root}/a")
    os.makedirs(f"{root}/b/c")
    for k in KINDS:
        p = f"{root}/a/{k}"
        if k == "file":
            with open(p, "wb") as f:
                f.write(os.urandom(5000))
        elif k == "symlink":
            os.symlink("../somewhere/else", p)
        elif k == "fifo":
            os.mkfifo(p, 0o640)
        elif k == "socket":
            if not sockets:
                continue
            os.mknod(p, 0o600 | stat.S_IFSOCK)
        elif k == "chr":
            os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        else:
            os.mknod(p, 0o600 | stat.S_IFBLK, os.makedev(7, 9))
        os.link(p, f"{root}/b/{k}-again", follow_symlinks=False)
        os.link(p, f"{root}/b/c/{k}-third", follow_symlinks=False)
    os.symlink("a/file", f"{root}/plain-symlink")  # one name only: no group


def link_counts(root: str) -> dict[str, tuple[int, int]]:
    """Path -> (link count, number of the names sharing its inode) of non-directories."""
    seen: dict[tuple[int, int], int] = {}
    found = []
    for d, dirs, files in os.walk(root):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n)
            st = os.lstat(p)
            seen[(st.st_dev, st.st_ino)] = seen.get((st.st_dev, st.st_ino), 0) + 1
            found.append((os.path.relpath(p, root), st))
    return {rel: (st.st_nlink, seen[(st.st_dev, st.st_ino)]) for rel, st in sorted(found)}


@pytest.fixture
def linked(tmp_path):
    src = str(tmp_path / "src")
    make_links_tree(src)
    return src


def test_pack_stores_a_group_of_every_type(linked):
    S = MemoryStore()
    top, stats = import_tree(linked, S)
    assert not stats.errors
    kinds = {p: e for p, e in walk(top, S)}
    for k in KINDS:
        first = kinds[f"a/{k}"]
        assert first.type in GROUP_TYPES and first.ino is not None, k
        for later in (f"b/{k}-again", f"b/c/{k}-third"):
            assert kinds[later].type == T_HARDLINK and kinds[later].ino == first.ino
    assert kinds["a/symlink"].target == "../somewhere/else"
    assert kinds["a/chr"].rdev == ("c", 1, 3) and kinds["a/blk"].rdev == ("b", 7, 9)
    assert kinds["plain-symlink"].ino is None
    assert len({kinds[f"a/{k}"].ino for k in KINDS}) == len(KINDS)


def test_unpack_restores_links_of_every_type_exactly(linked, tmp_path):
    S = MemoryStore()
    top, _ = import_tree(linked, S)
    out = str(tmp_path / "out")
    stats = export_tree(top, S, out)
    assert not stats.errors
    assert rsync_diff(linked, out) == []
    counts = link_counts(out)
    assert counts == link_counts(linked)
    for k in KINDS:
        assert counts[f"a/{k}"] == (3, 3), k


def test_unpack_of_a_subtree_whose_groups_start_outside(linked, tmp_path):
    S = MemoryStore()
    top, _ = import_tree(linked, S)
    sub = resolve(top, "b", S)
    out = str(tmp_path / "out")
    export_tree(sub, S, out, links=LinkResolver(top, S))
    for k in KINDS:
        a, b = os.lstat(f"{out}/{k}-again"), os.lstat(f"{out}/c/{k}-third")
        assert (a.st_ino, a.st_nlink) == (b.st_ino, 2), k
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(os.lstat(f"{linked}/a/{k}").st_mode)
    assert os.readlink(f"{out}/symlink-again") == "../somewhere/else"


def test_safe_unpack_leaves_out_every_name_of_a_device(linked, tmp_path):
    S = MemoryStore()
    top, _ = import_tree(linked, S)
    out = str(tmp_path / "out")
    stats = export_tree(top, S, out, safe=True)
    assert not stats.errors
    for k in ("chr", "blk"):
        for p in (f"a/{k}", f"b/{k}-again", f"b/c/{k}-third"):
            assert not os.path.lexists(f"{out}/{p}")
    assert stats.unsafe_skipped == 6
    assert os.lstat(f"{out}/b/fifo-again").st_nlink == 3


def test_tar_export_keeps_links_of_every_type_for_gnu_tar(tmp_path):
    src = str(tmp_path / "src")
    make_links_tree(src, sockets=False)  # tar cannot hold sockets
    S = MemoryStore()
    top, _ = import_tree(src, S)
    tarpath = tmp_path / "t.tar"
    with open(tarpath, "wb") as f:
        write_tar(top, S, f)
    out = tmp_path / "tarout"
    out.mkdir()
    r = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tarpath), "-C", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert rsync_diff(src, str(out)) == []
    assert link_counts(str(out)) == link_counts(src)


def _linked_fs_tree():
    """A tree written by the mount's filesystem: a symlink and a fifo with two names each."""
    S = MemoryStore()
    fs = FileSystem(S, make_dir([], S))
    try:
        sl = fs.symlink(ROOT_INO, "sl", "target", 0, 0)
        fifo = fs.mknod(ROOT_INO, "fifo", 0o10640, 0, 0, 0)
        d = fs.mkdir(ROOT_INO, "z", 0o755, 0, 0)  # after the first names in walk order
        fs.link(sl.ino, d.ino, "sl2")
        fs.link(fifo.ino, d.ino, "fifo2")
        return S, fs.sync()
    finally:
        fs.close()


def test_the_mount_writes_groups_of_every_type_that_others_read(tmp_path):
    S, top = _linked_fs_tree()
    kinds = {p: e for p, e in walk(top, S)}
    assert kinds["z/sl2"].type == T_HARDLINK and kinds["sl"].type == T_SYMLINK
    assert kinds["z/fifo2"].type == T_HARDLINK and kinds["fifo"].type == T_FIFO
    assert decode_ext(top.ext) is not None  # the table, version 2
    assert top.ext[len(EXT_MAGIC)] == 2
    r = LinkResolver(top, S)
    assert r.resolve_link(kinds["z/sl2"]).target == "target"
    out = str(tmp_path / "out")
    export_tree(top, S, out)
    assert os.readlink(f"{out}/z/sl2") == "target"
    assert os.lstat(f"{out}/sl").st_ino == os.lstat(f"{out}/z/sl2").st_ino
    assert os.lstat(f"{out}/fifo").st_nlink == 2


def test_a_new_filesystem_reads_the_groups_back(tmp_path):
    S, top = _linked_fs_tree()
    fs = FileSystem(S, top)
    try:
        a = fs.lookup(ROOT_INO, "sl")
        d = fs.lookup(ROOT_INO, "z")
        b = fs.lookup(d.ino, "sl2")
        assert a.ino == b.ino and a.nlink == 2
        assert fs.readlink(b.ino) == "target"
        f = fs.lookup(d.ino, "fifo2")
        assert stat.S_ISFIFO(f.mode) and f.nlink == 2
        fs.unlink(ROOT_INO, "fifo")
        assert fs.getattr(f.ino).nlink == 1
        top2 = fs.sync()
    finally:
        fs.close()
    kinds = {p: e for p, e in walk(top2, S)}
    assert "fifo" not in kinds and kinds["z/fifo2"].type == T_FIFO


def test_a_version_1_table_of_file_groups_still_reads():
    """Trees written before format 2 (file groups, table version 1) open as before."""
    S = MemoryStore()
    fs = FileSystem(S, make_dir([], S))
    try:
        fh, a = fs.create(ROOT_INO, "f", 0o100644, os.O_WRONLY, 0, 0)
        fs.write(fh, 0, b"shared")
        fs.release(fh)
        fs.link(a.ino, ROOT_INO, "g")
        top = fs.sync()
    finally:
        fs.close()
    assert top.ext.startswith(EXT_MAGIC + b"\x02")
    old = top.with_changes(ext=EXT_MAGIC + b"\x01" + top.ext[len(EXT_MAGIC) + 1 :])
    assert decode_ext(old.ext) == decode_ext(top.ext)
    fs = FileSystem(S, old)
    try:
        assert fs.links.complete  # the table was used, no walk
        g = fs.lookup(ROOT_INO, "g")
        assert g.nlink == 2 and g.ino == fs.lookup(ROOT_INO, "f").ino
    finally:
        fs.close()
    assert LinkResolver(old, S).resolve(1).name == "f"


def test_unknown_table_version_falls_back_to_a_walk():
    S, top = _linked_fs_tree()
    future = top.with_changes(ext=EXT_MAGIC + b"\x09" + top.ext[len(EXT_MAGIC) + 1 :])
    fs = FileSystem(S, future)
    try:
        d = fs.lookup(ROOT_INO, "z")
        assert fs.readlink(fs.lookup(d.ino, "sl2").ino) == "target"
    finally:
        fs.close()


def test_many_groups_pack_and_unpack(tmp_path):
    """2,000 groups of symlinks and fifos in 100 directories: round trip exact."""
    src = tmp_path / "src"
    for i in range(100):
        (src / f"d{i:03}").mkdir(parents=True)
    for i in range(1000):
        a = src / f"d{i % 100:03}" / f"s{i}"
        os.symlink(f"t{i}", a)
        os.link(a, src / f"d{(i + 1) % 100:03}" / f"s{i}-b", follow_symlinks=False)
        f = src / f"d{i % 100:03}" / f"p{i}"
        os.mkfifo(f)
        os.link(f, src / f"d{(i + 7) % 100:03}" / f"p{i}-b")
    S = MemoryStore()
    top, _ = import_tree(str(src), S)
    n = sum(1 for _, e in walk(top, S) if e.type == T_HARDLINK)
    assert n == 2000
    out = str(tmp_path / "out")
    export_tree(top, S, out)
    assert rsync_diff(str(src), out) == []


def test_dirent_of_a_linked_symlink_round_trips_in_binary_and_text():
    from vtstore.tree.dirent import decode_dirent, parse_dirent

    d = Dirent(T_SYMLINK, name="l", target="x", ino=3)
    assert decode_dirent(d.encode()) == d
    assert parse_dirent(str(d)) == d and d.is_linked
    assert not Dirent(T_SYMLINK, name="l", target="x").is_linked
