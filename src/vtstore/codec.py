"""Binary encoding primitives: varints, length-prefixed bytes, a zero-copy reader.

Varints are big-endian base-128: each octet carries 7 bits, most significant group
first, and the high bit is set on every octet except the last (0 -> 00, 127 -> 7f,
128 -> 81 00, 16384 -> 81 80 00).  The encoding is canonical: a leading 0x80 octet
(a redundant zero group) is rejected, so every value has exactly one encoding.
"""

from __future__ import annotations

from vtstore.errors import FormatError

# A varint longer than this (70 bits) is refused rather than decoded: nothing we
# encode needs more, and it bounds the work a hostile input can cause.
MAX_VARINT_OCTETS = 10


def _encode_varint_slow(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint must be non-negative, got {n}")
    out = bytearray((n & 0x7F,))
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.reverse()
    return bytes(out)


# Encodings of every value below 2**14 (one and two octets): the tree and block
# encoders write tens of small varints per file, and a tuple lookup is several
# times cheaper than the loop.  Built at the first encoding, not at import
# (2-3 ms that `vt cat` or `vt ls`, which only decode, need not pay).
_SMALL: tuple[bytes, ...] = ()


def _small_table() -> tuple[bytes, ...]:
    global _SMALL
    low = [bytes((i,)) for i in range(0x80)]
    _SMALL = tuple(
        low + [h + lo for h in (bytes((0x80 | i,)) for i in range(1, 0x80)) for lo in low]
    )
    return _SMALL


def encode_varint(n: int) -> bytes:
    """Return the big-endian base-128 encoding of the non-negative integer `n`."""
    if 0 <= n < 0x4000:
        try:
            return _SMALL[n]
        except IndexError:  # the first small value: the table is not built yet
            return _small_table()[n]
    return _encode_varint_slow(n)


def decode_varint(buf, offset: int = 0, end: int | None = None) -> tuple[int, int]:
    """Decode a varint from `buf[offset:end]`; return `(value, offset_after)`.

    Raises `FormatError` on truncated, non-canonical or over-long input.
    """
    n = 0
    if end is None:
        end = len(buf)
    pos = offset
    if pos >= end:
        raise FormatError(f"truncated varint at offset {offset}")
    b = buf[pos]
    if b == 0x80:
        raise FormatError(f"non-canonical varint (leading 0x80) at offset {offset}")
    while True:
        pos += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, pos
        if pos - offset >= MAX_VARINT_OCTETS:
            raise FormatError(f"varint longer than {MAX_VARINT_OCTETS} octets at offset {offset}")
        if pos >= end:
            raise FormatError(f"truncated varint at offset {offset}")
        b = buf[pos]


def encode_bytes(data) -> bytes:
    """Return `varint(len(data)) + data`."""
    return encode_varint(len(data)) + bytes(data)


class Reader:
    """A zero-copy cursor over a buffer.

    Slices come back as `memoryview`s of the original buffer, so decoding a large
    indirect block or directory copies nothing until the caller asks for bytes.
    Every read checks bounds and raises `FormatError` naming the offset.
    """

    __slots__ = ("view", "pos", "end")

    def __init__(self, data, offset: int = 0, end: int | None = None):
        self.view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        if self.view.format != "B" or self.view.ndim != 1:
            self.view = self.view.cast("B")
        self.pos = offset
        self.end = len(self.view) if end is None else end
        if not 0 <= offset <= self.end <= len(self.view):
            raise FormatError(f"bad reader bounds {offset}..{end} over {len(self.view)} octets")

    def at_end(self) -> bool:
        """True when every octet has been consumed."""
        return self.pos >= self.end

    @property
    def remaining(self) -> int:
        """The number of octets not yet read."""
        return self.end - self.pos

    def varint(self) -> int:
        """Read one varint."""
        pos = self.pos
        if pos >= self.end:
            raise FormatError(f"truncated varint at offset {pos}")
        b = self.view[pos]
        if b < 0x80:  # most varints are one octet
            self.pos = pos + 1
            return b
        n, self.pos = decode_varint(self.view, pos, self.end)
        return n

    def take(self, length: int) -> memoryview:
        """Read exactly `length` octets as a memoryview."""
        if length < 0 or self.pos + length > self.end:
            raise FormatError(
                f"truncated data at offset {self.pos}: need {length} octets,"
                f" have {self.end - self.pos}"
            )
        mv = self.view[self.pos : self.pos + length]
        self.pos += length
        return mv

    def byte(self) -> int:
        """Read a single octet."""
        if self.pos >= self.end:
            raise FormatError(f"truncated data at offset {self.pos}: need 1 octet")
        b = self.view[self.pos]
        self.pos += 1
        return b

    def lbytes(self) -> memoryview:
        """Read length-prefixed bytes: `varint(n)` then `n` octets."""
        start = self.pos
        n = self.varint()
        if n > self.end - self.pos:
            raise FormatError(
                f"length {n} at offset {start} runs past the end ({self.end - self.pos} left)"
            )
        return self.take(n)

    def rest(self) -> memoryview:
        """Read everything that is left."""
        return self.take(self.end - self.pos)
