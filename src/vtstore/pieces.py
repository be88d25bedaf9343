"""A block's bytes as large pieces, read in runs of stored leaves: what `vt
cat` writes out and what `vt httpd` sends (`/i/`, `/d/`).

A store with `read_joined` (a datadir: a run of plain blocks read into one
buffer, checked, with no object per block and no join; the HTTP client
store) is read a run at a time, and an indirect block of leaves is walked
from its refs' octets (`blocks.leaf_refs`) without a Python step per leaf.
Any other store is read by `Block.chunks(joined=True)`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate

#: A streamed block is read in runs of stored leaves of about this many
#: octets, the first one smaller (1 MiB) so the answer starts soon.
RUN_BYTES = 4 << 20
FIRST_RUN_BYTES = 1 << 20


def block_pieces(block, store, start: int, end: int) -> Iterator:
    """The bytes `[start:end)` of `block` as pieces of about `RUN_BYTES`, for
    sending: what `block.chunks(store, start, end, joined=True)` yields, but
    read in runs of stored leaves by `store.read_joined` when the store has it
    (a datadir reads a run of plain blocks into one buffer, checked, with no
    object per block and no join: `DataDir.read_joined`), and an indirect
    block of leaves walked from its refs' octets (`leaf_refs`) without a
    Python step per leaf."""
    read_joined = getattr(store, "read_joined", None)
    if read_joined is None:
        yield from block.chunks(store, start, end, joined=True)
        return
    want = FIRST_RUN_BYTES
    leaf_pieces = getattr(store, "leaf_pieces", None)  # a store reading in its own runs
    for item in _leaf_runs(block, store, start, end, 0):
        if type(item) is not tuple:
            yield item
            continue
        hs, spans, s, e = item
        if leaf_pieces is not None:
            yield from leaf_pieces(hs, spans, s, e)
            continue
        cum = list(accumulate(spans))  # each leaf's end
        i = bisect_right(cum, s)  # the leaf holding octet s
        base = cum[i - 1] if i else 0
        pos = s
        while pos < e:
            j = min(bisect_left(cum, min(pos + want, e), lo=i), len(cum) - 1, i + RUN_LEAVES - 1)
            data = read_joined(hs[i : j + 1])
            if len(data) != cum[j] - base:
                length_fault(store, hs[i : j + 1], spans[i : j + 1])
            a, b = pos - base, min(e, cum[j]) - base
            yield data if a == 0 and b == len(data) else memoryview(data)[a:b]
            want = RUN_BYTES
            pos, i, base = base + b, j + 1, cum[j]


#: Most leaves one `read_joined` call asks for (`DataDir.read_joined`'s batch).
RUN_LEAVES = 1024


def _leaf_runs(block, store, start: int, end: int, depth: int) -> Iterator:
    """`(hashcodes, spans, s, e)` runs of stored leaves (`[s:e)` of them
    wanted, end to end) and the pieces of any other leaf (literal, RLE), that
    make `[start:end)` of `block`, in order."""
    from vtstore.blocks import MAX_INDIRECT_DEPTH, HashCodeBlock, IndirectBlock, leaf_refs
    from vtstore.errors import CorruptBlockError

    kind = type(block)
    if kind is HashCodeBlock:
        yield [block.hashcode], [block.span], start, end
        return
    if kind is not IndirectBlock:
        yield from block.chunks(store, start, end)
        return
    if depth >= MAX_INDIRECT_DEPTH:
        raise CorruptBlockError(
            block.hashcode, f"indirect blocks nested more than {MAX_INDIRECT_DEPTH} deep"
        )
    refs = getattr(store, "leaf_refs", None)  # a store that has read them already
    got = (
        refs(block.hashcode) if refs is not None else leaf_refs(store[block.hashcode])
    )  # the level above the leaves: most of a file
    if got is not None:
        total = sum(got[1])
        if total != block.span:
            raise CorruptBlockError(
                block.hashcode, f"children span {total} but the ref says {block.span}"
            )
        yield got[0], got[1], start, end
        return
    off = 0
    for sub in block.subblocks(store):  # checks the span too
        sub_end = off + sub.span
        if sub_end > start:
            if off >= end:
                return
            yield from _leaf_runs(
                sub, store, max(start, off) - off, min(end, sub_end) - off, depth + 1
            )
        off = sub_end


def length_fault(store, hs: list, spans: list):
    """Raise for the first leaf whose stored length is not its ref's span."""
    from vtstore.errors import CorruptBlockError

    for h, span, data in zip(hs, spans, store.get_many(hs), strict=True):
        if len(data) != span:
            raise CorruptBlockError(h, f"stored length {len(data)} but the ref says {span}")
    raise CorruptBlockError(hs[0], "a run of blocks read back at another length")
