"""The refs view, `vt mount --refs MNT` (issue 19, item 5).

Any dirent ref (or a directory's block ref) is a name at the top, resolved on
demand; a symlink into the view reads the same after a remount; names that
are not refs, or refs whose blocks the store lacks, are ENOENT; the view is
read-only; hard links inside a ref's tree read right.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from .conftest import force_unmount, needs_fuse, vt, vt_env

pytestmark = needs_fuse


def mount_refs(store: str, mnt: str) -> None:
    """`vt mount --refs MNT` (it detaches once it serves)."""
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", store, "mount", "--refs", mnt],
        capture_output=True,
        text=True,
        env=vt_env(),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mnt)


@pytest.fixture
def refs_place(tmp_path):
    mnts = []
    yield tmp_path, mnts
    for m in mnts:
        force_unmount(m)


def test_refs_view_resolves_and_a_symlink_survives_remount(refs_place):
    tmp_path, mnts = refs_place
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("content a")
    big = os.urandom(3 << 20)
    (src / "big.bin").write_bytes(big)
    os.link(src / "big.bin", src / "docs" / "big-again")
    ref = vt("-S", store, "pack", "-a", str(tmp_path / "s.vt"), str(src)).stdout.strip()
    assert ref.startswith("D{")
    mnt = str(tmp_path / "mnt")
    mnts.append(mnt)
    mount_refs(store, mnt)
    assert os.listdir(mnt) == []
    assert open(f"{mnt}/{ref}/docs/a.txt").read() == "content a"
    assert sorted(os.listdir(f"{mnt}/{ref}")) == ["big.bin", "docs"]
    with open(f"{mnt}/{ref}/docs/big-again", "rb") as f:
        assert f.read() == big
    a, b = os.stat(f"{mnt}/{ref}/big.bin"), os.stat(f"{mnt}/{ref}/docs/big-again")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert os.listdir(mnt) == [ref]  # what was looked up
    link = tmp_path / "link"
    os.symlink(f"{mnt}/{ref}/docs/a.txt", link)
    # not refs, refs of blocks the store lacks: ENOENT; read-only
    for name in ("plain", "D{nonsense", "I{hash:blake3:" + "0" * 64 + ",span:5}"):
        with pytest.raises(FileNotFoundError):
            os.stat(f"{mnt}/{name}")
    with pytest.raises(OSError) as e:
        open(f"{mnt}/{ref}/new", "w")
    assert e.value.errno == errno.EROFS
    assert vt("umount", mnt).returncode == 0
    assert not os.path.ismount(mnt)
    with pytest.raises(OSError):
        link.read_text()
    mount_refs(store, mnt)
    assert link.read_text() == "content a"  # a permanent, content-addressed link
    assert vt("umount", mnt).returncode == 0


def test_a_directory_block_ref_is_a_name_too(refs_place):
    tmp_path, mnts = refs_place
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    ref = vt("-S", store, "pack", "-a", str(tmp_path / "s.vt"), str(src)).stdout.strip()
    from vtstore.tree.dirent import parse_dirent

    block = str(parse_dirent(ref).block)
    mnt = str(tmp_path / "mnt")
    mnts.append(mnt)
    mount_refs(store, mnt)
    assert os.listdir(f"{mnt}/{block}") == ["f"]
    assert open(f"{mnt}/{block}/f").read() == "f"
    assert vt("umount", mnt).returncode == 0
