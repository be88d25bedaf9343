"""Block values, binary blockrefs and indirect trees, over every hash class."""

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import (
    HashCodeBlock,
    IndirectBlock,
    IndirectBuilder,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    block_for,
    decode_blockref,
    decode_blockrefs,
    is_constant,
    leaf_block,
    leaf_blocks,
    top_block_of,
)
from vtstore.errors import CorruptBlockError, FormatError
from vtstore.hashes import hashclasses
from vtstore.stores.memory import MemoryStore
from vtstore.transcribe import parse_block, transcribe

ALL = hashclasses()
byhash = pytest.mark.parametrize("H", ALL, ids=lambda h: h.hashname)


def blocks_strategy(H):
    hashcodes = st.binary(min_size=H.digest_size, max_size=H.digest_size).map(H)
    leaf = st.one_of(
        st.builds(HashCodeBlock, hashcodes, st.integers(0, 2**40)),
        st.builds(IndirectBlock, hashcodes, st.integers(0, 2**40)),
        st.builds(RLEBlock, st.integers(0, 2**40), st.integers(0, 255)),
        st.builds(LiteralBlock, st.binary(max_size=32)),
    )

    def sub(children):
        return children.flatmap(
            lambda b: st.integers(0, b.span).flatmap(
                lambda off: st.integers(0, b.span - off).map(lambda n: SubBlock(b, off, n))
            )
        )

    return st.recursive(leaf, sub, max_leaves=4)


@byhash
@settings(max_examples=60)
@given(data=st.data())
def test_blockref_and_transcription_round_trip(H, data):
    b = data.draw(blocks_strategy(H))
    enc = b.encode()
    assert decode_blockref(enc) == b
    text = transcribe(b)
    assert parse_block(text) == b
    assert str(b) == text
    assert hash(decode_blockref(enc)) == hash(b)


@byhash
@settings(max_examples=40)
@given(data=st.data())
def test_truncated_blockrefs_raise_format_error(H, data):
    enc = data.draw(blocks_strategy(H)).encode()
    for cut in range(len(enc)):
        with pytest.raises(FormatError):
            decode_blockref(enc[:cut])


@given(st.binary(max_size=120))
def test_random_bytes_only_format_error(raw):
    try:
        list(decode_blockrefs(raw))
    except FormatError:
        pass


def test_unknown_flags_and_types_name_the_offset():
    with pytest.raises(FormatError, match=r"unknown blockref flags 0x4 at offset 1"):
        decode_blockref(bytes([3, 4, 0, 0]))
    with pytest.raises(FormatError, match=r"unknown block type 9 at offset 3"):
        decode_blockref(bytes([3, 2, 0, 9]))
    with pytest.raises(FormatError, match="indirect flag"):
        decode_blockref(bytes([4, 3, 1, 1, 0]))
    with pytest.raises(FormatError, match="extra octets"):
        decode_blockref(LiteralBlock(b"a").encode() + b"\0")


@byhash
def test_reading_ranges_through_a_store(H):
    S = MemoryStore(hashclass=H)
    rnd = random.Random(1)
    data = rnd.randbytes(300_000)
    top = block_for(data, S, max_block_size=1024)
    assert isinstance(top, IndirectBlock) and top.span == len(data)
    assert top.data(S) == data
    # indirect fan-out limited by the max block size, and more than one level
    levels = 0
    b = top
    while b.indirect:
        assert len(S[b.hashcode]) <= 1024
        b = b.subblocks(S)[0]
        levels += 1
    assert levels >= 2
    for _ in range(200):
        a = rnd.randrange(len(data) + 10)
        e = rnd.randrange(a, len(data) + 20)
        assert top.read(S, a, e) == data[a:e]
    assert b"".join(leaf.data(S) for leaf in top.leaves(S)) == data
    got = b"".join(leaf.leaf_data(S, s, e) for leaf, s, e in top.slices(S, 5000, 6000))
    assert got == data[5000:6000]
    sub = SubBlock(top, 1234, 100_000)
    assert sub.data(S) == data[1234:101_234]
    assert b"".join(x.data(S) for x in sub.leaves(S)) == sub.data(S)


@byhash
def test_slices_skip_untouched_subtrees(H):
    S = MemoryStore(hashclass=H)
    data = os.urandom(200_000)
    top = block_for(data, S, max_block_size=512)
    fetched = []

    class Counting:
        def __getitem__(self, h):
            fetched.append(h)
            return S[h]

    from vtstore import blocks

    blocks._SUBBLOCK_CACHE.clear()
    assert top.read(Counting(), 100, 200) == data[100:200]
    # root-to-leaf path only: a handful of fetches, not the whole tree
    assert len(fetched) <= 6


def test_leaf_kinds():
    S = MemoryStore()
    assert leaf_block(b"tiny", S) == LiteralBlock(b"tiny")
    assert leaf_block(b"\0" * 10_000, S) == RLEBlock(10_000, 0)
    assert leaf_block(b"\x07" * 33, S) == RLEBlock(33, 7)
    assert len(S) == 0
    b = leaf_block(b"x" * 40 + b"y", S)
    assert isinstance(b, HashCodeBlock) and b.span == 41 and len(S) == 1
    assert block_for(b"\0" * 10_000_000, S) == RLEBlock(10_000_000, 0)
    assert top_block_of([], S) == LiteralBlock(b"")
    assert is_constant(memoryview(b"aaaa")) and not is_constant(b"aaab") and not is_constant(b"")


def test_indirect_tree_is_deterministic_and_shares_prefix():
    S = MemoryStore()
    rnd = random.Random(2)
    pieces = [rnd.randbytes(100) for _ in range(3000)]
    t1 = top_block_of(leaf_blocks(pieces, S), S, 1024)
    t2 = top_block_of(leaf_blocks(pieces, S), S, 1024)
    assert t1 == t2
    n = len(S)
    top_block_of(leaf_blocks(pieces + [b"z" * 100], S), S, 1024)
    # appending one leaf rewrites only the right edge of the tree
    assert len(S) - n <= 6


def test_builder_single_leaf_and_incremental():
    S = MemoryStore()
    b = IndirectBuilder(S, 256)
    leaf = leaf_block(b"q" * 40 + b"!", S)
    b.add(leaf)
    assert b.close() == leaf
    with pytest.raises(ValueError):
        IndirectBuilder(S, 10)


def test_span_mismatch_is_corruption():
    S = MemoryStore()
    h = S.add(b"a" * 100)
    with pytest.raises(CorruptBlockError):
        HashCodeBlock(h, 99).data(S)
    ind = IndirectBlock(S.add(HashCodeBlock(h, 100).encode()), 101)
    with pytest.raises(CorruptBlockError, match="children span"):
        ind.data(S)
    garbage = IndirectBlock(S.add(b"\xff\xff\xff"), 5)
    with pytest.raises(CorruptBlockError, match="does not decode"):
        garbage.data(S)


def test_blocks_are_immutable_values():
    S = MemoryStore()
    h = S.add(b"x" * 50)
    a, b = HashCodeBlock(h, 50), HashCodeBlock(h, 50)
    assert a == b and a is not b and len({a, b}) == 1
    assert a != IndirectBlock(h, 50)
    with pytest.raises(AttributeError):
        a.span = 3
    with pytest.raises(ValueError):
        SubBlock(a, 10, 41)


@settings(max_examples=60, deadline=None)
@given(
    spans=st.lists(st.integers(min_value=0, max_value=70000), min_size=1, max_size=400),
    max_block=st.sampled_from([256, 1000, 4096, 65536]),
    split=st.integers(min_value=0, max_value=400),
    H=st.sampled_from(hashclasses()),
)
def test_add_leaves_builds_the_same_tree_as_add_many(spans, max_block, split, H):
    S = MemoryStore(hashclass=H)
    hs = [H.from_data(i.to_bytes(4, "big")) for i in range(len(spans))]
    a = IndirectBuilder(S, max_block)
    a.add_many(HashCodeBlock(h, n) for h, n in zip(hs, spans, strict=True))
    b = IndirectBuilder(S, max_block)
    b.add_leaves(hs[:split], spans[:split])  # in two calls, the second maybe empty
    b.add_leaves(hs[split:], spans[split:])
    assert b.close() == a.close()


def test_add_leaves_refuses_what_is_not_a_leaf():
    b = IndirectBuilder(MemoryStore(), 1024)
    with pytest.raises(TypeError):
        b.add_leaves([b"x" * 32], [10])
    with pytest.raises(TypeError):
        b.add_leaves([hashclasses()[0].from_data(b"x")], [-1])
