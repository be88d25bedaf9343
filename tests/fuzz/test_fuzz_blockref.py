"""Fuzz the binary blockref decoder (`decode_blockref`) and `read_blockref` in a
run of refs (an indirect block's data), seeded with every block kind: hashcode
leaves and indirect blocks of every hash class, runs, literals, nested sub-blocks.
Anything but a `FormatError` is a finding; so is a decode slower than a second."""

from __future__ import annotations

from vtstore.blocks import (
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    decode_blockref,
    decode_blockrefs,
)
from vtstore.hashes import hashclasses


def blocks() -> list:
    """One of each kind: hashcode leaves and indirect blocks of every hash class,
    runs, literals, and sub-blocks nested 1, 2 and 5 deep."""
    out = []
    for i, cls in enumerate(hashclasses()):
        h = cls.from_data(b"seed %d" % i)
        out += [HashCodeBlock(h, 65536), IndirectBlock(h, 2**40 + i)]
    out += [
        RLEBlock(0),
        RLEBlock(4096, 0),
        RLEBlock(2**64 - 1, 0xFF),
        LiteralBlock(b""),
        LiteralBlock(b"hello, world"),
        LiteralBlock(bytes(range(32))),
        LiteralBlock(b"\x80" * 2048),
    ]
    base = list(out)
    for b in base[::3]:
        if b.span >= 4:
            s = SubBlock(b, 1, b.span - 2)
            out.append(s)
            s2 = SubBlock(s, 1, s.span - 2)
            out.append(s2)
            deep = s2
            for _ in range(3):
                if deep.span >= 2:
                    deep = SubBlock(deep, 0, deep.span - 1)
            out.append(deep)
    return out


def test_fuzz_decode_blockref(fuzz):
    seeds = [b.encode() for b in blocks()]
    res = fuzz(decode_blockref, seeds)
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()


def _decode_all(data):
    for b in decode_blockrefs(data):
        # what an indirect block's reader does with each child
        b.encode()


def test_fuzz_decode_blockrefs_run(fuzz):
    bl = [b.encode() for b in blocks()]
    seeds = [b"".join(bl[i : i + 4]) for i in range(0, len(bl), 4)]
    res = fuzz(_decode_all, seeds, n=20_000)
    assert res.failures == [], res.summary()
