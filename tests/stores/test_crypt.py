"""Encryption at rest (`vtstore.stores.crypt`): tampering, moved blocks, what the
backend reveals, the key file, the format 1 index, archives.  The generic store
suite runs over the `crypt-datadir` kind of tests/conftest.py as well (format 2,
a new datadir); tests/stores/test_crypt_named.py has format 2's own tests."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys

import pytest

from vtstore.archive import Archive, line_codec_for
from vtstore.blocks import HashCodeBlock
from vtstore.errors import ConfigError, CorruptBlockError, MissingBlockError
from vtstore.hashes import Hash_BLAKE3
from vtstore.stores.crypt import CryptStore, open_crypt
from vtstore.stores.crypt.keys import (
    CryptKeyError,
    create_key_file,
    key_info,
    rewrap,
    unwrap,
)
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.stores.spec import open_store_spec
from vtstore.tree import Dirent
from vtstore.tree.dirent import T_DIR

PW = b"correct horse battery staple"
LOG_N = 10  # cheap scrypt for tests; the default is 17


@pytest.fixture
def keyfile(tmp_path):
    p = tmp_path / "k" / "crypt.key"
    p.parent.mkdir()
    create_key_file(p, PW, log_n=LOG_N)
    return p


def texty(i: int, size: int = 6000) -> bytes:
    """A compressible block with a recognisable sentence in it."""
    line = b"the secret plan number %06d is hidden in plain sight\n" % i
    return (line * (size // len(line) + 1))[:size]


def bname(s: CryptStore, h):
    """The backend hashcode of `h` (after the background adds are done)."""
    s.flush()
    if s.format == 2:
        return s._names((h,))[0]
    return Hash_BLAKE3(s.index.map[h])


def format1_datadir(path, **kw) -> DataDir:
    """A datadir that exists before the crypt store opens it: named by hashes
    of the ciphertext, with a crypt index (format 1, as every crypt store
    made before format 2)."""
    dd = DataDir(path, **kw)
    dd.create()
    return dd


def crypt_over(backend, keyfile, tmp_path, **kw) -> CryptStore:
    return open_crypt(backend, key_file=keyfile, passphrase=PW, index=tmp_path / "crypt.idx", **kw)


# -- tampering -------------------------------------------------------------------


def test_every_flipped_byte_is_refused(tmp_path, keyfile):
    """A backend that returns whatever it holds (a memory store, as a malicious
    server would): every single flipped bit of the ciphertext is an error."""
    back = MemoryStore()
    s = crypt_over(back, keyfile, tmp_path)
    data = [os.urandom(300), texty(1, 3000)]  # raw and zstd-compressed payloads
    hs = s.add_many(data)
    for h, d in zip(hs, data, strict=True):
        n = bname(s, h)
        good = back._blocks[n]
        assert d not in good
        for pos in range(len(good)):
            bad = bytearray(good)
            bad[pos] ^= 1 << (pos % 8)
            back._blocks[n] = bytes(bad)
            with pytest.raises(CorruptBlockError):
                s[h]
        back._blocks[n] = good
        assert s[h] == d
    # cut short, extended, emptied
    n = bname(s, hs[0])
    good = back._blocks[n]
    for bad in (good[:-1], good + b"\0", b"", good[:20]):
        back._blocks[n] = bad
        with pytest.raises(CorruptBlockError):
            s[hs[0]]
    s.close()


def test_flipped_byte_in_datadir_file(tmp_path, keyfile):
    """A real datadir: one flipped byte in the data file gives one clear error."""
    dd = DataDir(tmp_path / "dd", compress=False)
    s = crypt_over(dd, keyfile, tmp_path)
    data = os.urandom(50_000)
    h = s.add(data)
    sealed = s.seal(h, data)
    s.close()
    (f,) = (tmp_path / "dd" / "data").glob("*.vtd")
    raw = bytearray(f.read_bytes())
    at = raw.find(sealed)
    assert at > 0
    raw[at + 1000] ^= 0x40
    f.write_bytes(bytes(raw))
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        with pytest.raises(CorruptBlockError):
            s[h]


def test_block_moved_to_another_name(tmp_path, keyfile):
    """The backend serves block B's ciphertext under block A's name: refused,
    naming the swap; so is a block of another key under the right name."""
    back = MemoryStore()
    s = crypt_over(back, keyfile, tmp_path)
    a, b = s.add(b"block A " * 100), s.add(b"block B " * 100)
    na, nb = (bname(s, h) for h in (a, b))
    back._blocks[na], back._blocks[nb] = back._blocks[nb], back._blocks[na]
    for h in (a, b):
        with pytest.raises(CorruptBlockError, match="moved or swapped"):
            s[h]
    # the same plaintext sealed under another key, put under this key's name
    other = tmp_path / "other.key"
    create_key_file(other, PW, log_n=LOG_N)
    s2 = open_crypt(MemoryStore(), key_file=other, passphrase=PW, index=tmp_path / "o.idx")
    back._blocks[na] = s2.seal(a, b"block A " * 100)
    with pytest.raises(CorruptBlockError):
        s[a]
    s2.close()
    s.close()


def test_swapped_index_batches_read_as_missing(tmp_path, keyfile, caplog):
    """Batches of the encrypted index swapped (same length): both fail
    authentication, their blocks read as missing, never as other blocks, and
    reindex brings them all back."""
    dd = format1_datadir(tmp_path / "dd")
    s = crypt_over(dd, keyfile, tmp_path)
    a = s.add_many([b"first %d" % i for i in range(10)])
    s.flush()
    b = s.add_many([b"second %d" % i for i in range(10)])
    s.close()
    idx = tmp_path / "crypt.idx"
    raw = idx.read_bytes()
    half = (len(raw) - 16) // 2
    assert len(raw) == 16 + 2 * half
    idx.write_bytes(raw[:16] + raw[16 + half :] + raw[16 : 16 + half])
    with (
        caplog.at_level(logging.WARNING),
        crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s,
    ):
        assert s.index.damaged == 2
        assert "fails authentication" in caplog.text
        for h in a + b:
            with pytest.raises(MissingBlockError):
                s[h]
        got = s.reindex().as_dict()
        assert got == {"blocks": 20, "foreign": 0, "unreadable": 0}
        assert [s[h] for h in a] == [b"first %d" % i for i in range(10)]
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert len(s) == 20 and s.index.damaged == 0


def test_torn_index_tail(tmp_path, keyfile):
    """A crash mid-append leaves a torn batch: readers ignore it, the next
    append cuts it off, reindex recovers the blocks it named."""
    s = crypt_over(format1_datadir(tmp_path / "dd"), keyfile, tmp_path)
    a = s.add_many([b"a %d" % i for i in range(5)])
    s.flush()
    b = s.add_many([b"b %d" % i for i in range(5)])
    s.close()
    idx = tmp_path / "crypt.idx"
    whole = idx.stat().st_size
    os.truncate(idx, whole - 7)
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert len(s) == 5 and all(h in s for h in a) and not any(h in s for h in b)
        s.add(b"c")
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert len(s) == 6 and s.index.damaged == 0
        assert s.reindex().blocks == 11
        assert [s[h] for h in b] == [b"b %d" % i for i in range(5)]


def test_reindex_counts_foreign_blocks(tmp_path, keyfile):
    dd = format1_datadir(tmp_path / "dd")
    s = crypt_over(dd, keyfile, tmp_path)
    hs = s.add_many([os.urandom(1000) for _ in range(30)])
    dd.add(b"a plaintext block someone added to the datadir directly")
    s.flush()
    (tmp_path / "crypt.idx").unlink()
    s.close()
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert len(s) == 0
        assert s.reindex().as_dict() == {"blocks": 30, "foreign": 1, "unreadable": 0}
        assert sorted(hs) == list(s.hashcodes())


# -- what the backend reveals ------------------------------------------------------


def _all_files(root):
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            yield os.path.join(dirpath, f)


def test_backend_reveals_no_plaintext_hash_or_data(tmp_path, keyfile):
    """Blocks, an archive, the index and the key file: no file name and no
    file content holds a plaintext hashcode (binary or hex, of any hash class
    the store could use) or a piece of plaintext."""
    from vtstore.hashes import Hash_SHA1, Hash_SHA256

    rnd = random.Random(7)
    blocks = [texty(i, rnd.randrange(100, 20000)) for i in range(300)]
    blocks += [rnd.randbytes(rnd.randrange(1, 9000)) for _ in range(100)]
    dd = DataDir(tmp_path / "dd", compress=False)
    s = crypt_over(dd, keyfile, tmp_path / "dd")
    hs = s.add_many(blocks)
    top = Dirent(T_DIR, name="secret-project", block=HashCodeBlock(hs[0], len(blocks[0])))
    arch = Archive(s.archive_path("backups"))
    arch.update(top, comment="the secret plan")
    s.close()
    needles = set()
    for b in blocks:
        for hc in (Hash_BLAKE3, Hash_SHA1, Hash_SHA256):
            d = hc.from_data(b)
            needles |= {bytes(d), d.hex_digest.encode()}
    assert bytes(hs[0]) in needles
    pieces = [b"secret plan number", b"secret-project", b"the secret plan"]
    pieces += [b[100:132] for b in blocks[300:] if len(b) >= 132]
    names = " ".join(_all_files(tmp_path / "dd"))
    assert all(n.decode(errors="replace") not in names for n in needles if len(n) > 32)
    seen = 0
    for f in _all_files(tmp_path / "dd"):
        content = open(f, "rb").read()
        seen += len(content)
        for n in needles:
            assert n not in content, (f, n)
        for p in pieces:
            assert p not in content, (f, p)
    assert seen > sum(map(len, blocks[300:]))
    # the backend's own names are not the plaintext names
    with DataDir(tmp_path / "dd", readonly=True) as plain:
        assert not set(plain.hashcodes()) & set(hs)
    # ... and everything reads back, archive included
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path / "dd") as s:
        assert s.get_many(hs) == blocks
        (entry,) = Archive(s.archive_path("backups")).entries()
        assert entry.dirent.name == "secret-project" and entry.comment == "the secret plan"


@pytest.mark.parametrize("fmt", [1, 2])
def test_same_key_dedups_other_key_does_not_link(tmp_path, keyfile, fmt):
    """Two crypt stores with the same key over one datadir (separate indexes)
    store each block once; another key gives other ciphertext and names."""
    blocks = [os.urandom(4000) for _ in range(50)]
    with (format1_datadir if fmt == 1 else DataDir)(tmp_path / "dd") as dd:
        s1 = open_crypt(dd, key_file=keyfile, passphrase=PW, index=tmp_path / "1.idx", owns=False)
        s2 = open_crypt(dd, key_file=keyfile, passphrase=PW, index=tmp_path / "2.idx", owns=False)
        assert s1.add_many(blocks) == s2.add_many(blocks)
        s1.flush()
        s2.flush()
        assert len(dd) == 50
        other = tmp_path / "other.key"
        create_key_file(other, PW, log_n=LOG_N)
        s3 = open_crypt(dd, key_file=other, passphrase=PW, index=tmp_path / "3.idx", owns=False)
        s3.add_many(blocks)
        s3.flush()
        assert len(dd) == 100
        assert s1.format == s3.format == fmt
        assert not {bname(s1, h) for h in s1.hashcodes()} & {bname(s3, h) for h in s3.hashcodes()}
        for s in (s1, s2, s3):
            s.close()


# -- the key file --------------------------------------------------------------------


def test_key_file_private_and_wrong_passphrase(tmp_path, keyfile):
    assert keyfile.stat().st_mode & 0o777 == 0o600
    info = key_info(keyfile)
    assert info["kdf"] == f"scrypt n=2^{LOG_N} r=8 p=1" and len(info["key_id"]) == 16
    with pytest.raises(CryptKeyError, match="wrong passphrase"):
        unwrap(keyfile, b"Correct horse battery staple")
    with pytest.raises(CryptKeyError, match="exists already"):
        create_key_file(keyfile, PW, log_n=LOG_N)
    with pytest.raises(ConfigError, match="empty passphrase"):
        create_key_file(tmp_path / "e.key", b"", log_n=LOG_N)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["kdf"].update(log_n=d["kdf"]["log_n"] + 1),  # cheaper or dearer scrypt
        lambda d: d.update(key_id="0" * 16),
        lambda d: d.update(wrapped=d["wrapped"][:-8] + "AAAAAAA="),
        lambda d: d["kdf"].update(salt="AAAAAAAAAAAAAAAAAAAAAA=="),
    ],
)
def test_edited_key_file_is_refused(tmp_path, keyfile, edit):
    import json

    d = json.loads(keyfile.read_text())
    edit(d)
    keyfile.write_text(json.dumps(d))
    with pytest.raises(CryptKeyError):
        unwrap(keyfile, PW)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"format": "vtstore-crypt-key"}',
        '{"format":"vtstore-crypt-key",'
        '"version":1,"key_id":"0123456789abcdef","cipher":"aes-256-gcm","wrapped":"!",'
        '"kdf":{"name":"scrypt","log_n":40,"r":8,"p":1,"salt":"x"}}',
    ],
)
def test_damaged_key_file_is_one_error(tmp_path, text):
    p = tmp_path / "crypt.key"
    p.write_text(text)
    with pytest.raises(CryptKeyError):
        unwrap(p, PW)


@pytest.mark.parametrize("fmt", [1, 2])
def test_rewrap_keeps_the_data(tmp_path, keyfile, fmt):
    dd_path = tmp_path / "dd"
    with crypt_over((format1_datadir if fmt == 1 else DataDir)(dd_path), keyfile, tmp_path) as s:
        hs = s.add_many([os.urandom(2000) for _ in range(20)])
    before = {f: open(f, "rb").read() for f in _all_files(dd_path) if "/data/" in f}
    old = unwrap(keyfile, PW)
    new = rewrap(keyfile, PW, b"a new passphrase")
    assert new == old  # same master key
    with pytest.raises(CryptKeyError, match="wrong passphrase"):
        unwrap(keyfile, PW)
    with pytest.raises(CryptKeyError, match="wrong passphrase"):
        rewrap(keyfile, PW, b"third")
    s = open_crypt(
        DataDir(dd_path),
        key_file=keyfile,
        passphrase=b"a new passphrase",
        index=tmp_path / "crypt.idx",
    )
    with s:
        assert len(s.get_many(hs)) == 20
    after = {f: open(f, "rb").read() for f in _all_files(dd_path) if "/data/" in f}
    assert before == after
    assert keyfile.stat().st_mode & 0o777 == 0o600
    assert not [p for p in keyfile.parent.iterdir() if p.name.startswith(".")]
    if fmt == 1:
        assert (tmp_path / "crypt.idx").stat().st_mode & 0o777 == 0o600
    else:  # format 2 keeps no index
        assert not (tmp_path / "crypt.idx").exists()


# -- specs ------------------------------------------------------------------------------


def test_spec_and_passphrase_sources(tmp_path, monkeypatch):
    dd = DataDir(tmp_path / "dd")
    dd.create()
    dd.close()
    create_key_file(tmp_path / "dd" / "crypt.key", PW, log_n=LOG_N)
    monkeypatch.setenv("VT_PASSPHRASE", PW.decode())
    with open_store_spec(f"crypt:{tmp_path / 'dd'}") as s:
        assert isinstance(s, CryptStore) and not s.backend.compress
        h = s.add(b"via the spec")
    monkeypatch.setenv("VT_PASSPHRASE", "wrong")
    with pytest.raises(CryptKeyError, match="wrong passphrase"):
        open_store_spec(f"crypt:{tmp_path / 'dd'}")
    monkeypatch.delenv("VT_PASSPHRASE")
    pf = tmp_path / "pass"
    pf.write_bytes(PW + b"\nignored\n")
    from vtstore.config import load_config

    rc = tmp_path / "vtrc"
    rc.write_text(f"[enc]\ntype = crypt\nstore = {tmp_path / 'dd'}\npassphrase_file = {pf}\n")
    with open_store_spec("[enc]", config=load_config(rc), readonly=True) as s:
        assert s[h] == b"via the spec" and s.readonly
    with pytest.raises(ConfigError, match="needs key_file"):
        open_crypt(MemoryStore(), passphrase=PW)


# -- archives -------------------------------------------------------------------------


def test_archive_lines_are_encrypted_and_authenticated(tmp_path, keyfile, caplog):
    s = crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path)
    h = s.add(b"top")
    path = s.archive_path("home")
    assert line_codec_for(path) is s.archive_codec()
    a = Archive(path)
    for i in range(3):
        a.update(Dirent(T_DIR, name=f"state{i}", block=HashCodeBlock(h, 3)))
    assert [e.dirent.name for e in a.entries()] == ["state0", "state1", "state2"]
    assert list(s.exports) == ["home"]
    raw = path.read_bytes()
    assert raw.count(b"\n") == 3 and b"state" not in raw and h.hex_digest.encode() not in raw
    # a line tampered with: that state is damaged, the others read
    lines = raw.split(b"\n")
    lines[1] = lines[1][:20] + (b"A" if lines[1][20:21] != b"A" else b"B") + lines[1][21:]
    path.write_bytes(b"\n".join(lines))
    with caplog.at_level(logging.WARNING):
        assert [e.dirent.name for e in Archive(path).entries()] == ["state0", "state2"]
    assert "fails authentication" in caplog.text or "not base64" in caplog.text
    s.close()
    # without the crypt store: no codec, every line is damage saying why
    assert line_codec_for(path) is None
    scan = Archive(path).scan()
    assert not scan.states and "crypt store" in scan.damaged[0].reason


# -- scale and processes -------------------------------------------------------------


@pytest.mark.parametrize("fmt", [1, 2])
def test_tens_of_thousands_of_blocks(tmp_path, keyfile, fmt):
    """20,000 blocks and 40 MB: written, reopened (index read back, or every
    block decrypted to list them), listed, read."""
    rnd = random.Random(11)
    small = [b"%d " % i * 3 for i in range(20_000)]
    big = [rnd.randbytes(40_000) for _ in range(1000)]
    with crypt_over(
        (format1_datadir if fmt == 1 else DataDir)(tmp_path / "dd"), keyfile, tmp_path
    ) as s:
        assert s.format == fmt
        hs = s.add_many(small)
        hb = s.add_many(big)
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path, readonly=True) as s:
        assert len(s) == 21_000
        assert list(s.hashcodes()) == sorted(hs + hb)
        assert s.get_many(hs[::97]) == small[::97]
        assert s.get_many(hb) == big


WRITER = """
import sys
from vtstore.stores.crypt import open_crypt
from vtstore.stores.datadir import DataDir
tmp, key, who = sys.argv[1:]
with open_crypt(DataDir(tmp + "/dd"), key_file=key, passphrase=b"%s", index=tmp + "/crypt.idx") as s:
    for i in range(20):
        s.add_many([b"%%s block %%d.%%d" %% (who.encode(), i, j) for j in range(50)])
        s.flush()
"""


@pytest.mark.parametrize("fmt", [1, 2])
def test_two_processes_share_one_crypt_store(tmp_path, keyfile, fmt):
    # made first: two processes creating one datadir at once can fail with
    # "index .../index: File exists" (a datadir matter, not the crypt store's)
    with DataDir(tmp_path / "dd") as d:
        if fmt == 2:
            from vtstore.stores.crypt import prepare_backend

            prepare_backend(d)
        d.create()
    code = WRITER % PW.decode()
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(keyfile), w])
        for w in ("one", "two")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with crypt_over(DataDir(tmp_path / "dd"), keyfile, tmp_path) as s:
        assert s.format == fmt and len(s) == 2000
        assert fmt == 2 or s.index.damaged == 0
        assert len(list(s.hashcodes())) == 2000
        for w in (b"one", b"two"):
            data = b"%s block 19.49" % w
            assert s[s.hashclass.from_data(data)] == data


def test_compressible_blocks_compress_after_random_ones(tmp_path, keyfile):
    """Random batches stop the zstd tries; a text batch after them is still
    compressed (the backend cannot compress ciphertext)."""
    with crypt_over(MemoryStore(), keyfile, tmp_path) as s:
        for _ in range(4):
            s.add_many([os.urandom(8192) for _ in range(64)])
        assert s._plain_run >= 4
        text = [texty(i, 8192) for i in range(64)]
        hs = s.add_many(text)
        sealed = [s.backend[bname(s, h)] for h in hs]
        assert all(b[1] == 1 for b in sealed)  # the zstd flag
        assert sum(map(len, sealed)) < sum(map(len, text)) / 10
        assert s.get_many(hs) == text


def test_hostile_key_files_are_one_error(tmp_path, keyfile):
    """Random edits of a real key file, deep nesting, a huge file: always
    CryptKeyError or the right key, never another exception or another key."""
    import json

    good = keyfile.read_bytes()
    rnd = random.Random(5)
    p = tmp_path / "hostile.key"
    cases = [b"[" * 100_000, b'{"a":' * 50_000, b" " * (1 << 17), good[:-40]]
    for _ in range(300):
        b = bytearray(good)
        for _ in range(rnd.randrange(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        cases.append(bytes(b))
    d = json.loads(good)
    d["kdf"].update(log_n=20, r=32)  # 4 GiB per guess: refused before scrypt runs
    cases.append(json.dumps(d).encode())
    real = unwrap(keyfile, PW)
    opened = 0
    for c in cases:
        p.write_bytes(c)
        try:
            k = unwrap(p, PW)
        except CryptKeyError:
            continue
        opened += 1  # an edit of what is not authenticated (white space, "created")
        assert k == real, c[:80]
    assert opened < 100


def test_hostile_index_files(tmp_path, keyfile):
    """300 random edits of a real crypt index (bit flips, cuts, insertions,
    a huge length): opening is fine or one StoreError, every block reads right
    or is missing, never other data."""
    from vtstore.errors import StoreError

    dd = format1_datadir(tmp_path / "dd")
    s = crypt_over(dd, keyfile, tmp_path)
    blocks = [b"block %d " % i * 20 for i in range(60)]
    hs = []
    for i in range(0, 60, 20):
        hs += s.add_many(blocks[i : i + 20])
        s.flush()
    s.close()
    idx = tmp_path / "crypt.idx"
    good = idx.read_bytes()
    rnd = random.Random(9)
    for trial in range(300):
        b = bytearray(good)
        how = trial % 4
        if how == 0:
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        elif how == 1:
            del b[rnd.randrange(len(b)) :]
        elif how == 2:
            at = rnd.randrange(len(b))
            b[at:at] = rnd.randbytes(rnd.randrange(1, 40))
        else:
            at = rnd.randrange(16, len(b) - 4)
            b[at : at + 4] = rnd.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\0\0\0\x1c"])
        idx.write_bytes(bytes(b))
        try:
            s = crypt_over(
                DataDir(tmp_path / "dd", readonly=True), keyfile, tmp_path, readonly=True
            )
        except StoreError as e:
            assert "crypt index" in str(e)
            continue
        with s:
            for h, data in zip(hs, blocks, strict=True):
                try:
                    assert s[h] == data
                except MissingBlockError:
                    pass


def test_right_tag_wrong_plaintext_is_refused(tmp_path, keyfile):
    """A block sealed under A's tag holding B's data (only a key holder could
    make it: a bug, or a malicious client with the key): the final hash check
    refuses it, in get and in get_many."""
    back = MemoryStore()
    s = crypt_over(back, keyfile, tmp_path)
    a, b = s.add_many([b"data of A" * 50, b"data of B" * 50])
    back._blocks[bname(s, a)] = s.seal(a, b"data of B" * 50)
    with pytest.raises(CorruptBlockError, match="does not match its hash"):
        s[a]
    with pytest.raises(CorruptBlockError, match="does not match its hash"):
        s.get_many([b, a])
    assert s.get_many([b]) == [b"data of B" * 50]
    with pytest.raises(MissingBlockError):
        s.get_many([b, Hash_BLAKE3.from_data(b"absent")])
    s.close()
