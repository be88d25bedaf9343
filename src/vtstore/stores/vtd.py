"""The `.vtd` data file format: append-only records of blocks.

A data file is a magic, a header record, then block records::

    file    := MAGIC header-record blocks-record*
    MAGIC   := 56 54 44 01                    "VTD" + format version 1
    record  := varint(flags) varint(n) payload[n] crc32[4]
    crc32   := zlib CRC-32 (IEEE) of the flags varint, the length varint and
               the n payload octets, 4 octets big-endian
    flags   := type | encoding                (other bits must be zero)
      encoding (bits 0-1): 0 plain, 1 zstd (one zstd frame, content size set)
      type     (bits 2-3): 0 blocks, 1 header
    header payload (plain): UTF-8 JSON object with at least "hashclass" and "uuid"
    blocks payload, after decoding := entry+
    entry   := varint(len) data[len]

A blocks record is a *frame*: consecutive blocks compressed together, so that
8 KiB blocks compress about as well as whole files (docs/STORES.md has the
numbers).  Hashcodes are not stored: the data is its own name, and the CRC says
whether a record is intact.  Varints are those of `vtstore.codec`.

Crash residue is an incomplete or invalid record at the end of a file (a writer
died mid-append); `scan_records` reports it apart from damage, which is a bad
region followed by a good record.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import threading
from collections import namedtuple
from collections.abc import Iterator

from vtstore.codec import decode_varint, encode_varint
from vtstore.errors import FormatError
from vtstore.stores.vtdio import crc32, entries_payload, sample_entropy, write_record

# zstandard is imported where used: a command reading plain records needs no
# zstd.  The records below are namedtuples, not dataclasses: no `dataclasses`
# (and its `inspect`) import on every store-opening start (~8 ms)
TYPE_CHECKING = False
if TYPE_CHECKING:
    import zstandard

MAGIC = b"VTD\x01"
FORMAT_VERSION = 1

ENC_PLAIN = 0
ENC_ZSTD = 1
ENC_MASK = 0x03
TYPE_BLOCKS = 0x00
TYPE_HEADER = 0x04
TYPE_MASK = 0x0C
VALID_FLAGS = frozenset({TYPE_BLOCKS | ENC_PLAIN, TYPE_BLOCKS | ENC_ZSTD, TYPE_HEADER | ENC_PLAIN})

# A record payload longer than this is refused: it bounds what a corrupt or
# hostile length can make a reader allocate.
MAX_PAYLOAD = 64 * 1024 * 1024
# The largest block a data file takes (a frame of one such block still fits).
MAX_BLOCK_SIZE = 16 * 1024 * 1024
# Default frame target (uncompressed octets) and zstd level: see docs/STORES.md.
DEFAULT_FRAME_SIZE = 256 * 1024
DEFAULT_ZSTD_LEVEL = 3
# A frame is stored compressed only when that saves at least this fraction.
MIN_SAVING = 1 / 64
# After incompressible frames, one whose sample has at least this entropy (bits
# per octet) is not tried: random data measures 7.99 on 16 KiB, and a saving
# of 1/64 by entropy coding alone needs at most 7.875.
PLAIN_ENTROPY = 7.9

CRC_SIZE = 4


def encode_record(flags: int, payload) -> bytes:
    """The octets of one record: header, payload, CRC."""
    if flags not in VALID_FLAGS:
        raise ValueError(f"bad record flags {flags:#x}")
    if not 0 < len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} octets out of range")
    head = encode_varint(flags) + encode_varint(len(payload))
    crc = crc32(payload, crc32(head))
    return b"".join((head, payload, crc.to_bytes(4, "big")))


def encode_header(hashclass_name: str, uuid_hex: str, **extra) -> bytes:
    """MAGIC plus the header record: how every data file begins."""
    meta = {"version": FORMAT_VERSION, "hashclass": hashclass_name, "uuid": uuid_hex}
    meta.update(extra)
    payload = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + encode_record(TYPE_HEADER | ENC_PLAIN, payload)


def encode_entries(datas) -> tuple[bytes, list[tuple[int, int]]]:
    """Concatenate `varint(len) data` entries; return the payload and each
    entry's `(data_offset, data_length)` within it."""
    parts = []
    spans = []
    pos = 0
    for data in datas:
        n = len(data)
        v = encode_varint(n)
        parts.append(v)
        parts.append(data)
        pos += len(v)
        spans.append((pos, n))
        pos += n
    return b"".join(parts), spans


def iter_entries(payload) -> Iterator[tuple[int, int]]:
    """Yield `(data_offset, data_length)` of each entry of a decoded blocks payload."""
    pos = 0
    end = len(payload)
    if end == 0:
        raise FormatError("empty blocks payload")
    while pos < end:
        n, pos = decode_varint(payload, pos)
        if pos + n > end:
            raise FormatError(f"block entry of {n} octets at {pos} runs past the payload end")
        yield pos, n
        pos += n


class Frame(namedtuple("Frame", "parts flags payload_offset payload_length spans")):
    """A blocks record ready to append: its octets (`parts`, a list of buffers,
    to write with one `pwritev` and no copy) and where things are in it:
    `flags`, `payload_offset` (of the payload within the record),
    `payload_length`, `spans` ((data_offset, data_length) of each block in
    the decoded payload)."""

    __slots__ = ()

    @property
    def record(self) -> bytes:
        """The record as one bytes object."""
        return b"".join(self.parts)

    @property
    def size(self) -> int:
        return self.payload_offset + self.payload_length + CRC_SIZE


_VARINT1 = [bytes((i,)) for i in range(128)]


class FrameEncoder:
    """Builds blocks records, compressing a frame only when that saves space.

    Not thread safe (zstd compressors are not): one per writer thread.
    """

    def __init__(self, level: int = DEFAULT_ZSTD_LEVEL, compress: bool = True):
        import zstandard

        self.compress = compress and level > 0
        self._cctx = zstandard.ZstdCompressor(
            level=level, write_checksum=False, write_content_size=True
        )
        self._plain_run = 0

    def encode(self, datas) -> Frame:
        """The record holding `datas` (a non-empty sequence of buffers)."""
        parts = []
        spans = []
        pos = 0
        for data in datas:
            n = len(data)
            v = _VARINT1[n] if n < 128 else encode_varint(n)
            parts.append(v)
            parts.append(data)
            pos += len(v)
            spans.append((pos, n))
            pos += n
        if not spans:
            raise ValueError("a frame needs at least one block")
        flags = TYPE_BLOCKS | ENC_PLAIN
        # one buffer: one compression call and one CRC call, each releasing
        # the GIL once, instead of a CRC call (and GIL hand-off) per block
        stored = b"".join(parts)
        length = pos
        if self.compress and self._worth_trying(parts, pos):
            z = self._cctx.compress(stored)
            if len(z) <= pos * (1 - MIN_SAVING):
                flags = TYPE_BLOCKS | ENC_ZSTD
                stored = z
                length = len(z)
                self._plain_run = 0
            else:
                self._plain_run += 1
        if length > MAX_PAYLOAD:
            raise ValueError(f"record payload of {length} octets out of range")
        head = encode_varint(flags) + encode_varint(length)
        crc = crc32(stored, crc32(head))
        return Frame([head, stored, crc.to_bytes(4, "big")], flags, len(head), length, spans)

    def write(self, fd: int, offset: int, datas, size: int) -> tuple[int, int, int, int]:
        """Append the record holding `datas` (a non-empty list of buffers of
        `size` octets in all) at `offset` of `fd`, compressed if that saves
        space; return `(record_size, flags, payload_offset, payload_length)`,
        the payload offset counted from the record's start.

        A plain frame goes from the blocks' own buffers to the file in one
        call (`vtdio.write_record`); a compressed one is joined first.
        """
        if self.skip(datas, size):
            flags, parts, entries = TYPE_BLOCKS | ENC_PLAIN, datas, True
        else:
            flags, parts, entries = self.prepare(datas, size)
        rsize, poff, plen = write_record(fd, offset, flags, parts, entries)
        return rsize, flags, poff, plen

    def skip(self, datas, size: int) -> bool:
        """Whether the frame `datas` (of `size` octets) is stored plain without
        trying to compress it (then it counts as an incompressible one).

        After a run of 4 incompressible frames, a frame is tried only if a
        16 KiB sample of it has an entropy below `PLAIN_ENTROPY` (measured
        natively, by the thread that adds, so that random frames never go
        through the compressing thread); `prepare` then tries zstd on a sample
        before the whole frame.  Without the extension nothing is skipped.
        """
        if not self.compress:
            return True
        if self._plain_run < 4 or size <= 32768 or sample_entropy is None:
            return False
        if sample_entropy(datas) >= PLAIN_ENTROPY:
            self._plain_run += 1
            return True
        return False

    def prepare(self, datas, size: int) -> tuple[int, tuple, bool]:
        """Try to compress a frame that `skip` did not: return its record's
        `(flags, parts, entries)` as `vtdio.write_record` takes them."""
        if self._plain_run >= 4 and size > 32768 and not self._sample_compresses(datas):
            self._plain_run += 1
            return TYPE_BLOCKS | ENC_PLAIN, datas, True
        payload = entries_payload(datas)
        z = self._cctx.compress(payload)
        if len(z) <= len(payload) * (1 - MIN_SAVING):
            self._plain_run = 0
            return TYPE_BLOCKS | ENC_ZSTD, (z,), False
        self._plain_run += 1
        return TYPE_BLOCKS | ENC_PLAIN, (payload,), False

    def _sample_compresses(self, parts) -> bool:
        sample = bytearray()
        for part in parts:
            sample += part[: 16384 - len(sample)]
            if len(sample) >= 16384:
                break
        return len(self._cctx.compress(sample)) <= len(sample) * (1 - MIN_SAVING)

    def _worth_trying(self, parts, size: int) -> bool:
        # `encode`'s test (fsck salvage, tests): the sample after 4 plain frames
        if self._plain_run < 4 or size <= 32768:
            return True
        ok = self._sample_compresses(parts)
        if not ok:
            self._plain_run += 1
        return ok


_local = threading.local()


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        import zstandard

        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def decode_payload(flags: int, stored, max_size: int = MAX_PAYLOAD) -> bytes:
    """The decoded payload of a record (decompressed if it is zstd)."""
    if flags & ENC_MASK == ENC_PLAIN:
        return bytes(stored)
    if flags & ENC_MASK == ENC_ZSTD:
        import zstandard

        try:
            params = zstandard.get_frame_parameters(stored)
            size = params.content_size
            if size > max_size or size == zstandard.CONTENTSIZE_UNKNOWN:
                raise FormatError(f"zstd frame content size {size} unacceptable")
            out = _dctx().decompress(stored, max_output_size=max_size)
        except zstandard.ZstdError as e:
            raise FormatError(f"zstd frame does not decode: {e}") from None
        return out
    raise FormatError(f"unknown record encoding in flags {flags:#x}")


class Record(namedtuple("Record", "offset end flags payload_offset payload_length")):
    """A complete, CRC-checked record found by a scan: `offset` (of the record
    in the file), `end` (just past its CRC), `flags`, `payload_offset` (in the
    file), `payload_length`."""

    __slots__ = ()


class Damage(namedtuple("Damage", "offset end reason")):
    """A bad region `[offset, end)` followed by a good record (or by the
    committed end), and why."""

    __slots__ = ()


class Residue(namedtuple("Residue", "offset end reason")):
    """An incomplete or invalid tail `[offset, end)`: crash residue, not damage."""

    __slots__ = ()


def parse_record_at(buf, pos: int, end: int) -> Record | str:
    """Parse and CRC-check the record at `pos`; return it or a reason string."""
    try:
        flags, p = decode_varint(buf, pos)
        if flags not in VALID_FLAGS:
            return f"bad record flags {flags:#x}"
        n, p = decode_varint(buf, p)
    except FormatError as e:
        return f"bad record header: {e}"
    if n == 0 or n > MAX_PAYLOAD:
        return f"bad record length {n}"
    if p + n + CRC_SIZE > end:
        return f"record of {n} octets runs past the end of the file"
    crc = crc32(buf[p : p + n], crc32(buf[pos:p]))
    if crc != int.from_bytes(buf[p + n : p + n + CRC_SIZE], "big"):
        return "record CRC mismatch"
    return Record(pos, p + n + CRC_SIZE, flags, p, n)


def _plausible_at(buf, pos: int, end: int) -> bool:
    """A cheap pre-check before the CRC during resynchronisation."""
    b = buf[pos]
    if b not in (0, 1):
        return False
    try:
        n, p = decode_varint(buf, pos + 1)
    except FormatError:
        return False
    if n == 0 or n > MAX_PAYLOAD or p + n + CRC_SIZE > end:
        return False
    if b == ENC_ZSTD:
        return buf[p : p + 4] == b"\x28\xb5\x2f\xfd"
    q = p
    stop = p + n
    try:
        while q < stop:
            k, q = decode_varint(buf, q)
            q += k
    except FormatError:
        return False
    return q == stop


# A record starts with flags 0 or 1 (blocks, plain or zstd) and a length that is
# never 0, so its second octet is not 0: runs of zeros (what a crash often leaves
# in a file) hold no candidate at all.  The lookahead keeps candidates overlapping.
_CANDIDATE = re.compile(rb"[\x00\x01](?=[^\x00])")


def _resync(buf, pos: int, end: int) -> Record | None:
    """The first good blocks record after `pos`, or None."""
    for m in _CANDIDATE.finditer(buf, pos + 1, end):
        q = m.start()
        if _plausible_at(buf, q, end):
            rec = parse_record_at(buf, q, end)
            if isinstance(rec, Record):
                return rec
    return None


def map_file(fd: int, length: int | None = None):
    """A read-only map of the first `length` octets of `fd` (an empty bytes if 0)."""
    if length is None:
        length = os.fstat(fd).st_size
    if length == 0:
        return b""
    return mmap.mmap(fd, length, access=mmap.ACCESS_READ)


def read_header(buf) -> tuple[dict, int]:
    """Check MAGIC and decode the header record; return `(meta, offset_after)`."""
    if len(buf) < len(MAGIC) or bytes(buf[: len(MAGIC)]) != MAGIC:
        head = bytes(buf[: len(MAGIC)])
        if head[:3] == MAGIC[:3]:
            raise FormatError(f"unsupported data file format version {head[3:4].hex()}")
        raise FormatError("not a vtstore data file (bad magic)")
    rec = parse_record_at(buf, len(MAGIC), len(buf))
    if not isinstance(rec, Record):
        raise FormatError(f"bad data file header: {rec}")
    if rec.flags != TYPE_HEADER | ENC_PLAIN:
        raise FormatError("data file does not begin with a header record")
    try:
        meta = json.loads(bytes(buf[rec.payload_offset : rec.payload_offset + rec.payload_length]))
    except ValueError as e:
        raise FormatError(f"bad data file header JSON: {e}") from None
    except RecursionError:  # "[[[[..." deeper than the interpreter's stack
        raise FormatError("bad data file header JSON: nested too deeply") from None
    if not isinstance(meta, dict) or "hashclass" not in meta:
        raise FormatError("data file header lacks the hash class")
    # the readers use these as text (a hash class name, a uuid to compare): check
    # the types here, at the boundary, not where a number would raise TypeError
    if not isinstance(meta["hashclass"], str) or not meta["hashclass"]:
        raise FormatError(f"data file header: bad hash class {meta['hashclass']!r:.40}")
    if not isinstance(meta.get("uuid", ""), str):
        raise FormatError(f"data file header: bad uuid {meta['uuid']!r:.40}")
    return meta, rec.end


def scan_records(
    buf, start: int, end: int | None = None, committed: int = 0
) -> Iterator[Record | Damage | Residue]:
    """Walk the records of `buf[start:end]`, yielding each good `Record`, each
    `Damage` and at most one final `Residue`.

    A bad region is damage when a good record follows it or when it begins
    before `committed` (the offset up to which the index says the file was
    flushed); otherwise it is crash residue.
    """
    if end is None:
        end = len(buf)
    pos = start
    while pos < end:
        rec = parse_record_at(buf, pos, end)
        if isinstance(rec, Record):
            if rec.flags & TYPE_MASK == TYPE_HEADER:
                yield Damage(pos, rec.end, "header record after the start of the file")
            else:
                yield rec
            pos = rec.end
            continue
        reason = rec
        nxt = _resync(buf, pos, end)
        if nxt is None:
            if pos < committed:
                yield Damage(pos, end, reason + " (in flushed data)")
            else:
                yield Residue(pos, end, reason)
            return
        yield Damage(pos, nxt.offset, reason)
        pos = nxt.offset
