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


def test_markset_memory_stays_near_the_marks_under_many_repeats():
    """Walking 10 states re-adds most leaves again and again (~1M adds for
    ~150k marks on the 1 GiB bench history): the unsorted tails must not
    grow to many times the marks (they took 17 MiB for 5 MB of digests)."""
    import random

    from vtstore.lifecycle.marks import MarkSet

    rnd = random.Random(3)
    uniq = [rnd.randbytes(32) for _ in range(60_000)]
    m = MarkSet(32)
    peak = 0
    for s in range(8):
        part = uniq[: 20_000 + s * 5_000]
        for i in range(0, len(part), 8):
            m.add_many(part[i : i + 8])
            if i % 4000 == 0:
                peak = max(peak, sum(b.__sizeof__() for b in m._b) + m.nbytes())
    assert len(m) == 55_000
    assert peak < 3 * 55_000 * 8 + 256 * 2 * MarkSet.MIN_TAIL, peak


def test_prefix_marks_merge_keeps_every_marked_digest_live():
    """A digest is live when its prefix is marked: a marked one always, an
    unmarked one sharing a marked prefix too (garbage kept, never a loss)."""
    from vtstore.lifecycle.marks import MarkSet
    from vtstore.stores.compact import merge_marks

    a = bytes(8) + b"\x01" * 24
    twin = bytes(8) + b"\x02" * 24  # same prefix as a, not marked
    b = b"\x05" * 32
    c = b"\x06" * 32  # not marked
    m = MarkSet(32)
    m.add(a)
    m.add_many([b])
    got = {
        d: live
        for d, _, live in merge_marks(((d, None) for d in sorted([a, twin, b, c])), m.sorted_iter())
    }
    assert got == {a: True, twin: True, b: True, c: False}
