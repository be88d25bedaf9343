"""Fuzzing archive lines (`vtstore.archive.parse_line`) and whole archive files
(`Archive.entries`, `Archive.scan`, `Archive.repair`): any exception but
`FormatError`/`ArchiveError` is a failure, and so is a slow decode."""

from __future__ import annotations

import json
import os
import random
import uuid

from vtstore.archive import Archive, ArchiveEntry, ArchiveError, parse_line
from vtstore.blocks import HashCodeBlock, LiteralBlock
from vtstore.errors import FormatError
from vtstore.hashes import Hash_BLAKE3
from vtstore.tree.dirent import T_DIR, T_FILE, Dirent, Meta


def _dirents() -> list[Dirent]:
    h = Hash_BLAKE3.from_data(b"a directory")
    meta = Meta(mode=0o755, uid=0, gid=0, user="root", group="root", mtime_ns=1_700_000_000_5)
    return [
        Dirent(T_DIR, name="src", block=HashCodeBlock(h, 184), meta=meta),
        Dirent(T_DIR, name="d", block=LiteralBlock(b"\x01\x00"), uuid=uuid.UUID(int=7)),
        Dirent(T_FILE, name='ünï ✓ "q"', block=LiteralBlock(b"hello")),
    ]


def seed_lines() -> list[str]:
    out = []
    for i, d in enumerate(_dirents()):
        e = ArchiveEntry(
            1764581400.25 + i,
            d,
            uuid.UUID(int=i + 1) if i else None,
            "name ✓" if i == 1 else None,
            'a comment, with "quotes" and\nnewlines' if i != 1 else None,
            "0123456789abcdef0123456789abcdef" if i != 2 else None,
        )
        out.append(e.to_line().rstrip("\n"))
        out.append(f"2025-12-01T09:30:00.250000Z {int(e.when)} {d}")
    out.append(json.dumps({"when": 1, "dirent": str(_dirents()[0]), "future": [1, {"x": None}]}))
    return out


def test_fuzz_parse_line(fuzz):
    seeds = seed_lines()
    for s in seeds:  # the seeds themselves are good lines
        parse_line(s)
    res = fuzz(lambda text: parse_line(text, "x.vt line 1: "), seeds)
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()


def test_fuzz_archive_files(fuzz, tmp_path):
    """Whole files: mutated archives of several lines (with comments, blank lines
    and a torn tail) read, scanned and repaired without an unexpected error."""
    rng = random.Random(1207)
    lines = seed_lines()
    seeds = []
    for _ in range(12):
        pick = [rng.choice(lines) for _ in range(rng.randrange(1, 8))]
        if rng.random() < 0.3:
            pick.insert(rng.randrange(len(pick) + 1), "# a comment")
        if rng.random() < 0.3:
            pick.insert(rng.randrange(len(pick) + 1), "")
        seeds.append(("\n".join(pick) + "\n").encode())
    path = tmp_path / "f.vt"
    archive = Archive(path)
    n = 2_000  # files (each written, read and scanned); VT_FUZZ_N scales it like the rest
    counter = [0]

    def decode(data: bytes) -> None:
        path.write_bytes(data)
        good = list(archive.entries())  # never raises for damage: it warns
        scan = archive.scan()
        assert len(scan.states) == len(good)
        counter[0] += 1
        if counter[0] % 10 == 0:  # repair is slower (fsyncs): every tenth file
            aside = archive.repair()
            after = archive.scan()
            assert after.damaged == [] and len(after.states) == len(good)
            assert len(aside) == len(scan.damaged)
            os.unlink(str(path) + ".damaged") if aside else None

    res = fuzz(decode, seeds, n=n, expected=(FormatError, ArchiveError))
    assert res.failures == [], res.summary()
    assert res.rejected == 0, res.summary()  # damage is skipped, never raised
