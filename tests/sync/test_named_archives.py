"""`vtstore.named_archives`: listing and opening named archives on each store
kind (datadir, cache and progress wrappers, proxy, crypt, memory)."""

from __future__ import annotations

import pytest

from vtstore.archive import Archive, ArchiveError
from vtstore.blocks import HashCodeBlock
from vtstore.errors import StoreError
from vtstore.named_archives import NoArchivesError, keeps_archives, list_archives, open_archive
from vtstore.stores.cache import CacheStore
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.stores.progress import ProgressStore
from vtstore.stores.proxy import ProxyStore
from vtstore.tree.dirent import T_FILE, Dirent


def _state(store, text: bytes) -> Dirent:
    return Dirent(T_FILE, name="f", block=HashCodeBlock(store.add(text), len(text)))


def test_datadir_lists_and_opens(tmp_path):
    with DataDir(tmp_path / "d") as dd:
        assert list_archives(dd) == []
        with pytest.raises(ArchiveError, match="no such archive"):
            open_archive(dd, "home")
        a = open_archive(dd, "home", create=True)
        assert isinstance(a, Archive) and not a.exists()
        a.update(_state(dd, b"one"), when=1.0)
        open_archive(dd, "work", create=True).update(_state(dd, b"two"), when=2.0)
        assert list_archives(dd) == ["home", "work"]
        got = open_archive(dd, "home")
        assert [e.when for e in got.entries()] == [1.0]
        assert got.last().when == 1.0 and got.at(0.5) is None
        with pytest.raises(StoreError, match="bad archive name"):
            open_archive(dd, "../x", create=True)


def test_wrappers_pass_lookups_through(tmp_path):
    dd = DataDir(tmp_path / "d")
    open_archive(dd, "a", create=True).update(_state(dd, b"x"), when=5.0)
    cached = CacheStore(MemoryStore(hashclass=dd.hashclass), dd)
    wrapped = ProgressStore(cached)
    try:
        assert keeps_archives(wrapped)
        assert list_archives(wrapped) == ["a"]
        assert open_archive(wrapped, "a").last().when == 5.0
    finally:
        wrapped.close()


def test_memory_keeps_none():
    m = MemoryStore()
    assert not keeps_archives(m)
    assert list_archives(m) == []
    with pytest.raises(NoArchivesError, match="keeps no named archives"):
        open_archive(m, "x", create=True)


def test_proxy_reads_from_read_stores_and_creates_in_save(tmp_path):
    d1, d2 = DataDir(tmp_path / "d1"), DataDir(tmp_path / "d2")
    mem = MemoryStore(hashclass=d1.hashclass)
    open_archive(d2, "old", create=True).update(_state(d2, b"o"), when=1.0)
    p = ProxyStore(save=[mem, d1], read=[d1, d2])
    try:
        assert list_archives(p) == ["old"]
        assert open_archive(p, "old").last().when == 1.0
        with pytest.raises(ArchiveError, match="no archive 'new'"):
            open_archive(p, "new")
        new = open_archive(p, "new", create=True)
        # the first save store keeping archives holds it
        assert str(new.path).startswith(str(tmp_path / "d1"))
        new.update(_state(p, b"n"), when=2.0)
        assert list_archives(p) == ["new", "old"]
    finally:
        p.close()


def test_crypt_store_archives_are_encrypted(tmp_path, monkeypatch):
    from vtstore.stores.spec import open_store_spec

    monkeypatch.setenv("VT_PASSPHRASE", "pw")
    import subprocess
    import sys

    from ..net.conftest import subprocess_env

    env = subprocess_env()
    env["VT_PASSPHRASE"] = "pw"
    d = tmp_path / "d"
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", f"crypt:{d}", "crypt", "init"],
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"vt crypt init: {r.stderr}")
    with open_store_spec(f"crypt:{d}") as cs:
        open_archive(cs, "sec", create=True).update(_state(cs, b"secret"), when=3.0)
        assert list_archives(cs) == ["sec"]
        assert open_archive(cs, "sec").last().when == 3.0
    raw = (d / "sec.vt").read_bytes()
    assert raw.startswith(b"!") and b"when" not in raw
