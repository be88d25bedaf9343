"""Text and source code: lines that start a definition.

Proposes the start of a line that begins (after indentation) with a keyword
that starts a definition in common languages (`def `, `class `, `func `,
`fn `, `package `, `function `, `struct `, `impl `, ...), or with a
decorator, at most one per `avg_size / 2` bytes: an edit inside one function then
changes only the blocks of that function and the cuts snap back to the next
definition.
"""

from __future__ import annotations

import re

from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams
from vtstore.chunking.scanners.base import Scanner

__all__ = ["TextScanner", "KEYWORDS"]

KEYWORDS = (
    "def",
    "async def",
    "class",
    "func",
    "fn",
    "pub fn",
    "pub struct",
    "pub enum",
    "pub trait",
    "package",
    "function",
    "export function",
    "export class",
    "export default",
    "struct",
    "impl",
    "trait",
    "enum",
    "interface",
    "module",
    "namespace",
    "sub",
    "proc",
    "public",
    "private",
    "protected",
    "static",
    "type",
    "var",
    "const",
    "let",
    "macro",
    "template",
)
_PATTERN = re.compile(
    rb"\n(?=[ \t]*(?:@|(?:" + b"|".join(re.escape(k.encode()) for k in KEYWORDS) + rb")[ \t]))"
)
_TAIL = 64  # longest indentation + keyword looked at across a buffer end


class TextScanner(Scanner):
    """Definition-line starts in text and source code."""

    name = "text"

    def __init__(self, params: ChunkParams = DEFAULT_PARAMS):
        super().__init__(params)
        self.spacing = params.avg_size // 2
        self._tail = b""
        self._base = 0  # absolute offset of _tail[0]
        # smallest offset the next proposal may have: not within min_size of the
        # start, so a small file is not cut into slivers at its first definitions
        self._next = params.min_size
        self._last = 0  # the last proposal

    def feed(self, buf) -> list[int]:
        # the last _TAIL bytes are scanned again with the next buffer, so a
        # keyword cut by a buffer end is still seen; _last filters repeats
        data = self._tail + bytes(buf)
        base = self._base
        out = []
        # a proposal must wait `spacing` bytes after the previous one, so skip
        # the regex search over that stretch instead of filtering its matches
        search = _PATTERN.search
        pos = max(0, self._next - base - 1)
        while True:
            m = search(data, pos)
            if m is None:
                break
            off = base + m.start() + 1
            if off <= self._last:
                pos = m.start() + 1
                continue
            out.append(off)
            self._last = off
            self._next = off + self.spacing
            pos = max(m.start() + 1, self._next - base - 1)
        keep = min(len(data), _TAIL)
        self._tail = data[len(data) - keep :]
        self._base = base + len(data) - keep
        return out
