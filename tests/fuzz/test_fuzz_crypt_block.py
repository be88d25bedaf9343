"""Fuzz the encrypted block decoder (docs/FORMATS.md §12.1): mutated backend
blocks of a format 2 crypt store, opened batch-wise (`get_many`, the native
`_cryptblocks` when built) and one at a time (`unseal`), and named by the tag
class as the backend datadir names them.  Every input is refused with
`CorruptBlockError` or opens to the one right plaintext: never other data."""

from __future__ import annotations

import os

import pytest

from vtstore.errors import CorruptBlockError
from vtstore.hashes import Hash_BLAKE3
from vtstore.stores.crypt import open_crypt
from vtstore.stores.crypt.keys import create_key_file
from vtstore.stores.crypt.names import TagCode, tag_class
from vtstore.stores.memory import MemoryStore

PW = b"fuzz"


@pytest.fixture
def store(tmp_path):
    kf = tmp_path / "crypt.key"
    create_key_file(kf, PW, log_n=10)
    back = MemoryStore(hashclass=tag_class(Hash_BLAKE3))
    with open_crypt(back, key_file=kf, passphrase=PW, index=tmp_path / "i") as s:
        yield s


def test_fuzz_crypt_block(store, fuzz):
    plains = [b"", b"x", os.urandom(100), b"compressible text " * 200, os.urandom(3000)]
    hs = store.add_many(plains)
    want = dict(zip(hs, plains, strict=True))
    seeds = [store.seal(h, p) for h, p in want.items()]
    back = store.backend
    names = {h: store._names((h,))[0] for h in hs}

    def decode(data: bytes):
        # the backend names the block by the tag it carries (or a hash of it)
        name = back.hashclass.from_data(data)
        assert isinstance(name, TagCode) and name.check(data)
        h = next((h for h, n in names.items() if n == name), hs[0])
        back._blocks[names[h]] = data
        try:
            got = store.get_many([h])[0]
        finally:
            back._blocks[names[h]] = store.seal(h, want[h])
        assert got == want[h]
        assert store.unseal(h, data) == want[h]

    res = fuzz(decode, seeds, expected=(CorruptBlockError,))
    assert res.failures == [], res.summary()
    assert res.accepted and res.rejected
