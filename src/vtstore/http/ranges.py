"""HTTP byte ranges (RFC 9110 §14): parsing a `Range` header against a length.

Only `bytes=` ranges are understood; anything else is ignored (the whole
content is sent), as the RFC allows.  A range set that cannot be satisfied gives
416.  Many small or overlapping ranges are a known way to make a server do a lot
of work for a short request, so a request may name at most `MAX_RANGES` ranges
and overlapping or adjacent ones are merged (RFC 9110 §14.2 allows both).
"""

from __future__ import annotations

import re
import secrets

#: Most ranges one request may ask for (more: 416, rather than a huge answer).
MAX_RANGES = 64
#: Longest Range header looked at.
MAX_RANGE_HEADER = 4096
#: ASCII digits only (str.isdigit takes '¹' and other digits int() refuses)
_DIGITS = re.compile(r"[0-9]*")


class Unsatisfiable(Exception):
    """The Range header names no byte of the content (answer 416)."""


def parse_range(header: str | None, length: int) -> list[tuple[int, int]] | None:
    """`[(start, end_exclusive), ...]` for a `Range` header over `length` octets;
    None to send the whole content (no header, not `bytes=`, or a syntax error);
    `Unsatisfiable` if no range overlaps the content or there are too many."""
    if not header:
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise Unsatisfiable("Range header too long")
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        raise Unsatisfiable(f"more than {MAX_RANGES} ranges")
    out = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not _DIGITS.fullmatch(first) or not _DIGITS.fullmatch(last):
            return None  # a syntax error: ignore the header
        if len(first) > 20 or len(last) > 20:  # no 400-digit numbers to convert
            if first and len(first) > 20:
                continue  # starts past any content: unsatisfiable part
            last = str(1 << 64)
        if first == "":
            if last == "":
                return None
            n = int(last)
            if n == 0:
                continue
            out.append((max(0, length - n), length))
            continue
        start = int(first)
        end = length if last == "" else min(int(last) + 1, length)
        if last != "" and int(last) < start:
            return None
        if start >= length:
            continue
        out.append((start, end))
    if not out:
        raise Unsatisfiable("no range overlaps the content")
    out.sort()
    merged = [out[0]]
    for s, e in out[1:]:
        ps, pe = merged[-1]
        if s <= pe:
            merged[-1] = (ps, max(pe, e))
        else:
            merged.append((s, e))
    return merged


def boundary() -> str:
    """A fresh multipart boundary."""
    return "vt" + secrets.token_hex(12)


def part_header(bound: str, ctype: str, start: int, end: int, length: int) -> bytes:
    """The header of one part of a multipart/byteranges body."""
    return (
        f"\r\n--{bound}\r\nContent-Type: {ctype}\r\n"
        f"Content-Range: bytes {start}-{end - 1}/{length}\r\n\r\n"
    ).encode()


def multipart_length(bound: str, ctype: str, ranges, length: int) -> int:
    """The exact length of the multipart/byteranges body for `ranges`."""
    total = sum(len(part_header(bound, ctype, s, e, length)) + (e - s) for s, e in ranges)
    return total + len(closing(bound))


def closing(bound: str) -> bytes:
    """The end of a multipart body."""
    return f"\r\n--{bound}--\r\n".encode()
