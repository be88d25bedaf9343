"""`file:X.vtd`: a store in one data file, its index built by a background scan."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from vtstore.errors import HashClassMismatchError, StoreError
from vtstore.hashes import Hash_SHA1
from vtstore.stores.datadir import DataDir
from vtstore.stores.filestore import FileStore
from vtstore.stores.spec import open_store_spec


def blocks(n):
    return [b"block %d " % i * (1 + i % 300) for i in range(n)]


def test_index_rebuilt_by_background_scan(tmp_path, leftovers):
    path = tmp_path / "x.vtd"
    bs = blocks(3000)
    with FileStore(path) as s:
        hs = s.add_many(bs)
    os.unlink(str(path) + ".index")
    os.unlink(str(path) + ".index-lock")
    s = FileStore(path)
    try:
        # a fetch that comes before the scan reached its block waits for it
        assert s[hs[-1]] == bs[-1]
        assert s.wait_scanned(10)
        assert len(s) == len(bs)
        assert list(s.hashcodes()) == sorted(hs)
        assert all(s[h] == b for h, b in zip(hs, bs, strict=True))
    finally:
        s.close()
    leftovers.check()


def test_concurrent_fetches_during_scan(tmp_path):
    path = tmp_path / "x.vtd"
    bs = blocks(2000)
    with FileStore(path) as s:
        hs = s.add_many(bs)
    os.unlink(str(path) + ".index")
    errors = []
    with FileStore(path, readonly=True) as s:

        def fetch(part):
            try:
                for h in part:
                    assert h in s
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=fetch, args=(hs[i::4],)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors


def test_a_datadir_data_file_is_a_file_store(tmp_path):
    with DataDir(tmp_path / "d") as d:
        hs = d.add_many(blocks(100))
    (f,) = (tmp_path / "d" / "data").iterdir()
    shutil.copy(f, tmp_path / "copy.vtd")
    with open_store_spec(f"file:{tmp_path / 'copy.vtd'}", readonly=True) as s:
        assert len(s) == 100
        assert all(s[h] == b for h, b in zip(hs, blocks(100), strict=True))


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "x.vtd"
    with FileStore(path) as a:
        a.add(b"a")
        with FileStore(path) as b:
            assert len(b) == 0  # not flushed yet
            a.flush()
            assert len(b) == 1
            with pytest.raises(StoreError, match="being written"):
                b.add(b"b")
        a.add(b"c")
        a.flush()
        with FileStore(path, readonly=True) as r:
            assert r.hashclass.from_data(b"c") in r


def test_hashclass_comes_from_the_file(tmp_path):
    path = tmp_path / "x.vtd"
    with FileStore(path, hashclass=Hash_SHA1) as s:
        s.add(b"x")
    with FileStore(path) as s:
        assert s.hashclass is Hash_SHA1
    with pytest.raises(HashClassMismatchError):
        FileStore(path, hashclass=__import__("vtstore.hashes").hashes.Hash_BLAKE3)


def test_torn_tail_ignored_then_truncated(tmp_path):
    path = tmp_path / "x.vtd"
    with FileStore(path) as s:
        hs = s.add_many(blocks(50))
    with open(path, "ab") as f:
        f.write(b"\x01\x90\x80\x00torn")
    os.unlink(str(path) + ".index")
    with FileStore(path) as s:
        assert len(s) == 50
        s.add(b"after the tear")
        s.flush()
    with FileStore(path) as s:
        assert len(s) == 51
        assert all(h in s for h in hs)


def test_not_a_data_file(tmp_path):
    (tmp_path / "x.vtd").write_bytes(b"this is not a data file")
    with pytest.raises(StoreError, match="magic"):
        FileStore(tmp_path / "x.vtd")
