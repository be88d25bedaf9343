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


# -- copy2 under a read-only command ------------------------------------------------


def _vt(*args, env):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args], capture_output=True, env=env
    )


@pytest.fixture
def two_datadirs(tmp_path, vt_env):
    """A local datadir (empty) and a 'remote' one holding a 3 MB file: several
    hundred blocks, so a message per block would show."""
    import os

    local, remote = tmp_path / "local", tmp_path / "remote"
    f = tmp_path / "f"
    f.write_bytes(os.urandom(3 << 20))
    r = _vt("-q", "-S", str(remote), "save", str(f), env=vt_env)
    assert r.returncode == 0, r.stderr
    r2 = _vt("-q", "-S", str(local), "init", env=dict(vt_env, VT_CONFIG=str(tmp_path / "rc0")))
    assert r2.returncode == 0, r2.stderr
    return local, remote, f.read_bytes(), r.stdout.decode().strip()


def test_read_only_command_copies_into_copy2(two_datadirs, vt_env):
    """`vt cat` is read-only, yet copy2 (a cache the user asked for) is filled:
    afterwards the local datadir alone serves the file; nothing is said."""
    local, remote, data, ref = two_datadirs
    spec = f"proxy(read={local},read2={remote},copy2={local})"
    r = _vt("-S", spec, "cat", ref, env=vt_env)
    assert r.returncode == 0 and r.stderr == b"", r.stderr[:500]
    assert r.stdout == data
    r = _vt("-S", str(local), "cat", ref, env=vt_env)
    assert r.returncode == 0 and r.stdout == data, r.stderr[:500]


def test_copy2_that_cannot_be_written_is_one_line(two_datadirs, vt_env, tmp_path):
    """A copy2 store configured read-only: the read works, one warning in all."""
    local, remote, data, ref = two_datadirs
    rc = tmp_path / "vtrc"
    rc.write_text(
        f"[local]\ntype = datadir\npath = {local}\nreadonly = yes\n"
        f"[remote]\ntype = datadir\npath = {remote}\n"
        "[both]\ntype = proxy\nread = [local]\nread2 = [remote]\ncopy2 = [local]\n"
    )
    r = _vt("-c", str(rc), "-S", "[both]", "cat", ref, env=vt_env)
    assert r.returncode == 0 and r.stdout == data
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and "copy2" in lines[0] and str(local) in lines[0], lines[:5]
    r = _vt("-S", str(local), "info", env=vt_env)
    assert b"blocks: 0" in r.stdout
