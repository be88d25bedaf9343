"""Salted directories (issue 19, item 6): `vt pack --salt-dirs`, `vt mount --salt-dirs`.

Two identical trees packed salted share no directory block (without the
option they share all); an archive's salt is kept from state to state, so an
unchanged tree re-packed writes no new directory block; a salted tree unpacks
exactly; a mount writes salted directories (with `--salt-dirs`, or because the
tree it mounts is salted).
"""

from __future__ import annotations

import os

from vtstore.archive import Archive
from vtstore.blocks import HashCodeBlock, IndirectBlock
from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import salt_of, walk

from .conftest import needs_fuse, rsync_diff, vt


def make_tree(root) -> None:
    for i in range(30):
        d = root / f"d{i:02}" / "sub"
        d.mkdir(parents=True)
        for j in range(40):
            (d / f"f{j}").write_bytes(b"same content %d" % j)
    (root / "empty").mkdir()


def dir_blocks(store_path: str, archive: str) -> set:
    """Hashcodes of every block of every directory of the archive's latest state."""
    with DataDir(store_path, readonly=True) as S:
        top = Archive(archive).last().dirent
        out = set()
        stack = [top.block] + [e.block for _, e in walk(top, S) if e.is_dir]
        while stack:
            b = stack.pop()
            if isinstance(b, HashCodeBlock):
                out.add(b.hashcode)
            elif isinstance(b, IndirectBlock):
                out.add(b.hashcode)
                stack.extend(b.subblocks(S))
        return out


def salted(store_path: str, archive: str) -> bytes | None:
    with DataDir(store_path, readonly=True) as S:
        return salt_of(Archive(archive).last().dirent, S)


def test_salted_packs_of_identical_trees_share_no_directory_block(tmp_path):
    """The same tree (same names, contents and metadata) packed twice."""
    store = str(tmp_path / "store")
    a = tmp_path / "a"
    make_tree(a)
    arch = {n: str(tmp_path / f"{n}.vt") for n in ("p1", "p2", "s1", "s2")}
    vt("-S", store, "pack", "-a", arch["p1"], str(a))
    vt("-S", store, "pack", "-a", arch["p2"], str(a))
    plain_1, plain_2 = dir_blocks(store, arch["p1"]), dir_blocks(store, arch["p2"])
    assert plain_1 == plain_2 and len(plain_1) >= 61  # the control: unsalted, all shared
    vt("-S", store, "pack", "--salt-dirs", "-a", arch["s1"], str(a))
    vt("-S", store, "pack", "--salt-dirs", "-a", arch["s2"], str(a))
    s1, s2 = dir_blocks(store, arch["s1"]), dir_blocks(store, arch["s2"])
    assert len(s1) >= len(plain_1) and len(s2) >= len(plain_1)
    assert not s1 & s2 and not s1 & plain_1
    salt = salted(store, arch["s1"])
    assert salt is not None and salt != salted(store, arch["s2"])
    out = str(tmp_path / "out")
    vt("-S", store, "unpack", arch["s1"], out)
    assert rsync_diff(str(a), out) == []


def test_an_archive_keeps_its_salt(tmp_path):
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    make_tree(src)
    archive = str(tmp_path / "s.vt")
    vt("-S", store, "pack", "--salt-dirs", "-a", archive, str(src))
    first, salt = dir_blocks(store, archive), salted(store, archive)
    # without the option: the salt is kept and nothing is written again
    vt("-S", store, "pack", "-a", archive, str(src))
    assert dir_blocks(store, archive) == first and salted(store, archive) == salt
    (src / "d03" / "sub" / "f1").write_bytes(b"changed")
    vt("-S", store, "pack", "-a", archive, str(src))
    now = dir_blocks(store, archive)
    assert salted(store, archive) == salt
    assert len(first - now) <= 3 and len(now - first) <= 3  # top, d03, d03/sub
    # an unsalted archive packed with --salt-dirs is salted from then on, wholly
    plain = str(tmp_path / "p.vt")
    vt("-S", store, "pack", "-a", plain, str(src))
    before = dir_blocks(store, plain)
    vt("-S", store, "pack", "--salt-dirs", "-a", plain, str(src))
    assert salted(store, plain) is not None and not dir_blocks(store, plain) & before


@needs_fuse
def test_mounts_write_salted_directories(place, mounts, tmp_path):
    store, archive, mnt = place
    m = mounts(store, archive, mnt, "--salt-dirs")
    os.makedirs(f"{mnt}/x/y")
    with open(f"{mnt}/x/y/f", "w") as f:
        f.write("hello")
    assert m.umount() == 0, m.output()
    salt = salted(store, archive)
    assert salt is not None
    with DataDir(store, readonly=True) as S:
        top = Archive(archive).last().dirent
        for _, e in walk(top, S):
            if e.is_dir:
                assert salt_of(e, S) == salt
    # a salted tree stays salted through a mount without the option
    mnt2 = str(tmp_path / "mnt2")
    m2 = mounts(store, archive, mnt2)
    os.makedirs(f"{mnt2}/new")
    with open(f"{mnt2}/new/g", "w") as f:
        f.write("g")
    assert m2.umount() == 0, m2.output()
    with DataDir(store, readonly=True) as S:
        top = Archive(archive).last().dirent
        dirs = [e for _, e in walk(top, S) if e.is_dir]
        assert len(dirs) == 4 and all(  # the top, x, x/y, new
            salt_of(e, S) == salt for e in dirs
        )
        assert salt_of(top, S) == salt
