"""The whole-store history view, `vt mount -a --every-archive MNT` (issue 19, item 5).

Every archive of the store is a directory, every state a directory in it
(named by its time), and `latest` links to the newest; an archive made or a
state recorded while mounted appears; hard links in every state read right.
"""

from __future__ import annotations

import os
import time

import pytest

from vtstore.named_archives import open_archive
from vtstore.stores.datadir import DataDir
from vtstore.tree.fsimport import import_tree

from .conftest import force_unmount, needs_fuse, vt

pytestmark = needs_fuse


def record(store: str, name: str, src: str, when: float) -> None:
    with DataDir(store) as S:
        top, _ = import_tree(src, S)
        S.flush()
        open_archive(S, name, create=True).update(top, when=when)


@pytest.fixture
def mnt(tmp_path):
    m = str(tmp_path / "mnt")
    os.makedirs(m)
    yield m
    force_unmount(m)


def test_every_archive_every_state_and_latest(tmp_path, mnt):
    store = str(tmp_path / "store")
    vt("-S", store, "init")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one")
    os.link(src / "f", src / "g")
    record(store, "web", str(src), 1_700_000_000)
    (src / "f").write_text("two")
    record(store, "web", str(src), 1_700_000_100)
    record(store, "db", str(src), 1_700_000_200)
    vt("-S", store, "mount", "-a", "--every-archive", mnt)
    assert sorted(os.listdir(mnt)) == ["db", "web"]
    states = sorted(n for n in os.listdir(f"{mnt}/web") if n != "latest")
    assert len(states) == 2 and "latest" in os.listdir(f"{mnt}/web")
    assert open(f"{mnt}/web/{states[0]}/f").read() == "one"
    assert open(f"{mnt}/web/latest/f").read() == "two"
    assert os.readlink(f"{mnt}/web/latest") == states[1]
    for s in states:
        a, b = os.stat(f"{mnt}/web/{s}/f"), os.stat(f"{mnt}/web/{s}/g")
        assert a.st_ino == b.st_ino and a.st_nlink == 2
    # two archives' states with colliding group numbers stay apart
    assert os.stat(f"{mnt}/db/latest/f").st_ino != os.stat(f"{mnt}/web/latest/f").st_ino
    # recorded meanwhile: a new archive and a new state
    (src / "f").write_text("three")
    record(store, "new", str(src), 1_700_000_300)
    record(store, "web", str(src), 1_700_000_400)
    time.sleep(1.2)  # the kernel's entry cache
    assert sorted(os.listdir(mnt)) == ["db", "new", "web"]
    assert len([n for n in os.listdir(f"{mnt}/web") if n != "latest"]) == 3
    assert open(f"{mnt}/new/latest/f").read() == "three"
    assert vt("umount", mnt).returncode == 0


def test_every_archive_needs_a_and_only_a_mountpoint(tmp_path, mnt):
    store = str(tmp_path / "store")
    vt("-S", store, "init")
    r = vt("-S", store, "mount", "--every-archive", mnt, check=False)
    assert r.returncode == 1 and "--every-archive goes with -a" in r.stderr
    r = vt("-S", store, "mount", "-a", "--every-archive", mnt, "x", check=False)
    assert r.returncode == 1 and "only MOUNTPOINT" in r.stderr
