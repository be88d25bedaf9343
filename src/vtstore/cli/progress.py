"""Progress bars for tree commands (tqdm on stderr, only on a terminal, never with -q)."""

from __future__ import annotations

import threading
import time

from vtstore.cli.common import progress_bar


class TreeProgress:
    """Bytes, files and rate of a pack/unpack/export, as a tqdm bar when shown."""

    def __init__(self, args, desc: str, total: int | None = None):
        self._lock = threading.Lock()
        self._last = 0
        self.started = time.monotonic()
        bar = progress_bar(args, total=total, desc=desc)
        self.bar = None if bar.disable else bar

    def update(self, nbytes_total: int, files: int, extra: str = "") -> None:
        """Report the running totals."""
        if self.bar is None:
            return
        with self._lock:
            delta = nbytes_total - self._last
            self._last = nbytes_total
            self.bar.update(delta)
            self.bar.set_postfix_str(f"{files} files{extra}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
