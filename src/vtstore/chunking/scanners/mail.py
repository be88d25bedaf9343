"""Mail: mbox message starts and the header/body boundary of each message.

An mbox message starts with a "From " line at the start of the file or after a
blank line; its body starts after the first blank line.  Mail clients rewrite
headers (Status:, X-Keywords:) and insert or delete whole messages, so both
boundaries keep the untouched parts' blocks.  `EmailScanner` is the same for a
single .eml message (no "From " lines).  LF and CRLF line ends both work.
"""

from __future__ import annotations

from vtstore.chunking._cdc import mbox_scan
from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams
from vtstore.chunking.scanners.base import Scanner

__all__ = ["MboxScanner", "EmailScanner"]

_TAIL = 8  # bytes kept from the previous buffer: enough for b"\r\n\r\nFrom"


class MboxScanner(Scanner):
    """Message starts ("From " after a blank line) and body starts."""

    name = "mbox"
    split_messages = True

    def __init__(self, params: ChunkParams = DEFAULT_PARAMS):
        super().__init__(params)
        self._done = False
        self._tail = b""
        self._base = 0  # absolute offset of self._tail[0]
        self._in_header = True  # the stream starts with a message's header
        self._scan_from = 0  # offset (absolute) where the next search starts
        self._last = 0

    def feed(self, buf) -> list[int]:
        if self._done:
            return []
        data = self._tail + buf  # one copy: the search wants the tail joined
        base = self._base
        # the search is native (no Python step per message: a format-patch
        # mbox has a message per ~650 bytes); it stops before a pattern that
        # the end of the buffer may cut, which the kept tail then finds
        i = max(0, self._scan_from - base)
        out, self._in_header, i, self._done = mbox_scan(
            data, i, self._in_header, self.split_messages, base
        )
        while out and out[0] <= self._last:  # found again in the kept tail
            del out[0]
        if out:
            self._last = out[-1]
        n = len(data)
        keep = min(n, _TAIL)
        self._scan_from = base + max(i, n - keep)
        self._tail = data[n - keep :]
        self._base = base + n - keep
        return out


class EmailScanner(MboxScanner):
    """A single message (.eml): the header/body boundary only."""

    name = "email"
    split_messages = False
