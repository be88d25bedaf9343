"""ProxyStore roles: save, read, read2, copy2, save2."""

from __future__ import annotations

import pytest

from vtstore.errors import HashClassMismatchError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.stores.proxy import ProxyStore
from vtstore.stores.spec import open_store_spec


def test_save_goes_to_every_save_store():
    a, b = MemoryStore(), MemoryStore()
    with ProxyStore(save=[a, b], owns=False) as p:
        hs = p.add_many([b"one", b"two"])
        assert p.add(b"three") not in hs
    assert len(a) == len(b) == 3
    assert all(h in a and h in b for h in hs)


def test_read_then_read2_and_copy2():
    local, remote = MemoryStore(), MemoryStore()
    h = remote.add(b"only remote")
    with ProxyStore(save=[local], read=[local], read2=[remote], copy2=[local], owns=False) as p:
        assert h in p
        assert h not in local
        assert p[h] == b"only remote"
        assert h in local  # copied on read
        assert len(p) == 1  # listing covers the read stores
        assert p.get(Hash_BLAKE3.from_data(b"nowhere")) is None


def test_read2_garbage_is_not_copied():
    local = MemoryStore()
    liar = MemoryStore()
    h = Hash_BLAKE3.from_data(b"the truth")
    liar._add_new(h, b"a lie")  # a broken remote store
    with ProxyStore(save=[local], read2=[liar], copy2=[local], owns=False) as p:
        from vtstore.errors import CorruptBlockError

        with pytest.raises(CorruptBlockError):
            p[h]
        assert h not in local


def test_corrupt_copy_falls_back(tmp_path):
    good = MemoryStore()
    h = good.add(b"the block")
    with DataDir(tmp_path / "d") as d:
        d.add(b"the block")
    (f,) = (tmp_path / "d" / "data").iterdir()
    data = bytearray(f.read_bytes())
    data[-8] ^= 0xFF
    f.write_bytes(bytes(data))
    with DataDir(tmp_path / "d", readonly=True) as d:
        with ProxyStore(read=[d, good], owns=False) as p:
            assert p[h] == b"the block"


def test_save2_is_background_and_best_effort(tmp_path):
    main = MemoryStore()
    broken = DataDir(tmp_path / "ro", readonly=True)  # every add fails
    mirror = MemoryStore()
    p = ProxyStore(save=[main], save2=[broken, mirror])
    hs = [p.add(b"block %d" % i) for i in range(50)]
    p.flush()
    assert all(h in mirror for h in hs)
    assert p.save2_errors == 50
    p.close()
    assert broken.closed and mirror.closed


def test_hash_classes_must_agree():
    with pytest.raises(HashClassMismatchError):
        ProxyStore(save=[MemoryStore(hashclass=Hash_BLAKE3), MemoryStore(hashclass=Hash_SHA1)])


def test_union_listing_and_len():
    a, b = MemoryStore(), MemoryStore()
    a.add_many([b"1", b"2", b"3"])
    b.add_many([b"3", b"4"])
    with ProxyStore(read=[a, b], owns=False) as p:
        assert p.readonly
        assert len(p) == 4
        assert list(p.hashcodes()) == sorted(set(a.hashcodes()) | set(b.hashcodes()))
        assert p.contains_many([Hash_BLAKE3.from_data(b"4"), Hash_BLAKE3.from_data(b"5")]) == [
            True,
            False,
        ]


def test_spec_roles_share_stores(tmp_path):
    spec = f"proxy(save=memory:m {tmp_path}/d,read=memory:m,read2={tmp_path}/d)"
    with open_store_spec(spec) as p:
        h = p.add(b"x")
        assert p.read[0] is p.save[0]
        assert p.read2[0] is p.save[1]
        assert p[h] == b"x"
    with DataDir(tmp_path / "d") as d:
        assert d[h] == b"x"


def test_exports_of_read_stores(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "home.vt").write_text("")
    with DataDir(tmp_path / "d") as d, ProxyStore(save=[MemoryStore()], read=[d], owns=False) as p:
        assert set(p.exports) == {"home"}
