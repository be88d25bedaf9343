"""Crypt store format 2 (`vtstore.stores.crypt.names`): the backend datadir
names each encrypted block by the tag in its header.  Moved and flipped
blocks, fsck with and without the key, a writer killed mid-add, format 1
stores still read, and what the backend's names are."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from tests.stores.test_crypt import PW, crypt_over, format1_datadir, keyfile, texty  # noqa: F401

from vtstore.errors import CorruptBlockError, HashClassMismatchError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA256
from vtstore.stores.crypt import open_crypt
from vtstore.stores.crypt import store as crypt_store
from vtstore.stores.crypt.names import TagCode, tag_class
from vtstore.stores.datadir import DataDir
from vtstore.stores.fsck import fsck_datadir
from vtstore.stores.memory import MemoryStore


@pytest.fixture(params=["native", "python"])
def aes_path(request, monkeypatch):
    """Both ways of sealing and opening a batch: the native extension
    `_cryptblocks` (skipped when not built) and `cryptography`, block by block."""
    if request.param == "native":
        if crypt_store._cryptblocks is None:
            pytest.skip("vtstore.stores.crypt._cryptblocks is not built")
    else:
        monkeypatch.setattr(crypt_store, "_cryptblocks", None)
    return request.param


def test_a_new_datadir_names_blocks_by_their_tag(tmp_path, keyfile, aes_path):  # noqa: F811
    blocks = [os.urandom(5000) for _ in range(40)] + [texty(i) for i in range(40)]
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert s.format == 2 and s.index is None
        hs = s.add_many(blocks)
        tags = {bytes(s.tag(h)) for h in hs}
    meta = json.loads((tmp_path / "dd" / "datadir.json").read_text())
    assert meta["hashclass"] == "crypt-blake3"
    assert not (tmp_path / "crypt.idx").exists()
    # the datadir alone (no key): its names are the tags, no plaintext hash
    with DataDir(tmp_path / "dd", readonly=True) as d:
        assert issubclass(d.hashclass, TagCode) and d.hashclass.plain is Hash_BLAKE3
        names = {bytes(n) for n in d.hashcodes()}
        assert names == tags and not names & {bytes(h) for h in hs}
    # asked for by its plaintext class (as a spec with hashclass = blake3 does)
    with DataDir(tmp_path / "dd", hashclass=Hash_BLAKE3) as d:
        assert d.hashclass is tag_class(Hash_BLAKE3)
    with pytest.raises(HashClassMismatchError):
        DataDir(tmp_path / "dd", hashclass=Hash_SHA256)
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert s.get_many(hs) == blocks and sorted(hs) == list(s.hashcodes())
        assert len(s) == len(set(hs))


def _swap_index_entries(path, a: bytes, b: bytes) -> None:
    with DataDir(path) as d:
        ea, eb = d._index.get(a), d._index.get(b)
        d._index.commit(entries=[(a, eb), (b, ea)], replace=True)


def test_block_moved_to_another_name_in_the_datadir(tmp_path, keyfile):  # noqa: F811
    """The datadir's index swapped so each name points at the other block:
    refused (the block does not carry that name), never the other data."""
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        a, b = s.add_many([b"block A " * 300, b"block B " * 300])
        ta, tb = s.tag(a), s.tag(b)
    _swap_index_entries(tmp_path / "dd", ta, tb)
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        for h in (a, b):
            with pytest.raises(CorruptBlockError) as e:
                s[h]
            assert e.value.hashcode == h  # named by its plaintext hashcode
            with pytest.raises(CorruptBlockError):
                s.get_many([h])
    # ... and the datadir's own check says so without the key
    with DataDir(tmp_path / "dd") as d:
        rep = fsck_datadir(d)
        assert not rep.ok and len(rep.problems) == 2


def test_block_moved_in_a_backend_that_serves_anything(tmp_path, keyfile, aes_path):  # noqa: F811
    """A backend that returns whatever it holds under a name (a memory store
    naming blocks by tag, as a malicious server would): the crypt store
    checks the tag itself; a block of another key under the right name fails
    authentication."""
    back = MemoryStore(hashclass=tag_class(Hash_BLAKE3))
    s = crypt_over(back, keyfile, tmp_path)
    assert s.format == 2
    a, b = s.add_many([b"block A " * 100, b"block B " * 100])
    na, nb = s._names((a, b))
    back._blocks[na], back._blocks[nb] = back._blocks[nb], back._blocks[na]
    for h in (a, b):
        with pytest.raises(CorruptBlockError, match="moved or swapped"):
            s[h]
    other = tmp_path / "other.key"
    from vtstore.stores.crypt.keys import create_key_file

    create_key_file(other, PW, log_n=10)
    s2 = open_crypt(MemoryStore(), key_file=other, passphrase=PW, index=tmp_path / "o.idx")
    forged = bytearray(s2.seal(a, b"block A " * 100))
    forged[2:34] = s.tag(a)  # the right name, sealed under another key
    back._blocks[na] = bytes(forged)
    with pytest.raises(CorruptBlockError, match="authentication"):
        s[a]
    s2.close()
    s.close()


def test_every_flipped_byte_is_refused(tmp_path, keyfile, aes_path):  # noqa: F811
    back = MemoryStore(hashclass=tag_class(Hash_BLAKE3))
    with crypt_over(back, keyfile, tmp_path) as s:
        data = [os.urandom(200), texty(1, 2000)]
        hs = s.add_many(data)
        for h, d in zip(hs, data, strict=True):
            (n,) = s._names((h,))
            good = back._blocks[n]
            for pos in range(len(good)):
                bad = bytearray(good)
                bad[pos] ^= 1 << (pos % 8)
                back._blocks[n] = bytes(bad)
                with pytest.raises(CorruptBlockError):
                    s.get_many([h])
            back._blocks[n] = good
            assert s[h] == d


def _flip_in_data_file(dd_path, needle: bytes, offset: int) -> None:
    (f,) = (dd_path / "data").glob("*.vtd")
    raw = bytearray(f.read_bytes())
    at = raw.find(needle)
    assert at > 0
    raw[at + offset] ^= 0x40
    f.write_bytes(bytes(raw))


def test_fsck_with_and_without_the_key(tmp_path, keyfile, aes_path):  # noqa: F811
    """Clean: both checks pass.  A flipped byte: the datadir's CRC sees it
    without the key, and the keyed check names the block.  A block of this key
    stored under a name that is not its own, CRCs intact: only the key sees
    that."""
    dd_path = tmp_path / "dd"
    with crypt_over(DataDir(dd_path), keyfile, tmp_path) as s:
        hs = s.add_many([os.urandom(9000) for _ in range(30)])
        rep = s.fsck()
        assert rep.ok and any("30 blocks decrypted and checked" in n for n in rep.notes)
        sealed = s.seal(hs[7], s[hs[7]])
    with DataDir(dd_path) as d:
        assert fsck_datadir(d).ok
    _flip_in_data_file(dd_path, sealed, 3000)
    with DataDir(dd_path) as d:
        assert not fsck_datadir(d).ok  # the record's CRC, no key needed
    with crypt_over(DataDir(dd_path), keyfile, tmp_path) as s:
        with pytest.raises(CorruptBlockError, match="authentication"):
            s[hs[7]]
        assert not s.fsck().ok
        assert s.get_many(hs[:7]) == [s[h] for h in hs[:7]]


def test_a_writer_killed_mid_add(tmp_path, keyfile):  # noqa: F811
    """kill -9 while a process adds batches (each flushed): reopened, every
    flushed block reads back, the datadir and the keyed check find no damage
    (a torn tail is crash residue), and adding goes on."""
    code = f"""
import os, sys
from vtstore.stores.crypt import open_crypt
from vtstore.stores.datadir import DataDir
s = open_crypt(DataDir({str(tmp_path / "dd")!r}), key_file={str(keyfile)!r},
               passphrase={PW!r}, index={str(tmp_path / "crypt.idx")!r})
i = 0
while True:
    s.add_many([b"batch %d block %d " % (i, j) * 400 for j in range(64)])
    s.flush()
    print(i, flush=True)
    i += 1
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    done = -1
    deadline = time.monotonic() + 60
    while done < 5 and time.monotonic() < deadline:
        done = int(p.stdout.readline())
    time.sleep(0.01)  # mid-way through a later batch
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert done >= 5
    want = [b"batch %d block %d " % (i, j) * 400 for i in range(done + 1) for j in range(64)]
    with DataDir(tmp_path / "dd") as d:
        assert fsck_datadir(d).ok
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert s.format == 2
        hs = [s.hashclass.from_data(b) for b in want]
        assert s.get_many(hs) == want
        assert s.fsck().ok
        listed = set(s.hashcodes())
        assert set(hs) <= listed and len(listed) == len(s)
        h = s.add(b"after the crash")
        assert h in set(s.hashcodes())
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert s[h] == b"after the crash"


def test_format1_store_still_reads_and_stays_format1(tmp_path, keyfile):  # noqa: F811
    """A store of format 1 (hash-named backend, crypt index), as every crypt
    store made before format 2: opened by the code of format 2 it reads, adds
    (still format 1), lists, checks, and through a spec too."""
    from vtstore.stores.spec import open_store_spec

    dd_path = tmp_path / "dd"
    dd = format1_datadir(dd_path)
    shutil.copy(keyfile, dd_path / "crypt.key")  # where crypt:SPEC looks for it
    blocks = [os.urandom(3000) for _ in range(50)] + [texty(i) for i in range(50)]
    with crypt_over(dd, keyfile, dd_path) as s:
        assert s.format == 1
        hs = s.add_many(blocks)
    assert json.loads((dd_path / "datadir.json").read_text())["hashclass"] == "blake3"
    os.environ["VT_PASSPHRASE"] = PW.decode()
    try:
        with open_store_spec(f"crypt:{dd_path}") as s:
            assert s.format == 1 and s.get_many(hs) == blocks
            h = s.add(b"one more, still format 1")
            assert sorted(hs + [h]) == list(s.hashcodes())
            assert s.fsck().ok
    finally:
        del os.environ["VT_PASSPHRASE"]
    with DataDir(dd_path, readonly=True) as d:
        assert d.hashclass is Hash_BLAKE3 and h not in set(d.hashcodes())


def test_listing_sees_blocks_another_store_added(tmp_path, keyfile):  # noqa: F811
    """Format 2 lists plaintext hashcodes by decrypting the backend's blocks;
    blocks another crypt store added since are found (the count changed)."""
    with DataDir(tmp_path / "dd") as dd:
        s1 = crypt_over(dd, keyfile, tmp_path, owns=False)
        a = s1.add_many([b"first %d" % i for i in range(20)])
        assert list(s1.hashcodes()) == sorted(a)
        s2 = crypt_over(dd, keyfile, tmp_path, owns=False)
        b = s2.add_many([b"second %d" % i for i in range(20)])
        assert list(s1.hashcodes()) == sorted(a + b) == list(s2.hashcodes())
        c = s1.add(b"third")
        assert list(s1.hashcodes()) == sorted(a + b + [c])
        s1.close()
        s2.close()


def test_backend_syncs_without_the_key(tmp_path, keyfile):  # noqa: F811
    """Two format 2 backends: a whole-store sync of the datadirs alone (no
    key) copies the ciphertext, and the copy reads through the same key."""
    from vtstore.stores.crypt import prepare_backend
    from vtstore.sync.stores import sync_stores

    blocks = [os.urandom(4000) for _ in range(300)]
    with crypt_over(DataDir(tmp_path / "a"), keyfile, tmp_path) as s:
        hs = s.add_many(blocks)
    dst = DataDir(tmp_path / "b")
    prepare_backend(dst)
    with DataDir(tmp_path / "a") as a, dst:
        sync_stores(a, dst)
        assert len(dst) == len(a) == 300
        sync_stores(a, dst)  # nothing left to send
        assert len(dst) == 300
    with crypt_over(DataDir(tmp_path / "b"), keyfile, tmp_path) as s:
        assert s.format == 2 and s.get_many(hs) == blocks


def test_native_batches_match_cryptography():
    """`_cryptblocks` seals exactly what `cryptography`'s AESGCM does (sizes
    from empty to 1 MiB, both flags, batches large enough for two threads),
    opens it back, and says why a block does not open; bad arguments are
    errors, not crashes."""
    cb = crypt_store._cryptblocks
    if cb is None:
        pytest.skip("vtstore.stores.crypt._cryptblocks is not built")
    import random

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    rnd = random.Random(3)
    key = rnd.randbytes(32)
    aead = AESGCM(key)
    sizes = [0, 1, 15, 16, 17, 100, 8192, 65536, 1 << 20]
    sizes += [rnd.randrange(0, 20000) for _ in range(600)]  # over 256 KiB: two threads
    pays = [rnd.randbytes(n) for n in sizes]
    tags = [rnd.randbytes(32) for _ in sizes]
    flags = bytes(rnd.randrange(2) for _ in sizes)
    views = [memoryview(bytearray(p)) for p in pays]
    out = cb.seal_many(key, tags, flags, views)
    for p, t, f, o in zip(pays, tags, flags, out, strict=True):
        head = bytes((1, f)) + t
        assert type(o) is bytes and o == head + aead.encrypt(t[:12], p, head)
    assert cb.open_many(key, out, tags) == pays
    bad = list(out[:6])
    bad[0] = bad[0][:49]  # too short
    bad[1] = b"\x02" + bad[1][1:]  # another version
    bad[2] = bad[2][:1] + b"\x04" + bad[2][2:]  # an unknown flag
    bad[4] = bad[4][:-1] + bytes([bad[4][-1] ^ 1])  # the GCM tag
    bad[5] = bad[5][:60] + bytes([bad[5][60] ^ 1]) + bad[5][61:]  # the ciphertext
    other = list(tags[:6])
    other[3] = tags[4]  # moved: the block carries another tag
    assert cb.open_many(key, bad, other) == [1, 2, 2, 3, 4, 4]
    assert cb.open_many(rnd.randbytes(32), out[6:9], tags[6:9]) == [4, 4, 4]  # another key
    with pytest.raises(ValueError):
        cb.seal_many(key[:16], tags[:1], flags[:1], pays[:1])
    with pytest.raises(TypeError):
        cb.seal_many(key, [b"short"], b"\0", [b"x"])
    with pytest.raises(ValueError):
        cb.seal_many(key, tags[:2], b"\0", pays[:2])
    with pytest.raises(ValueError):
        cb.seal_many(key, tags[:1], b"\x02", pays[:1])
    with pytest.raises(TypeError):
        cb.open_many(key, [object()], tags[:1])
    assert cb.seal_many(key, [], b"", []) == [] and cb.open_many(key, [], []) == []


def test_large_batches_hash_on_two_threads_and_stop_at_close(tmp_path, keyfile):  # noqa: F811
    """A large batch is hashed half on the store's own thread: the same
    hashcodes in the same order as hashed alone, and the thread is gone once
    the store is closed."""
    import threading

    blocks = [os.urandom(2000) for _ in range(300)]
    s = crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path)
    hs = s.add_many(blocks)
    assert hs == Hash_BLAKE3.from_data_many(blocks)
    assert any(t.name.startswith("vt-crypt-hash") for t in threading.enumerate())
    s.close()
    assert not any(t.name.startswith("vt-crypt-hash") for t in threading.enumerate())
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert s.get_many(hs) == blocks
