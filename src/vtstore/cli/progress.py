"""Progress bars for tree commands (tqdm on stderr, only on a terminal, never with -q)."""

from __future__ import annotations

import threading
import time

from vtstore.cli.common import progress_bar


class TreeProgress:
    """Bytes, files and rate of a pack/unpack/export, as a tqdm bar when shown.

    Given the store blocks go to, `self.store` is that store wrapped in a
    `ProgressStore` while a bar is shown (so the bar can show the dedup ratio:
    the share of added bytes the store already had), else the store itself.
    """

    def __init__(self, args, desc: str, total: int | None = None, store=None):
        self._lock = threading.Lock()
        self._last = 0
        self.started = time.monotonic()
        bar = progress_bar(args, total=total, desc=desc)
        self.bar = None if bar.disable else bar
        self.store = store
        self._counting = None
        if self.bar is not None and store is not None:
            from vtstore.stores.progress import ProgressStore

            self.store = self._counting = ProgressStore(store, owns=False)

    def update(self, nbytes_total: int, files: int, extra: str = "") -> None:
        """Report the running totals."""
        if self.bar is None:
            return
        with self._lock:
            delta = nbytes_total - self._last
            self._last = nbytes_total
            self.bar.update(delta)
            c = self._counting
            if c is not None and c.add_bytes:
                extra += f", dedup {100 * (1 - c.add_new_bytes / c.add_bytes):.0f}%"
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
