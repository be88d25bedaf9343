"""The mark walk's fast reading of indirect blocks agrees with the full
decoder, and hands anything unusual to it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import (
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    decode_blockrefs,
)
from vtstore.hashes import hashclass_by_name
from vtstore.lifecycle.marks import _scan_refs

H = hashclass_by_name("blake3")

spans = st.integers(0, (1 << 64) - 1)
hashes = st.binary(min_size=32, max_size=32).map(H)
plain = st.one_of(st.builds(HashCodeBlock, hashes, spans), st.builds(IndirectBlock, hashes, spans))
odd = st.one_of(
    st.builds(RLEBlock, st.integers(0, 1000), st.integers(0, 255)),
    st.builds(LiteralBlock, st.binary(max_size=32)),
    st.builds(lambda h: SubBlock(HashCodeBlock(h, 100), 10, 20), hashes),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(plain, max_size=40), st.lists(odd, max_size=2), st.integers(0, 40))
def test_fast_scan_agrees_with_the_decoder(refs, extra, at):
    blocks = refs[:at] + extra + refs[at:]
    raw = b"".join(b.encode() for b in blocks)
    fast = _scan_refs(raw, H.hashid, H.digest_size)
    if extra:
        assert fast is None
        return
    want = list(decode_blockrefs(raw))
    leaves, inner = fast
    assert leaves == [bytes(b.hashcode) for b in want if type(b) is HashCodeBlock]
    assert inner == [(bytes(b.hashcode), b.span) for b in want if type(b) is IndirectBlock]


@given(st.binary(max_size=200))
def test_fast_scan_of_garbage_never_raises(raw):
    r = _scan_refs(raw, H.hashid, H.digest_size)
    assert r is None or isinstance(r, tuple)


def test_other_hash_class_refs_go_to_the_decoder():
    s1 = hashclass_by_name("sha1")
    raw = HashCodeBlock(s1(b"x" * 20), 5).encode()
    assert _scan_refs(raw, H.hashid, H.digest_size) is None
