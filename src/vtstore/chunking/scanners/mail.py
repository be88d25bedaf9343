"""Mail: mbox message starts and the header/body boundary of each message.

An mbox message starts with a "From " line at the start of the file or after a
blank line; its body starts after the first blank line.  Mail clients rewrite
headers (Status:, X-Keywords:) and insert or delete whole messages, so both
boundaries keep the untouched parts' blocks.  `EmailScanner` is the same for a
single .eml message (no "From " lines).  LF and CRLF line ends both work.
"""

from __future__ import annotations

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

    def _propose(self, out: list, off: int) -> None:
        if off > self._last:
            out.append(off)
            self._last = off

    def feed(self, buf) -> list[int]:
        if self._done:
            return []
        data = self._tail + bytes(buf)
        base = self._base
        out: list[int] = []
        i = max(0, self._scan_from - base)
        n = len(data)
        # the next "\n\n" and "\r\n\r\n" at or after the last search start
        # (-1: none up to the end), searched again only once `i` has passed
        # them: a search per message to the end of the buffer for the pattern
        # a file never has (CRLF in an LF mbox) made the scan quadratic
        lf = crlf = None
        while True:
            if self._in_header:
                if lf is None or 0 <= lf < i:
                    lf = data.find(b"\n\n", i)
                if crlf is None or 0 <= crlf < i:
                    crlf = data.find(b"\r\n\r\n", i)
                if lf < 0 and crlf < 0:
                    break
                if crlf >= 0 and (lf < 0 or crlf < lf):
                    end = crlf + 4
                else:
                    end = lf + 2
                self._propose(out, base + end)
                self._in_header = False
                i = end
                if not self.split_messages:
                    self._done = True
                    return out
            else:
                j = data.find(b"\nFrom ", i)
                if j < 0:
                    break
                # a message start needs a blank line before it
                if j >= 1 and data[j - 1] == 0x0A:
                    start = j + 1
                elif j >= 3 and data[j - 3 : j] == b"\r\n\r":
                    start = j + 1
                else:
                    i = j + 1
                    continue
                self._propose(out, base + start)
                self._in_header = True
                i = start + 5
        keep = min(n, _TAIL)
        self._scan_from = base + max(i, n - keep)
        self._tail = data[n - keep :]
        self._base = base + n - keep
        return out


class EmailScanner(MboxScanner):
    """A single message (.eml): the header/body boundary only."""

    name = "email"
    split_messages = False
