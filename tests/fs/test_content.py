"""Layers of written bytes over blocks, and splicing them back into blocks."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import HashCodeBlock, RLEBlock
from vtstore.fs.content import EMPTY, ContentChunker, Layer, splice_block
from vtstore.stores.memory import MemoryStore

CHUNKER = ContentChunker()


def base_block(store, data):
    leaves = CHUNKER.leaves(data, store)
    from vtstore.blocks import top_block_of

    return top_block_of(leaves, store) if leaves else EMPTY


ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, 300_000), st.integers(1, 70_000)),
        st.tuples(st.just("t"), st.integers(0, 400_000), st.just(0)),
        st.tuples(st.just("f"), st.just(0), st.just(0)),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 250_000), ops)
def test_layers_and_splice_match_a_bytearray(n, oplist):
    store = MemoryStore()
    model = bytearray(os.urandom(n))
    block = base_block(store, bytes(model))
    layer = Layer(block, len(model))
    for op, a, b in oplist:
        if op == "w":
            data = os.urandom(b) if a % 3 else bytes(b)
            layer.write(a, data)
            if a > len(model):
                model.extend(bytes(a - len(model)))
            model[a : a + b] = data
        elif op == "t":
            layer.truncate(a)
            if a < len(model):
                del model[a:]
            else:
                model.extend(bytes(a - len(model)))
        else:  # freeze: store the layer, continue on a new one
            block = splice_block(layer, block, store, CHUNKER)
            assert block.span == len(model)
            layer = Layer(block, len(model))
        assert layer.size == len(model)
        assert layer.read(store, 0, len(model) + 10) == bytes(model)
    out = splice_block(layer, block, store, CHUNKER)
    assert out.data(store) == bytes(model)


def test_small_change_reuses_untouched_leaves():
    store = MemoryStore()
    data = os.urandom(2_000_000)
    block = base_block(store, data)
    before = set(block.leaves(store))
    layer = Layer(block, len(data))
    layer.write(1_000_000, b"X")
    new = splice_block(layer, block, store, CHUNKER)
    after = list(new.leaves(store))
    assert new.data(store) == data[:1_000_000] + b"X" + data[1_000_001:]
    assert len([leaf for leaf in after if leaf not in before]) <= 3


def test_holes_become_rle_blocks():
    store = MemoryStore()
    layer = Layer(EMPTY, 0)
    layer.write(10_000_000, b"end")
    new = splice_block(layer, EMPTY, store, CHUNKER)
    leaves = list(new.leaves(store))
    assert new.span == 10_000_003
    assert any(isinstance(x, RLEBlock) and x.span >= 1_000_000 for x in leaves)
    assert len(store) < 10


def test_unchanged_layer_gives_the_same_block():
    store = MemoryStore()
    block = base_block(store, os.urandom(100_000))
    assert splice_block(Layer(block, block.span), block, store, CHUNKER) is block
    assert isinstance(next(block.leaves(store)), HashCodeBlock)
