"""Fuzz the dirent decoders: binary `decode_dirent` (and the stat cache's
`EncodedEntry.from_raw`, whose C and Python scanners must defer to it) and text
`parse_dirent`, seeded with every dirent type filled with rich metadata:
xattrs and POSIX ACLs, user and group names, times at the int64 edges, devices,
hard links, MIME types, uuids, previous versions, extension data."""

from __future__ import annotations

import uuid

from vtstore.blocks import LiteralBlock
from vtstore.errors import FormatError
from vtstore.tree.dirent import (
    DeviceDirent,
    DirDirent,
    FifoDirent,
    FileDirent,
    HardLinkDirent,
    SocketDirent,
    SymlinkDirent,
    WhiteoutDirent,
    decode_dirent,
    parse_dirent,
)
from vtstore.tree.dirscan import EncodedEntry
from vtstore.tree.meta import ACL_ACCESS, ACL_DEFAULT, Meta

from .test_fuzz_blockref import blocks

# a POSIX access ACL as the kernel stores it (user::rw-, user:1000:r--, group::r--, ...)
ACL = bytes.fromhex(
    "0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000400ffffffff"
)


def meta(i: int = 0) -> Meta:
    return Meta(
        mode=0o4755 if i % 2 else 0o644,
        uid=1000 + i,
        gid=2**32 - 1 if i % 3 == 0 else 100,
        user="usér" if i % 2 else "root",
        group="wheel\udcff",
        mtime_ns=1_764_581_400_123_456_789 + i,
        ctime_ns=-(2**63) if i == 3 else 1_764_581_400_000_000_000,
        atime_ns=2**63 - 1 if i == 4 else None,
        xattrs=tuple(
            sorted(
                [
                    (ACL_ACCESS, ACL),
                    (ACL_DEFAULT, ACL),
                    ("user.mime_type", b"text/plain"),
                    ("user.k\udc80", bytes(range(40))),
                ][: 1 + i % 4]
            )
        ),
        mime_type="text/plain; charset=utf-8" if i % 2 else None,
    )


def dirents() -> list:
    """Every dirent type with rich metadata (xattrs, ACLs, names, times), uuids,
    previous versions, extension data, devices and hard links."""
    bl = blocks()
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    return [
        FileDirent("file.txt", block=bl[0], meta=meta(0), uuid=u, prev=bl[-1]),
        FileDirent("ünï \udcfe", block=bl[-2], meta=meta(1), ino=7),
        FileDirent("empty", block=LiteralBlock(b""), meta=Meta()),
        DirDirent("dir", block=bl[1], meta=meta(2), ext=b"\x00ext\xff"),
        DirDirent("", block=LiteralBlock(b"\x01\x00")),
        SymlinkDirent("link", "../target/\udcff", meta=meta(3)),
        HardLinkDirent("again", 2**64 - 1, meta=meta(4)),
        DeviceDirent("sda", "b", 8, 0, meta=meta(5)),
        DeviceDirent("null", "c", 2**32 - 1, 2**32 - 1),
        FifoDirent("fifo", meta=meta(6)),
        SocketDirent("sock", meta=meta(7), uuid=u),
        WhiteoutDirent("gone"),
    ]


def _decode_binary(raw: bytes):
    """Decode both ways; they must agree on what is valid."""
    try:
        d = decode_dirent(raw)
    except FormatError:
        d = None
    try:
        e = EncodedEntry.from_raw(raw)
    except FormatError:
        if d is not None and d.name:
            raise AssertionError("from_raw refused what decode_dirent took") from None
        raise
    if d is None:
        raise AssertionError("from_raw took what decode_dirent refused")
    assert e.dirent() == d
    assert decode_dirent(e.encode()) == d


def test_fuzz_decode_dirent(fuzz):
    seeds = [d.encode() for d in dirents()]
    res = fuzz(_decode_binary, seeds)
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()


def test_fuzz_parse_dirent(fuzz):
    seeds = [str(d) for d in dirents()]
    res = fuzz(parse_dirent, seeds)
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()
