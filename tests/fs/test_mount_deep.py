"""A tree 1,000 directories deep through a real mount: lookups, `find`, a hard
link to the bottom (the link table is built by a walk), a write at the bottom
synced back (every directory on the way re-encoded), a mount of a deep sub-path.
No Python recursion anywhere on these paths."""

from __future__ import annotations

import os
import subprocess

from vtstore.archive import Archive
from vtstore.blocks import block_for
from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import make_dir
from vtstore.tree.dirent import T_HARDLINK, FileDirent, HardLinkDirent
from vtstore.tree.links import LinkResolver, iter_tree

from .conftest import needs_fuse

pytestmark = needs_fuse

DEPTH = 1000


def build(store_path: str, archive: str) -> None:
    with DataDir(store_path) as s:
        bottom = FileDirent("bottom", block_for(b"at the bottom\n" * 100, s), ino=1)
        e = make_dir([bottom], s, name="d")
        for _ in range(DEPTH - 1):
            e = make_dir([e], s, name="d")
        top = make_dir([e, HardLinkDirent("link", 1)], s)
    Archive(archive).update(top)


def test_a_tree_1000_levels_deep(place, mounts):
    store, archive, mnt = place
    build(store, archive)
    deep = "/".join(["d"] * DEPTH)
    m = mounts(store, archive, mnt)
    with open(f"{mnt}/{deep}/bottom", "rb") as f:
        assert f.read() == b"at the bottom\n" * 100
    with open(f"{mnt}/link", "rb") as f:
        assert f.read() == b"at the bottom\n" * 100
    assert os.stat(f"{mnt}/link").st_ino == os.stat(f"{mnt}/{deep}/bottom").st_ino
    r = subprocess.run(["find", mnt], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 + DEPTH + 2
    with open(f"{mnt}/{deep}/new", "w") as f:
        f.write("written at the bottom")
    with open(f"{mnt}/{deep}/bottom", "ab") as f:
        f.write(b"more")
    assert m.umount() == 0, m.output()
    with DataDir(store, readonly=True) as s:
        top = Archive(archive).last().dirent
        paths = {"/".join(p): e for p, e in iter_tree(top, s)}
        assert paths[deep + "/new"].block.data(s) == b"written at the bottom"
        assert paths["link"].type == T_HARDLINK
        f = LinkResolver(top, s).resolve(paths["link"].ino)
        assert f.block.data(s) == b"at the bottom\n" * 100 + b"more"
    # a mount of a deep sub-path, changed: put back into the top without recursion
    sub = "/".join(["d"] * (DEPTH - 1))
    m = mounts(store, f"{archive}/{sub}", mnt)
    with open(f"{mnt}/d/bottom", "rb") as f:
        assert f.read().endswith(b"more")
    with open(f"{mnt}/d/third", "w") as f:
        f.write("third")
    assert m.umount() == 0, m.output()
    with DataDir(store, readonly=True) as s:
        top = Archive(archive).last().dirent
        paths = {"/".join(p): e for p, e in iter_tree(top, s)}
        assert paths[deep + "/third"].block.data(s) == b"third"
        assert paths[deep + "/new"].block.data(s) == b"written at the bottom"
