"""Indirect completeness: is every block reachable from a block present in a store?

The server answers this for a client in one request, walking the tree next to the
store instead of across the network; `missing_blocks` also works on any local store.
"""

from __future__ import annotations

from vtstore.blocks import Block, HashCodeBlock, IndirectBlock, SubBlock
from vtstore.hashes import HashCode

#: How many blocks one round of the walk checks with a single `contains_many`.
_ROUND = 4096


def missing_blocks(store, block: Block, limit: int = 64) -> tuple[int, list[HashCode]]:
    """Walk the tree under `block`; return `(checked, missing)`.

    `checked` counts the distinct stored blocks looked up; `missing` lists up to
    `limit` hashcodes that are absent (the walk stops once it has that many).  A
    missing indirect block hides its subtree, which is then not checked.  Shared
    subtrees are walked once.  Raises `CorruptBlockError` for an indirect block
    whose data does not decode.
    """
    seen: set[HashCode] = set()
    missing: list[HashCode] = []
    checked = 0
    todo: list[Block] = [block]
    while todo and len(missing) < limit:
        batch, todo = todo[:_ROUND], todo[_ROUND:]
        hashcodes: list[HashCode] = []
        indirects: dict[HashCode, IndirectBlock] = {}
        for b in batch:
            while isinstance(b, SubBlock):
                b = b.superblock
            if isinstance(b, HashCodeBlock | IndirectBlock):
                h = b.hashcode
                if h in seen:
                    continue
                seen.add(h)
                hashcodes.append(h)
                if isinstance(b, IndirectBlock):
                    indirects[h] = b
        if not hashcodes:
            continue
        present = store.contains_many(hashcodes)
        checked += len(hashcodes)
        for h, ok in zip(hashcodes, present, strict=True):
            if not ok:
                missing.append(h)
                if len(missing) >= limit:
                    break
            elif h in indirects:
                todo.extend(indirects[h].subblocks(store))
    return checked, missing
