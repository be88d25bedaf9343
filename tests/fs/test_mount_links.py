"""Hard links in mounts of a sub-path and in the history view (`mount -a`).

The group's file (its first name, `a/f`) lies outside the mounted `b/`; in
the history view every state has its own groups, whose numbers collide from
one state to the next.
"""

from __future__ import annotations

import os

from vtstore.archive import Archive
from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import resolve
from vtstore.tree.dirent import T_FILE, T_HARDLINK
from vtstore.tree.links import LinkResolver

from .conftest import needs_fuse, vt

pytestmark = needs_fuse


def make_linked(src, content: bytes) -> None:
    (src / "a").mkdir(parents=True, exist_ok=True)
    (src / "b").mkdir(exist_ok=True)
    for p in ("a/f", "b/g", "b/h"):
        if (src / p).exists():
            os.unlink(src / p)
    (src / "a" / "f").write_bytes(content)
    os.link(src / "a" / "f", src / "b" / "g")
    os.link(src / "a" / "f", src / "b" / "h")


def test_mount_of_a_subpath_reads_links_whose_file_is_outside(place, mounts, tmp_path):
    store, archive, mnt = place
    src = tmp_path / "src"
    content = os.urandom(200_000)
    make_linked(src, content)
    (src / "b" / "plain").write_text("plain")
    vt("-S", store, "pack", "-a", archive, str(src))
    m = mounts(store, archive + "/b", mnt, "-r")
    assert sorted(os.listdir(mnt)) == ["g", "h", "plain"]
    for name in ("g", "h"):
        with open(f"{mnt}/{name}", "rb") as f:
            assert f.read() == content
    sg, sh = os.stat(f"{mnt}/g"), os.stat(f"{mnt}/h")
    assert sg.st_ino == sh.st_ino and sg.st_size == len(content)
    m.umount()


def test_writable_mount_of_a_subpath_keeps_the_tree_consistent(place, mounts, tmp_path):
    store, archive, mnt = place
    src = tmp_path / "src"
    old = os.urandom(50_000)
    make_linked(src, old)
    vt("-S", store, "pack", "-a", archive, str(src))
    m = mounts(store, archive + "/b", mnt)
    with open(f"{mnt}/g", "rb") as f:
        assert f.read() == old
    with open(f"{mnt}/g", "r+b") as f:
        f.write(b"NEW")
    with open(f"{mnt}/h", "rb") as f:
        assert f.read() == b"NEW" + old[3:]
    os.link(f"{mnt}/h", f"{mnt}/i")
    assert os.stat(f"{mnt}/i").st_nlink == 4  # g, h, i and a/f outside
    plain = b"a file that gets a second name"
    with open(f"{mnt}/p", "wb") as f:
        f.write(plain)
    os.link(f"{mnt}/p", f"{mnt}/q")  # a new group: its number is new in the whole tree
    assert m.umount() == 0
    # what the archive now says, read as every reader does
    with DataDir(store, readonly=True) as s:
        top = Archive(archive).last().dirent
        r = LinkResolver(top, s)
        got = {}
        for p in ("a/f", "b/g", "b/h", "b/i"):
            d = r.resolve_link(resolve(top, p, s))
            got[p] = d.block.data(s)
        # one inode, as on a real filesystem: the write reached a/f outside the mount
        new = b"NEW" + old[3:]
        assert got == {"a/f": new, "b/g": new, "b/h": new, "b/i": new}
        inos = {resolve(top, p, s).ino for p in ("a/f", "b/g", "b/h", "b/i")}
        assert len(inos) == 1
        kinds = [resolve(top, p, s).type for p in ("a/f", "b/g", "b/h", "b/i")]
        assert kinds == [T_FILE, T_HARDLINK, T_HARDLINK, T_HARDLINK]
    out = tmp_path / "out"
    vt("-S", store, "unpack", archive, str(out))
    assert (out / "b" / "h").read_bytes() == new
    st = {p: os.stat(out / p) for p in ("a/f", "b/g", "b/h", "b/i")}
    assert len({x.st_ino for x in st.values()}) == 1 and st["a/f"].st_nlink == 4
    assert (out / "b" / "q").read_bytes() == plain
    assert os.stat(out / "b" / "q").st_ino == os.stat(out / "b" / "p").st_ino != st["a/f"].st_ino


def test_history_view_reads_links_of_every_state(place, mounts, tmp_path):
    store, archive, mnt = place
    src = tmp_path / "src"
    contents = [os.urandom(30_000 + i) for i in range(3)]
    for c in contents:
        make_linked(src, c)
        vt("-S", store, "pack", "-a", archive, str(src))
    m = mounts(store, archive, mnt, "-a")
    names = sorted(os.listdir(mnt))
    assert len(names) == 3
    for n, c in zip(names, contents, strict=True):
        for p in ("a/f", "b/g", "b/h"):
            with open(f"{mnt}/{n}/{p}", "rb") as f:
                assert f.read() == c, (n, p)
        assert os.stat(f"{mnt}/{n}/b/g").st_nlink == 3
        assert os.stat(f"{mnt}/{n}/b/g").st_ino == os.stat(f"{mnt}/{n}/a/f").st_ino
    assert os.stat(f"{mnt}/{names[0]}/a/f").st_ino != os.stat(f"{mnt}/{names[1]}/a/f").st_ino
    m.umount()


def test_write_then_unlink_every_name_in_the_subpath_keeps_the_outside_file(
    place, mounts, tmp_path
):
    store, archive, mnt = place
    src = tmp_path / "src"
    make_linked(src, b"old content")
    vt("-S", store, "pack", "-a", archive, str(src))
    m = mounts(store, archive + "/b", mnt)
    with open(f"{mnt}/g", "wb") as f:
        f.write(b"changed, then every name here removed")
    os.unlink(f"{mnt}/g")
    os.unlink(f"{mnt}/h")
    assert os.listdir(mnt) == []
    assert m.umount() == 0
    assert (
        vt("-S", store, "cat", archive + "/a/f").stdout == "changed, then every name here removed"
    )
    assert vt("-S", store, "ls", archive + "/b").stdout == ""


def test_mount_of_a_dirent_ref_with_a_path(place, mounts, tmp_path):
    store, archive, mnt = place
    src = tmp_path / "src"
    make_linked(src, b"through a ref")
    vt("-S", store, "pack", "-a", archive, str(src))
    ref = str(Archive(archive).last().dirent)
    m = mounts(store, ref + "/b", mnt)
    with open(f"{mnt}/h", "rb") as f:
        assert f.read() == b"through a ref"
    with open(f"{mnt}/new", "w") as f:
        f.write("new")
    assert m.umount() == 0
    new_top = m.output().strip().splitlines()[-1]
    assert new_top.startswith("D{")
    assert vt("-S", store, "cat", new_top + "/b/new").stdout == "new"
    assert vt("-S", store, "cat", new_top + "/b/g").stdout == "through a ref"
