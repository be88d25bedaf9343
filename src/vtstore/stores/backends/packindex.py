"""The index object of a pack (`index/ID` of the pack layout, docs/STORES.md)::

    index-object := "VTPX" 01  varint(count)  varint(pack_size)
                    ( digest  varint(n)  entry[n] )*count  crc32[4]

`entry` is an `IndexEntry` encoding (six varints) with file number 0, entries
in digest order, the CRC-32 over everything before it, big-endian.
"""

from __future__ import annotations

from vtstore.codec import decode_varint, encode_varint
from vtstore.errors import FormatError
from vtstore.stores.index import IndexEntry
from vtstore.stores.vtdio import crc32

INDEX_MAGIC = b"VTPX\x01"
#: an index object larger than this is refused (a pack of 64 MiB of 1-octet blocks)
MAX_INDEX_OBJECT = 64 * 1024 * 1024


def encode_pack_index(pairs: list[tuple[bytes, bytes]], pack_size: int) -> bytes:
    """The index object of a pack: `INDEX_MAGIC varint(count) varint(pack_size)`,
    then per block its digest and `varint(n)` + its `IndexEntry` encoding
    (file number 0), in digest order, then a CRC-32 of all before, 4 octets
    big-endian."""
    parts = [INDEX_MAGIC, encode_varint(len(pairs)), encode_varint(pack_size)]
    for d, v in sorted(pairs):
        parts += (d, encode_varint(len(v)), v)
    body = b"".join(parts)
    return body + crc32(body).to_bytes(4, "big")


def decode_pack_index(buf, digest_size: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """The inverse of `encode_pack_index`: `(pairs, pack_size)`; raises
    `FormatError` on anything malformed."""
    buf = bytes(buf)
    if len(buf) < len(INDEX_MAGIC) + 6 or not buf.startswith(INDEX_MAGIC):
        raise FormatError("not a pack index object")
    if crc32(buf[:-4]) != int.from_bytes(buf[-4:], "big"):
        raise FormatError("pack index object CRC mismatch")
    end = len(buf) - 4
    n, pos = decode_varint(buf, len(INDEX_MAGIC))
    size, pos = decode_varint(buf, pos)
    if n > end // (digest_size + 7):
        raise FormatError(f"pack index object claims {n} entries")
    pairs = []
    for _ in range(n):
        d = buf[pos : pos + digest_size]
        k, pos = decode_varint(buf, pos + digest_size)
        if k > 60 or pos + k > end:
            raise FormatError("pack index entry runs past the end")
        v = buf[pos : pos + k]
        pos += k
        e = IndexEntry.decode(v)
        if e.filenum != 0 or e.payload_offset + e.payload_length > size:
            raise FormatError("pack index entry points outside its pack")
        pairs.append((d, v))
    if pos != end:
        raise FormatError("trailing octets in a pack index object")
    return pairs, size


def with_filenum(v: bytes, num: int) -> bytes:
    """An encoded `IndexEntry` of file number 0 with `num` instead."""
    return encode_varint(num) + v[1:]
