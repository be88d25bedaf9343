"""Fuzz the pack index object decoder (`decode_pack_index`, the object
storage layout's `index/ID`).  A mutated input almost never keeps its CRC, so
the decoder is fed each input with its CRC made right again: what is fuzzed is
the parser behind the CRC.  Anything but a `FormatError` is a finding; so is a
slow decode (a claimed count that makes it loop or allocate)."""

from __future__ import annotations

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1
from vtstore.stores.backends.packindex import decode_pack_index, encode_pack_index
from vtstore.stores.index import IndexEntry
from vtstore.stores.vtdio import crc32


def seeds() -> list[bytes]:
    out = []
    for hc in (Hash_BLAKE3, Hash_SHA1):
        for n in (0, 1, 3, 40):
            pairs = [
                (
                    bytes(hc.from_data(b"block %d" % i)),
                    IndexEntry(0, i % 2, 40 + 1000 * i, 900, 7 * i, 100 + i).encode(),
                )
                for i in range(n)
            ]
            out.append(encode_pack_index(pairs, 40 + 1000 * n + 4))
    return out


def with_crc(buf: bytes) -> bytes:
    return buf[:-4] + crc32(buf[:-4]).to_bytes(4, "big") if len(buf) >= 4 else buf


def test_seeds_decode():
    for s in seeds():
        size = Hash_BLAKE3.digest_size if s in seeds()[:4] else Hash_SHA1.digest_size
        pairs, _ = decode_pack_index(s, size)
        assert encode_pack_index(pairs, _) == s


def test_fuzz_pack_index(fuzz):
    res = fuzz(lambda b: decode_pack_index(with_crc(b), Hash_BLAKE3.digest_size), seeds())
    assert res.failures == [], res.summary()
