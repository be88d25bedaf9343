"""Buffers for large bodies (the HTTP client's answers, `vt httpd`'s joined
block reads), used again once nothing refers to them."""

from __future__ import annotations

import sys
import threading


class Buffers:
    """Buffers for large answers, used again once nothing refers to them.

    Why: a fresh buffer of some MiB is new memory the kernel has to fault
    in and zero page by page, and a new `bytearray` is zeroed again: about
    a fifth of the HTTP client's CPU on a large file, measured; the server's
    answers to `b/get?joined&unchecked` are read into them too.  A buffer is free
    when no memoryview of it is left (its reference count says so: each
    view's managed buffer holds one reference); at most `most` are kept,
    in sizes rounded up to `STEP`."""

    STEP = 1 << 20

    def __init__(self, most: int = 32):
        self.most = most
        self._all: list = []
        self._lock = threading.Lock()

    def get(self, size: int) -> memoryview:
        """A writable memoryview of `size` octets (not zeroed)."""
        with self._lock:
            for buf in self._all:
                # 3: the list, `buf`, getrefcount's argument: no view alive
                if len(buf) >= size and sys.getrefcount(buf) == 3:
                    return memoryview(buf)[:size]
            buf = bytearray(-(-size // self.STEP) * self.STEP)
            if len(self._all) < self.most:
                self._all.append(buf)
            return memoryview(buf)[:size]

    def clear(self) -> None:
        with self._lock:
            self._all.clear()
