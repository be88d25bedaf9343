"""Content edits by reference: splice and crop a file's block without reading
or storing its data (the edge leaves become sub-blocks).

Used by the mount's `x-vt-control` (`vtstore.fs.control`) and by `vt ftp`, so
both cut content the same way.
"""

from __future__ import annotations

from vtstore.blocks import LiteralBlock, SubBlock, top_block_of
from vtstore.errors import VTError

#: the content of an empty file
EMPTY = LiteralBlock(b"")


class EditError(VTError):
    """An offset or length outside the content."""

    exit_code = 2


def cut(block, store, start: int, end: int) -> list:
    """The leaves of `block[start:end)`, the edge ones as sub-blocks."""
    out = []
    for leaf, s, e in block.slices(store, start, end):
        out.append(leaf if (s == 0 and e == leaf.span) else SubBlock(leaf, s, e - s))
    return out


def top_of(leaves, store):
    """The top block over `leaves` (the empty block for none)."""
    return top_block_of(leaves, store) if leaves else EMPTY


def splice(block, store, offset: int, ref, length: int = 0):
    """`block` with `length` octets at `offset` replaced by the content of `ref`."""
    if offset < 0 or length < 0 or offset > block.span:
        raise EditError(f"splice at {offset} (length {length}) is outside 0..{block.span}")
    leaves = cut(block, store, 0, offset) + cut(ref, store, 0, ref.span)
    leaves += cut(block, store, offset + length, block.span)
    return top_of(leaves, store)


def crop(block, store, start: int, end: int):
    """`block` cut down to the octets `[start:end)`."""
    if start < 0 or end < start:
        raise EditError(f"crop {start} {end}: need 0 <= START <= END")
    return top_of(cut(block, store, start, end), store)
