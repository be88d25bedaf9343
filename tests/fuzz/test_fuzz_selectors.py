"""Fuzzing state selectors (`X.vt@SEL/path`): `split_selector` and
`select_state` meet any text with a state or one `ArchiveError`, never another
exception (a date past year 9999, a huge index, an odd offset ...)."""

from __future__ import annotations

from vtstore.archive import ArchiveEntry, ArchiveError, select_state
from vtstore.cli.refs import split_selector
from vtstore.tree.dirent import DirDirent

ENTRIES = [
    ArchiveEntry(1_764_581_400.25 + 3600 * i, DirDirent(), comment=str(i)) for i in range(50)
]

SEEDS = [
    "x.vt@latest/sub/f",
    "x.vt@-2",
    "x.vt@0/a@b",
    "x.vt@+12",
    f"x.vt@{ENTRIES[7].short_id}/d",
    f"x.vt@{ENTRIES[9].id}",
    "x.vt@2025-12-01",
    "x.vt@2025-12-01T10:00",
    "x.vt@2025-12-01T10:00:30.5Z",
    "x.vt@2025-12-01 10:00:30+05:30",
    "[home]docs@-1/notes.txt",
    "x.vt@9999-12-31T23:59:59.999999",
    "x.vt@0001-01-01",
    "x.vt@-999999999",
]


def test_fuzz_selectors(fuzz):
    for s in SEEDS:
        split_selector(s)

    def decode(text: str) -> None:
        _plain, sel = split_selector(text)
        if sel is not None:
            e = select_state(ENTRIES, sel, "x.vt")
            assert e in ENTRIES

    res = fuzz(decode, SEEDS, expected=(ArchiveError,))
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()
