"""Fuzz the restore's reading past damage: `read_entries` (directory salvage) and
`tree_totals` (the up-front limit count) must never raise on any directory data,
whole or with a missing piece in the middle, and must only ever return entries
with safe, unique names."""

from __future__ import annotations

from vtstore.blocks import HashCodeBlock, IndirectBlock, LiteralBlock
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dirent import T_DIR, Dirent, check_name
from vtstore.tree.salvage import LimitError, read_entries, tree_totals

from .test_fuzz_dirblock import _seeds

_S = MemoryStore()
_GONE = _S.hashclass.from_data(b"a block this store never had")


def _check(d: Dirent) -> None:
    entries, problems = read_entries(d, _S)
    names = [e.name for e in entries]
    assert len(set(names)) == len(names), "repeated names"
    for n in names:
        check_name(n, allow_empty=False)
    tree_totals(d, _S)


def _salvage(data: bytes) -> None:
    _check(Dirent(T_DIR, block=LiteralBlock(data)))
    # the same data with a piece in the middle lost: two readable runs
    a, b = len(data) // 3, 2 * len(data) // 3
    kids = [
        HashCodeBlock(_S.add(data[:a]), a),
        HashCodeBlock(_GONE, b - a),
        HashCodeBlock(_S.add(data[b:]), len(data) - b),
    ]
    top = IndirectBlock(_S.add(b"".join(k.encode() for k in kids)), len(data))
    _check(Dirent(T_DIR, block=top))


def test_fuzz_directory_salvage(fuzz):
    # LimitError is never raised here: every exception, FormatError too, is a failure
    res = fuzz(_salvage, _seeds(), n=20_000, expected=(LimitError,))
    assert res.failures == [], res.summary()
    assert res.accepted > 0, res.summary()
