"""The scanner protocol: offset-only plugins that propose block boundaries.

A scanner reads the stream it is fed and proposes *boundary offsets*: absolute
byte offsets where a block should start because the file format has a natural
unit there (an MP4 box, a mail message, a tar member).  It never sees or
changes what is stored: blockify always stores exactly the input bytes, cut at
the chunker's choice of hash cuts plus the accepted proposals.

Contract (checked by `GuardedScanner`, which disables a scanner that breaks it):

- `feed(buf) -> list[int]` is called with consecutive buffers of the stream;
  `finish() -> list[int]` once at the end;
- proposals are ints, strictly increasing over the whole stream;
- a boundary at offset `f` must be proposed by the time the scanner has been
  fed the bytes up to `f + LOOKAHEAD` (the chunker runs that far behind the
  scanners); proposing further ahead (e.g. a box end known from its header) is
  fine;
- memory stays bounded whatever the stream: keep what a parse needs, not the
  data.

Most binary formats are easiest to write as a sequential parser: subclass
`ParserScanner` and write `parse()` as a generator that does
`data = yield self.read(n)` / `yield self.skip(n)` and calls
`self.propose(offset)`; the driver feeds it across buffer boundaries.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Generator

from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams

__all__ = ["LOOKAHEAD", "MAX_READ", "Scanner", "ParserScanner", "GuardedScanner"]

log = logging.getLogger(__name__)

#: how far behind the scanner the chunker runs: every boundary at f must have
#: been proposed once the scanner has seen byte f + LOOKAHEAD
LOOKAHEAD = 4096

#: the largest single read a ParserScanner may ask for (an MP4 moov box)
MAX_READ = 64 << 20


class Scanner:
    """Base class of format scanners; see the module doc for the contract."""

    #: short name shown by `vt scan` and in logs
    name = "scanner"

    def __init__(self, params: ChunkParams = DEFAULT_PARAMS):
        self.params = params

    def feed(self, buf) -> list[int]:
        """Scan the next buffer of the stream; return new boundary proposals."""
        raise NotImplementedError

    def finish(self) -> list[int]:
        """The stream has ended; return any last proposals."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class _Request:
    __slots__ = ("n", "peek")

    def __init__(self, n: int, peek: bool = False):
        self.n = n
        self.peek = peek


class _Skip:
    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


#: after the end of the stream a parser may make this many more requests
#: (each answered with b"") before it is closed
_EOF_REQUESTS = 64


class ParserScanner(Scanner):
    """A scanner written as a sequential parser generator.

    `parse()` yields requests and gets their answers:

    - `data = yield self.read(n)`: the next `n` bytes (fewer only at the end of
      the stream), consumed;
    - `data = yield self.peek(n)`: the same bytes, not consumed;
    - `yield self.skip(n)`: pass over `n` bytes without looking at them.

    `self.pos` is the absolute offset of the next unconsumed byte, and
    `self.propose(offset)` proposes a boundary.  When `parse()` returns, the
    rest of the stream is ignored.  Memory is bounded by the largest read
    (`MAX_READ`).
    """

    def __init__(self, params: ChunkParams = DEFAULT_PARAMS):
        super().__init__(params)
        self.pos = 0
        self._out: list[int] = []
        self._held = bytearray()  # bytes at [pos, pos + len) taken in, not consumed
        self._want = None
        self._gen: Generator | None = self.parse()
        self._advance(None)

    # -- for parse() ---------------------------------------------------------

    def parse(self) -> Generator:  # pragma: no cover - abstract
        """The parser: a generator of read/peek/skip requests."""
        raise NotImplementedError
        yield

    @staticmethod
    def read(n: int) -> _Request:
        """Request: the next `n` bytes, consumed."""
        if not 0 <= n <= MAX_READ:
            raise ValueError(f"read of {n} bytes: must be 0..{MAX_READ}")
        return _Request(n)

    @staticmethod
    def peek(n: int) -> _Request:
        """Request: the next `n` bytes, left unconsumed."""
        if not 0 <= n <= MAX_READ:
            raise ValueError(f"peek of {n} bytes: must be 0..{MAX_READ}")
        return _Request(n, peek=True)

    @staticmethod
    def skip(n: int) -> _Skip:
        """Request: pass over the next `n` bytes."""
        if n < 0:
            raise ValueError(f"skip of {n} bytes")
        return _Skip(n)

    def propose(self, offset: int) -> None:
        """Propose a boundary at absolute `offset`."""
        self._out.append(offset)

    # -- driver --------------------------------------------------------------

    def _advance(self, value) -> None:
        try:
            want = self._gen.send(value)
        except StopIteration:
            self._gen = self._want = None
            return
        if type(want) is not _Request and type(want) is not _Skip:
            self._gen.close()
            self._gen = None
            raise TypeError(f"{type(self).__name__}.parse yielded {want!r}")
        self._want = want

    def _take(self, need: int, peek: bool) -> bytes:
        held = self._held
        data = bytes(held[:need])
        if not peek:
            del held[:need]
            self.pos += len(data)
        return data

    def feed(self, buf) -> list[int]:
        mv = memoryview(buf).cast("B")
        i, n = 0, len(mv)
        held = self._held
        while self._gen is not None:
            w = self._want
            if type(w) is _Skip:
                if held:
                    k = min(w.n, len(held))
                    del held[:k]
                    w.n -= k
                    self.pos += k
                k = min(w.n, n - i)
                i += k
                w.n -= k
                self.pos += k
                if w.n:
                    break
                self._advance(None)
                continue
            need = w.n
            if not held and n - i >= need:
                # served from the buffer; a peek leaves `i` where it is
                data = bytes(mv[i : i + need])
                if not w.peek:
                    i += need
                    self.pos += need
                self._advance(data)
                continue
            k = min(need - len(held), n - i)
            if k > 0:
                held += mv[i : i + k]
                i += k
            if len(held) < need:
                break
            self._advance(self._take(need, w.peek))
        out, self._out = self._out, []
        return out

    def finish(self) -> list[int]:
        for _ in range(_EOF_REQUESTS):
            if self._gen is None:
                break
            w = self._want
            if type(w) is _Skip:
                # the skip cannot complete; what is held after it is still
                # there to parse only if the skip ends inside it
                held = self._held
                k = min(w.n, len(held))
                del held[:k]
                self.pos += k
                w.n -= k
                self._advance(None)
            else:
                self._advance(self._take(w.n, w.peek))
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        out, self._out = self._out, []
        return out


class GuardedScanner:
    """Wraps a scanner so that a broken one cannot harm the output.

    A scanner that raises, or proposes something that is not an increasing
    offset at or after `floor` (what the chunker has already passed; unless
    it has `may_propose_late`), is logged once and switched off; the chunker
    carries on with the rolling hash alone.  Proposals beyond the end of the stream are reported at `finish`.
    """

    def __init__(self, scanner: Scanner, label: str = ""):
        self.scanner = scanner
        self.label = label
        self.name = getattr(scanner, "name", type(scanner).__name__)
        self.failed: str | None = None
        self.proposed = 0
        # a scanner that reads a whole structure before proposing inside it
        # (an MP4 moov longer than a buffer) says so: the proposals the chunker
        # has passed are dropped and counted, the scanner stays on
        self.late_ok = bool(getattr(scanner, "may_propose_late", False))
        self.late = 0
        self._last = -1

    def _fail(self, why: str) -> list[int]:
        self.failed = why
        where = f" on {self.label}" if self.label else ""
        log.warning("scanner %s%s disabled: %s", self.name, where, why)
        return []

    def _check(self, props, floor: int) -> list[int]:
        try:
            props = list(props)
        except Exception as e:  # noqa: BLE001 - any failure of the plugin
            return self._fail(f"bad proposals: {e!r}")
        if not props:
            return props
        # the common case, checked without a Python step per proposal (an mbox
        # gives one per ~300 bytes): all ints, increasing, after the last and
        # not behind the chunker
        if (
            props[0] > self._last
            and props[0] >= floor
            and set(map(type, props)) == {int}
            and all(map(operator.lt, props, itertools.islice(props, 1, None)))
        ):
            self._last = props[-1]
            self.proposed += len(props)
            return props
        good = []
        for p in props:
            if type(p) is not int:
                return self._fail(f"proposed {p!r}, not an int offset")
            if p <= self._last:
                return self._fail(f"proposed {p} after {self._last} (not increasing)")
            if p < floor:
                if self.late_ok:
                    self.late += 1
                    continue
                return self._fail(f"proposed {p}, behind the chunker at {floor}")
            self._last = p
            good.append(p)
        self.proposed += len(good)
        return good

    def feed(self, buf, floor: int) -> list[int]:
        """Feed `buf`; return the valid proposals (none once failed)."""
        if self.failed:
            return []
        try:
            props = self.scanner.feed(buf)
        except Exception as e:  # noqa: BLE001 - any failure of the plugin
            return self._fail(f"raised {e!r}")
        return self._check(props, floor)

    def finish(self, floor: int, end: int) -> list[int]:
        """End of stream at offset `end`; return the valid last proposals."""
        if self.failed:
            return []
        try:
            props = self.scanner.finish()
        except Exception as e:  # noqa: BLE001
            return self._fail(f"raised {e!r}")
        good = self._check(props, floor)
        if not self.failed and self._last > end:
            self._fail(f"proposed {self._last}, beyond the end at {end}")
        return [p for p in good if p <= end]
