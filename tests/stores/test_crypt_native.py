"""The crypt store's native tags and batch sealing (`_cryptblocks`): keyed
BLAKE2b equal to hashlib's byte for byte, `tag_many`, `seal_hashed` and
`header_names` equal to what the Python code makes, bad arguments refused
without a crash, and a store with and without the extension writing the same
backend blocks under the same names (the batch path of `_hash_and_seal`
included: batches all new, duplicates, compressible data, another hash class)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.stores.test_crypt import crypt_over, keyfile, texty  # noqa: F401

from vtstore.hashes import Hash_BLAKE3, Hash_SHA256
from vtstore.stores.crypt import names as crypt_names
from vtstore.stores.crypt import store as crypt_store
from vtstore.stores.crypt.names import tag_class
from vtstore.stores.datadir import DataDir

cb = crypt_store._cryptblocks
native = pytest.mark.skipif(cb is None, reason="vtstore.stores.crypt._cryptblocks is not built")


def b2b(data, key, size=32) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=size).digest()


# -- keyed BLAKE2b -----------------------------------------------------------------


@native
@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=600), st.integers(0, 5000).map(os.urandom)),
    key=st.binary(max_size=64),
    size=st.integers(1, 64),
)
def test_blake2b_equals_hashlib(data, key, size):
    assert cb.blake2b(data, key, size) == b2b(data, key, size)
    assert cb.blake2b(memoryview(bytearray(data)), key=key, digest_size=size) == b2b(
        data, key, size
    )


@native
def test_blake2b_block_boundaries_and_large_inputs():
    """Every length around the 128-octet block, with and without a key, and
    inputs of MiBs (the counter over many blocks)."""
    rnd = random.Random(5)
    for n in list(range(0, 400)) + [1 << 20, (4 << 20) + 77]:
        data = rnd.randbytes(n)
        for key in (b"", rnd.randbytes(32), rnd.randbytes(64)):
            assert cb.blake2b(data, key) == b2b(data, key), (n, len(key))
    assert cb.blake2b(b"abc") == hashlib.blake2b(b"abc", digest_size=32).digest()


@native
def test_blake2b_refuses_bad_arguments():
    for kw in ({"key": bytes(65)}, {"digest_size": 0}, {"digest_size": 65}):
        with pytest.raises(ValueError):
            cb.blake2b(b"x", **kw)
    with pytest.raises(TypeError):
        cb.blake2b("text")


# -- tags ----------------------------------------------------------------------------


@native
@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(max_size=64),
    prefix=st.binary(max_size=200),
    hs=st.lists(st.binary(max_size=80), max_size=40),
)
def test_tag_many_equals_hashlib(key, prefix, hs):
    want = [b2b(prefix + h, key) for h in hs]
    assert cb.tag_many(key, prefix, hs, bytes) == want
    assert cb.tag_many(key, prefix, [bytearray(h) for h in hs], bytes) == want


@native
def test_tag_many_makes_objects_of_the_class():
    """Tags of the backend's name class, equal and hashing as the bytes
    hashlib gives, as the store's hashlib path makes them."""
    tc = tag_class(Hash_BLAKE3)
    hs = Hash_BLAKE3.from_data_many([os.urandom(100) for _ in range(1000)])
    key = os.urandom(32)
    got = cb.tag_many(key, b"blake3:", hs, tc)
    want = [b2b(b"blake3:" + h, key) for h in hs]
    assert all(type(t) is tc for t in got) and got == want
    assert {t: i for i, t in enumerate(got)} == {tc(t): i for i, t in enumerate(want)}
    assert [hash(t) for t in got] == [hash(t) for t in want]
    for bad in (int, str, object(), "bytes"):
        with pytest.raises(TypeError):
            cb.tag_many(key, b"blake3:", hs[:1], bad)
    with pytest.raises(TypeError):
        cb.tag_many(key, b"blake3:", [object()], bytes)
    with pytest.raises(ValueError):
        cb.tag_many(bytes(65), b"", hs[:1], bytes)
    assert cb.tag_many(key, b"", [], tc) == []


@native
def test_seal_hashed_equals_tags_then_seal_many():
    """One call (digests in, hashcodes and blocks out) makes what tag_many and
    seal_many make, at every size, on one thread or two; bad arguments are
    errors, not crashes."""
    rnd = random.Random(9)
    bkey, nkey = rnd.randbytes(32), rnd.randbytes(32)
    sizes = [0, 1, 100, 8192] + [rnd.randrange(0, 20000) for _ in range(300)]
    pays = [rnd.randbytes(n) for n in sizes]
    hs = Hash_BLAKE3.from_data_many(pays)
    flags = bytes(rnd.randrange(2) for _ in sizes)
    want = cb.seal_many(bkey, cb.tag_many(nkey, b"blake3:", hs, bytes), flags, pays)
    digests = b"".join(hs)
    for split in (True, False):
        got_hs, got = cb.seal_hashed(
            bkey, nkey, b"blake3:", digests, Hash_BLAKE3, flags, pays, split
        )
        assert got == want and got_hs == hs and all(type(h) is Hash_BLAKE3 for h in got_hs)
    assert cb.open_many(bkey, want, cb.tag_many(nkey, b"blake3:", hs, bytes)) == pays
    args = (bkey, nkey, b"blake3:")
    with pytest.raises(ValueError):  # digests of unequal size
        cb.seal_hashed(*args, digests[:-1], Hash_BLAKE3, flags, pays)
    with pytest.raises(ValueError):
        cb.seal_hashed(*args, b"x", Hash_BLAKE3, b"", [])
    with pytest.raises(ValueError):  # one flags octet per payload
        cb.seal_hashed(*args, digests, Hash_BLAKE3, flags[1:], pays)
    with pytest.raises(ValueError):
        cb.seal_hashed(*args, digests[:32], Hash_BLAKE3, b"\x02", pays[:1])
    with pytest.raises(ValueError):  # the block key
        cb.seal_hashed(bkey[:16], nkey, b"", digests[:32], Hash_BLAKE3, b"\0", pays[:1])
    with pytest.raises(TypeError):
        cb.seal_hashed(*args, digests[:32], list, b"\0", pays[:1])
    assert cb.seal_hashed(*args, b"", Hash_BLAKE3, b"", []) == ([], [])


@native
def test_header_names_equal_the_python_slicing(monkeypatch):
    tc = tag_class(Hash_BLAKE3)
    key = os.urandom(32)
    pays = [os.urandom(n) for n in (0, 10, 5000)]
    tags = [os.urandom(32) for _ in pays]
    blocks = cb.seal_many(key, tags, b"\0\1\0", pays)
    odd = [b"", b"\x01\x00" + bytes(47), b"\x02" + blocks[0][1:], b"\x01\x02" + blocks[0][2:]]
    every = blocks + odd + [bytearray(blocks[1]), memoryview(blocks[2])]
    got = tc.from_data_many(every)
    assert cb.header_names(tc, every) == tags + [None] * 4 + tags[1:]
    monkeypatch.setattr(crypt_names, "_cryptblocks", None)
    assert tc.from_data_many(every) == got and all(type(n) is tc for n in got)
    assert got[:3] == tags and got[3:7] == [tc.hash_function(d) for d in odd]
    with pytest.raises(TypeError):
        cb.header_names(tc, [object()])


# -- the store with and without the extension ---------------------------------------


def batches(seed: int) -> list[list[bytes]]:
    """Batches that take every path of adding: small ones, large all-new ones
    (the one-call path once four came all new), duplicates within a batch
    and of earlier blocks, compressible text, random data again."""
    rnd = random.Random(seed)
    rand = [rnd.randbytes(rnd.randrange(1, 9000)) for _ in range(1200)]
    out = [rand[:10], rand[10:20]]
    out += [rand[20 + 150 * i : 170 + 150 * i] for i in range(6)]  # 150 each, all new
    dup = rand[920:1000]
    out.append(dup + dup[:7] + rand[20:25])  # in-batch and earlier duplicates
    out.append([texty(i) for i in range(100)])
    out.append(rand[1000:1200])
    return out


def backend_blocks(path) -> dict[bytes, bytes]:
    with DataDir(path, readonly=True) as d:
        hs = list(d.hashcodes())
        return {bytes(h): bytes(b) for h, b in zip(hs, d.get_many(hs), strict=True)}


def add_all(path, keyfile, tmp_path, compress=True, hashclass=None):  # noqa: F811
    kw = {} if hashclass is None else {"hashclass": hashclass}
    out = []
    with crypt_over(DataDir(path, **kw), keyfile, tmp_path, compress=compress) as s:
        for b in batches(1):
            out.append(s.add_many_reporting(b))
        fast = s._all_new
    return out, fast


@native
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("hashclass", [None, Hash_SHA256])
def test_same_backend_with_and_without_native(
    tmp_path,
    keyfile,  # noqa: F811
    monkeypatch,
    compress,
    hashclass,
):
    """The native tags and batch sealing change nothing the backend holds:
    the same names, the same octets, the same hashcodes and new flags."""
    with_native, fast = add_all(tmp_path / "a", keyfile, tmp_path, compress, hashclass)
    assert hashclass or fast >= 1  # the one-call path was taken
    for mod in (crypt_store, crypt_names):
        monkeypatch.setattr(mod, "_cryptblocks", None)
    without, _ = add_all(tmp_path / "b", keyfile, tmp_path, compress, hashclass)
    assert with_native == without
    a, b = backend_blocks(tmp_path / "a"), backend_blocks(tmp_path / "b")
    assert a == b and len(a) == len({h for hs, _ in with_native for h in hs})
    monkeypatch.undo()
    with crypt_over(DataDir(tmp_path / "b"), keyfile, tmp_path) as s:
        for hs, _ in with_native:
            assert s.get_many(hs) == [s.get(h) for h in hs]


@native
def test_one_call_path_reports_duplicates(tmp_path, keyfile):  # noqa: F811
    """Batches on the one-call path: a block twice in a batch is new once,
    a block added before is not new, and the path is left after a batch
    that was not all new (the backend is asked first again)."""
    rnd = random.Random(2)
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        for _ in range(5):
            s.add_many([rnd.randbytes(3000) for _ in range(100)])
        batch = [rnd.randbytes(3000) for _ in range(100)]
        assert s._fast_path(batch)
        old = s.get_many(s.add_many([rnd.randbytes(3000) for _ in range(100)])[:3])
        hs, new = s.add_many_reporting(batch + batch[:5] + old)
        assert new == [True] * 100 + [False] * 8
        assert s._all_new == 0 and not s._fast_path(batch)
        assert s.get_many(hs) == batch + batch[:5] + old


@pytest.mark.parametrize(
    "bad",
    [
        [(30, "data"), (150, "flip")],
        [(150, "flip"), (180, "flip")],
        [(120, "data"), (199, "data")],
        [(199, "flip")],
        [(150, "gone"), (190, "data")],
    ],
)
def test_large_get_names_the_first_bad_block(tmp_path, keyfile, bad):  # noqa: F811
    """A batch large enough to be opened and checked in two halves on two
    threads: a block with the right tag but other data (a key holder's bug),
    a flipped block and a missing one are refused, the first bad one named
    (of its kind: a missing block is found before any is opened, and within
    a half authentication before the hashes), whichever half it is in; the
    other blocks still read."""
    from vtstore.errors import CorruptBlockError, MissingBlockError
    from vtstore.stores.memory import MemoryStore

    back = MemoryStore(hashclass=tag_class(Hash_BLAKE3))
    s = crypt_over(back, keyfile, tmp_path)
    blocks = [os.urandom(4000) for _ in range(200)]
    hs = s.add_many(blocks)
    assert s.get_many(hs) == blocks
    names = s._names(hs)
    for i, how in bad:
        if how == "data":  # right tag and key, another block's data
            back._blocks[names[i]] = s.seal(hs[i], blocks[i - 1])
        elif how == "gone":
            del back._blocks[names[i]]
        else:
            blob = bytearray(back._blocks[names[i]])
            blob[100] ^= 4
            back._blocks[names[i]] = bytes(blob)
    with pytest.raises((CorruptBlockError, MissingBlockError)) as e:
        s.get_many(hs)
    assert isinstance(e.value, MissingBlockError) == (bad[0][1] == "gone")
    assert e.value.hashcode == hs[bad[0][0]]
    wrong = {i for i, _ in bad}
    good = [h for i, h in enumerate(hs) if i not in wrong]
    assert s.get_many(good) == [b for i, b in enumerate(blocks) if i not in wrong]
    s.close()


# -- reading: open and check in one call ---------------------------------------------


def sealed_batch(rnd, sizes, zstd_every=0):
    """Keys, payloads, their digests and tags, and their sealed blocks (every
    `zstd_every`-th flagged compressed, as a zstd payload would be)."""
    bkey, nkey = rnd.randbytes(32), rnd.randbytes(32)
    pays = [rnd.randbytes(n) for n in sizes]
    hs = Hash_BLAKE3.from_data_many(pays)
    tags = cb.tag_many(nkey, b"blake3:", hs, bytes)
    flags = bytes(int(zstd_every > 0 and i % zstd_every == 1) for i in range(len(sizes)))
    return bkey, pays, hs, tags, cb.seal_many(bkey, tags, flags, pays), flags


@native
@pytest.mark.parametrize("split", [True, False])
def test_open_checked_equals_open_many_then_blake3(split):
    """open_checked gives open_many's payloads at every size (0, around the
    GCM block and BLAKE3 chunk, blocks over the 64 KiB group and unit), the
    compressed ones unchecked and listed; in place, each block the list alone
    holds becomes its payload (the same object); a block held elsewhere too
    is never changed."""
    rnd = random.Random(13)
    sizes = [0, 1, 15, 16, 17, 1023, 1024, 1025, 8192, 70_000, 1 << 20]
    sizes += [rnd.randrange(0, 20000) for _ in range(200)]
    bkey, pays, hs, tags, blobs, flags = sealed_batch(rnd, sizes, zstd_every=7)
    zipped = [i for i, f in enumerate(flags) if f]
    for inplace in (False, True):
        copies = [bytes(bytearray(b)) for b in blobs]  # each held by `copies` alone
        kept = list(copies) if not inplace else None
        ids = [id(c) for c in copies]
        out, todo = cb.open_checked(bkey, copies, tags, b"".join(hs), split, inplace)
        assert out == pays and todo == zipped
        del kept
        same = [id(o) == i for o, i in zip(out, ids, strict=True)]
        assert all(same) if inplace else not any(same)
    # shared blocks: held twice in the list, or by another name too
    shared = [bytes(bytearray(b)) for b in blobs[:50]]
    want = list(map(bytes, shared))
    twice = shared + shared
    out, todo = cb.open_checked(bkey, twice, tags[:50] * 2, b"".join(hs[:50]) * 2, split, True)
    assert out == pays[:50] * 2 and shared == want
    assert cb.open_checked(bkey, [], [], b"") == ([], [])


@native
def test_open_checked_refuses_each_bad_block_by_its_code():
    """In one batch, in place: too short (1), not an encrypted block (2),
    another tag (3), a flipped bit (4), the right tag over other data (5):
    each its code, listed, the good blocks around them opened; no crash on
    bad arguments."""
    rnd = random.Random(17)
    bkey, pays, hs, tags, blobs, _ = sealed_batch(rnd, [5000] * 40)
    bad = list(blobs)
    bad[3] = bad[3][:40]
    bad[9] = b"\x02" + bad[9][1:]
    bad[15] = bad[16]
    flipped = bytearray(bad[21])
    flipped[3000] ^= 0x10
    bad[21] = bytes(flipped)
    bad[30] = cb.seal_many(bkey, tags[30:31], b"\0", [pays[29]])[0]
    copies = [bytes(bytearray(b)) for b in bad]
    out, todo = cb.open_checked(bkey, copies, tags, b"".join(hs), True, True)
    assert todo == [3, 9, 15, 21, 30]
    assert [out[i] for i in todo] == [1, 2, 3, 4, 5]
    assert [o for i, o in enumerate(out) if i not in todo] == [
        p for i, p in enumerate(pays) if i not in todo
    ]
    with pytest.raises(ValueError):  # one digest per block
        cb.open_checked(bkey, blobs, tags, b"".join(hs)[:-1])
    with pytest.raises(ValueError):
        cb.open_checked(bkey, blobs, tags[1:], b"".join(hs))
    with pytest.raises(ValueError):
        cb.open_checked(bkey[:16], blobs, tags, b"".join(hs))
    with pytest.raises(TypeError):
        cb.open_checked(bkey, [object()], tags[:1], hs[0])


def _datadir_with(tmp_path, keyfile, n=256, size=8192):  # noqa: F811
    """A crypt store over a real datadir holding `n` random blocks."""
    s = crypt_over(DataDir(tmp_path / "dd", compress=False), keyfile, tmp_path)
    blocks = [os.urandom(size) for _ in range(n)]
    hs = s.add_many(blocks)
    sealed = s.seal_many(list(zip(hs, blocks, strict=True)), False)
    s.close()
    (f,) = (tmp_path / "dd" / "data").glob("*.vtd")
    return blocks, hs, [bytes(b) for b in sealed], f


def _reopen(tmp_path, keyfile):  # noqa: F811
    return crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path)


@native
@pytest.mark.parametrize("at", [0, 127, 128, 200, 255])
def test_datadir_batch_with_one_flipped_block(tmp_path, keyfile, at):  # noqa: F811
    """A real datadir, a batch of 256 x 8 KiB read in one get_many (two halves,
    opened in place): one flipped ciphertext byte anywhere gives one
    CorruptBlockError naming that block; the rest reads right, and again."""
    from vtstore.errors import CorruptBlockError

    blocks, hs, sealed, f = _datadir_with(tmp_path, keyfile)
    raw = bytearray(f.read_bytes())
    pos = raw.find(sealed[at])
    assert pos > 0
    raw[pos + 60 + at] ^= 0x01
    f.write_bytes(bytes(raw))
    with _reopen(tmp_path, keyfile) as s:
        assert s._one_call
        for _ in range(2):
            with pytest.raises(CorruptBlockError, match="tampered ciphertext") as e:
                s.get_many(hs)
            assert e.value.hashcode == hs[at]
        rest = [h for i, h in enumerate(hs) if i != at]
        assert s.get_many(rest) == [b for i, b in enumerate(blocks) if i != at]
        assert s.get_many(hs[:at] + hs[at + 1 :]) == s.get_many(rest)


@native
def test_datadir_batch_with_swapped_and_wrong_blocks(tmp_path, keyfile):  # noqa: F811
    """Two records' ciphertexts swapped in the data file (each under the
    other's name): the first named, as moved; a block of the right tag holding
    another block's data (only a key holder can make one): named, as not
    matching its hash; never other bytes."""
    from vtstore.errors import CorruptBlockError

    blocks, hs, sealed, f = _datadir_with(tmp_path, keyfile)
    raw = bytearray(f.read_bytes())
    a, b = raw.find(sealed[100]), raw.find(sealed[101])
    raw[a : a + len(sealed[100])], raw[b : b + len(sealed[101])] = sealed[101], sealed[100]
    f.write_bytes(bytes(raw))
    with _reopen(tmp_path, keyfile) as s:
        with pytest.raises(CorruptBlockError) as e:
            s.get_many(hs)
        assert e.value.hashcode == hs[100]
        ok = hs[:100] + hs[102:]
        assert s.get_many(ok) == blocks[:100] + blocks[102:]
    # the right tag over another block's data, in the middle of a batch
    blocks, hs, sealed, f = _datadir_with(tmp_path / "2", keyfile)
    with _reopen(tmp_path / "2", keyfile) as s:
        wrong = bytes(s.seal(hs[77], blocks[76]))
    raw = bytearray(f.read_bytes())
    at = raw.find(sealed[77])
    raw[at : at + len(wrong)] = wrong
    f.write_bytes(bytes(raw))
    with _reopen(tmp_path / "2", keyfile) as s:
        with pytest.raises(CorruptBlockError, match="does not match its hash") as e:
            s.get_many(hs)
        assert e.value.hashcode == hs[77]
        assert s.get_many(hs[78:]) == blocks[78:]


# -- AES-256-GCM: the VAES implementation against libcrypto --------------------------

gcm512 = pytest.mark.skipif(
    cb is None or "vaes512" not in cb.gcm_implementations(),
    reason="no _cryptblocks, or this CPU has no AVX-512 VAES",
)


@pytest.fixture
def gcm_impl():
    """Sets the GCM implementation for a test, and the default back after."""
    yield cb.set_gcm_implementation
    cb.set_gcm_implementation(None)


@gcm512
def test_vaes_gcm_equals_libcrypto_at_every_length(gcm_impl):
    """_gcm512.h seals to libcrypto's octets (and cryptography's AESGCM opens
    them) at every length 0..600 (the 16-octet blocks, the 64-octet registers,
    the 256-octet rounds of sixteen and their tails), at 8 KiB and around it,
    at 1 MiB and at random lengths; each opens what the other sealed, in
    place or not, on one thread or two."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    rnd = random.Random(21)
    key = rnd.randbytes(32)
    sizes = list(range(0, 600)) + [8191, 8192, 8193, 65536 + 17, 1 << 20]
    sizes += [rnd.randrange(0, 40000) for _ in range(200)]
    tags = [rnd.randbytes(32) for _ in sizes]
    pays = [rnd.randbytes(n) for n in sizes]
    flags = bytes(len(sizes))
    gcm_impl("libcrypto")
    want = cb.seal_many(key, tags, flags, pays)
    gcm_impl("vaes512")
    assert cb.gcm_implementation() == "vaes512"
    got = cb.seal_many(key, tags, flags, pays)
    assert [i for i in range(len(sizes)) if got[i] != want[i]] == []
    aead = AESGCM(key)
    for i in range(0, len(sizes), 7):
        assert aead.decrypt(tags[i][:12], want[i][34:], want[i][:34]) == pays[i]
    for impl in ("vaes512", "libcrypto"):
        gcm_impl(impl)
        for split in (True, False):
            assert cb.open_many(key, want, tags, split) == pays
            copies = [bytes(bytearray(b)) for b in want]
            hs = Hash_BLAKE3.from_data_many(pays)
            assert cb.open_checked(key, copies, tags, b"".join(hs), split, True) == (pays, [])


@gcm512
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 300, 1000])
def test_vaes_gcm_refuses_every_flipped_bit(gcm_impl, n):
    """Every flipped bit of a block (header, ciphertext, GCM tag), and a block
    cut short or extended, fails authentication with _gcm512.h."""
    gcm_impl("vaes512")
    rnd = random.Random(n)
    key, tag = rnd.randbytes(32), rnd.randbytes(32)
    blob = cb.seal_many(key, [tag], b"\0", [rnd.randbytes(n)])[0]
    bad = []
    for pos in range(len(blob)):
        b = bytearray(blob)
        b[pos] ^= 1 << (pos % 8)
        bad.append(bytes(b))
    bad += [blob[:-1], blob + b"\0"]
    out = cb.open_many(key, bad, [tag] * len(bad))
    assert all(type(o) is int for o in out)
    assert out[34 : len(blob)] == [4] * (len(blob) - 34)  # past the header: authentication
    assert out[len(blob) :] == [1 if n == 0 else 4, 4]  # cut short, extended
    assert cb.open_many(rnd.randbytes(32), [blob], [tag]) == [4]  # another key


@native
def test_gcm_implementation_names():
    assert cb.gcm_implementations()[-1] == "libcrypto"
    if not os.environ.get("VT_CRYPT_GCM"):
        assert cb.gcm_implementation() == "libcrypto"  # the default
    with pytest.raises(ValueError):
        cb.set_gcm_implementation("rot13")


# -- the pool thread -------------------------------------------------------------------


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@native
def test_pool_batches_from_many_threads_fork_and_idle_end():
    """Large batches (the pool's thread helping) from four Python threads at
    once all open right; a child forked after them opens batches too (it
    starts without the pool's thread); the pool's thread ends once idle."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    rnd = random.Random(23)
    bkey, pays, hs, tags, blobs, _ = sealed_batch(rnd, [8192] * 256)
    digests = b"".join(hs)
    before = _threads()

    def one(_):
        copies = [bytes(bytearray(b)) for b in blobs]
        return cb.open_checked(bkey, copies, tags, digests, True, True) == (pays, [])

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(one, range(40)))
    assert one(0)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its batches open right
        os._exit(0 if all(one(i) for i in range(5)) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    deadline = time.monotonic() + 10
    while _threads() > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _threads() <= before


@native
def test_tag_check_in_c_equals_the_python_check():
    """TagCode.check (C, `tag_check`) says what the Python body says: the tag
    in an encrypted block's header, else the hash of a block that is not one
    (short, another version or flags); any bytes-like data."""
    from vtstore.stores.crypt.names import HEADER, TagCode

    tc = tag_class(Hash_BLAKE3)
    assert TagCode.__dict__["check"] is cb.tag_check  # the C one in use
    rnd = random.Random(29)
    blob = bytes([1, 0]) + rnd.randbytes(8000)
    others = [b"", b"short", bytes([2, 0]) + blob[2:], bytes([1, 2]) + blob[2:], blob[:49]]
    names = [tc(blob[2:HEADER]), tc(rnd.randbytes(32))] + [tc(tc.hash_function(o)) for o in others]
    py_check = TagCode.__dict__["_check_other"]

    def python(name, data):
        if len(data) >= 50 and data[0] == 1 and data[1] <= 1:
            return bytes(name) == bytes(data[2:HEADER])
        return py_check(name, data)

    for name in names:
        for data in [blob, bytes([1, 1]) + blob[2:], *others]:
            for d in (data, memoryview(bytearray(data))):
                assert name.check(d) == python(name, data)
    assert names[0].check(blob) and not names[1].check(blob)
    with pytest.raises(TypeError):
        names[0].check("text")


@native
@pytest.mark.parametrize("impl", ["vaes512", "libcrypto"])
def test_mutated_blocks_opened_in_place_never_give_other_data(gcm_impl, impl):
    """30,000 mutated blocks (bits flipped, octets set, cut, extended, spliced
    with another block), opened and checked in place in batches of 100 (the
    pool taking part): each is refused by a code, or opens to its one right
    plaintext."""
    if impl not in cb.gcm_implementations():
        pytest.skip(f"this CPU has no {impl}")
    gcm_impl(impl)
    rnd = random.Random(31)
    bkey, pays, hs, tags, blobs, _ = sealed_batch(rnd, [0, 1, 16, 100, 1000, 5000, 8192, 20000])
    k = len(blobs)
    for _ in range(300):
        idx = [rnd.randrange(k) for _ in range(100)]
        batch = []
        for i in idx:
            b = bytearray(blobs[i])
            how = rnd.randrange(5)
            if how == 0 and b:
                for _ in range(rnd.randrange(1, 4)):
                    b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            elif how == 1 and b:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif how == 2:
                del b[rnd.randrange(len(b) + 1) :]
            elif how == 3:
                b += rnd.randbytes(rnd.randrange(1, 40))
            else:
                o = blobs[rnd.randrange(k)]
                cut = rnd.randrange(min(len(b), len(o)) + 1)
                b[cut:] = o[cut:]
            batch.append(bytes(b))
        out, todo = cb.open_checked(
            bkey, batch, [tags[i] for i in idx], b"".join(hs[i] for i in idx), True, True
        )
        for j, i in enumerate(idx):
            assert out[j] == pays[i] if j not in todo else type(out[j]) is int


@native
@pytest.mark.parametrize("value", ["libcrypto", "rot13", "fastest"])
def test_vt_crypt_gcm_picks_the_implementation(value):
    """VT_CRYPT_GCM names the GCM a process uses (the fastest this CPU runs
    when asked for by name); an unknown name is ignored with a warning, the
    default (libcrypto) kept."""
    import subprocess
    import sys

    code = (
        "from vtstore.stores.crypt import store, _cryptblocks as cb;"
        "print(cb.gcm_implementation(), cb.gcm_implementations()[0])"
    )
    if value == "fastest":
        value = cb.gcm_implementations()[0]
    env = dict(os.environ, VT_CRYPT_GCM=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    got, fastest = r.stdout.split()
    assert got == (value if value != "rot13" else "libcrypto")
    assert ("VT_CRYPT_GCM ignored" in r.stderr) == (value == "rot13")
