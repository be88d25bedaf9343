"""Fuzzing the HTTP client's native leaf-ref split (`_vtdread.split_leaf_refs`,
through `vtstore.http.readahead.leaf_list`): every input decodes to exactly
what `blocks.leaf_refs` reads (digests end to end and spans) or to None for
both; any difference, exception or slow input is a failure.  Its input is an
indirect block's data, which a store holding crafted blocks can make anything."""

from __future__ import annotations

import os

from vtstore.blocks import HashCodeBlock, IndirectBlock, block_for, leaf_refs
from vtstore.codec import encode_varint
from vtstore.hashes import Hash_BLAKE3, Hash_SHA256
from vtstore.http.readahead import leaf_list
from vtstore.stores.memory import MemoryStore


class Mismatch(Exception):
    pass


def _python(data):
    got = leaf_refs(data)
    if got is None or any(type(h) is not Hash_BLAKE3 for h in got[0]):
        return None
    return b"".join(got[0]), got[1]


DECODED = [0]  # inputs that read as leaf refs (not None)


def _decode(data: bytes):
    native = leaf_list(data, Hash_BLAKE3)
    if native != _python(data):
        raise Mismatch(f"native {native!r:.80} != python")
    DECODED[0] += native is not None
    return native


def _seeds() -> list[bytes]:
    s = MemoryStore()
    top = block_for(os.urandom(1 << 20), s, max_block_size=4096)
    node = s[top.hashcode]
    if type(top) is IndirectBlock and leaf_refs(node) is None:
        node = s[top.subblocks(s)[0].hashcode]
    hs, spans = leaf_refs(node)
    h = Hash_BLAKE3.from_data(b"x")
    out = [
        node,
        b"".join(HashCodeBlock(x, n).encode() for x, n in zip(hs[:12], spans[:12], strict=True)),
    ]
    for span in (1, 127, 128, 16384, 2**57, 2**64 - 1):
        out.append(HashCodeBlock(h, span).encode() * 3)
    body = bytes([0]) + encode_varint(2**64) + bytes([Hash_BLAKE3.hashid]) + bytes(h)
    out.append(encode_varint(len(body)) + body)
    out.append(HashCodeBlock(Hash_SHA256.from_data(b"x"), 5).encode() * 2)
    out.append(IndirectBlock(h, 10).encode() + HashCodeBlock(h, 5).encode())
    return out


def test_fuzz_split_leaf_refs(fuzz):
    seeds = _seeds()
    assert _decode(seeds[0]) is not None
    res = fuzz(_decode, seeds, expected=())
    assert res.failures == [], res.summary()
    # the mutations reach the parser's depths: some still read as leaf refs
    assert DECODED[0] > res.tried // 100, (DECODED[0], res.summary())
