"""`stores.compact.LiveItems`: the packed list of live blocks gc copies."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.stores.compact import LiveItems
from vtstore.stores.index import IndexEntry

entries = st.lists(
    st.tuples(
        st.integers(1, 2**31),  # filenum
        st.integers(0, 2**40),  # payload_offset
        st.integers(0, 2**26),  # data_offset: within a payload (64 MiB at most)
        st.integers(1, 2**26),
        st.integers(0, 2**26),
        st.integers(0, 255),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(entries)
def test_in_file_order_is_sorted_and_whole(vals):
    items = LiveItems(32)
    want = []
    for f, po, do, pl, dl, fl in vals:
        d = os.urandom(32)
        e = IndexEntry(f, fl, po, pl, do, dl)
        items.add(d, e)
        want.append((d, e))
    assert len(items) == len(want)
    assert sorted(items.digests()) == sorted(d for d, _ in want)
    got = list(items.in_file_order())
    assert sorted(got) == sorted(want)  # every item, whole
    keys = [(e.filenum, e.payload_offset, e.data_offset) for _, e in got]
    assert keys == sorted(keys)


def test_in_file_order_of_one_file_at_size():
    """150,000 blocks of one file (a 1 GiB data file of 8 KiB blocks), given
    in digest order: they come back in file order."""
    items = LiveItems(32)
    n = 150_000
    for i in range(n):
        po = (i * 7919 % n) // 30 * 262_144
        items.add(i.to_bytes(32, "big"), IndexEntry(3, 1, po, 250_000, (i % 30) * 8192, 8192))
    prev = (-1, -1)
    count = 0
    for _, e in items.in_file_order():
        assert (e.payload_offset, e.data_offset) >= prev
        prev = (e.payload_offset, e.data_offset)
        count += 1
    assert count == n


def test_markset_add_many_is_add():
    """`MarkSet.add_many` (the marker's path for an indirect block's leaves)
    keeps the same set as `add`, across the buckets' compactions."""
    import random

    from vtstore.lifecycle.marks import MarkSet

    rnd = random.Random(2)
    ds = [rnd.randbytes(32) for _ in range(60_000)]
    one, many = MarkSet(32), MarkSet(32)
    for d in ds + ds[:25_000]:
        one.add(d)
    for i in range(0, 85_000, 700):
        many.add_many((ds + ds[:25_000])[i : i + 700])
    assert list(many.sorted_iter()) == list(one.sorted_iter()) == sorted({d[:8] for d in ds})
