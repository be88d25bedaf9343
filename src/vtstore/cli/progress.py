"""Progress bars for tree commands (tqdm on stderr, only on a terminal, never with -q)."""

from __future__ import annotations

import threading
import time

from vtstore.cli.common import show_progress


class TreeProgress:
    """Bytes, files and rate of a pack/unpack/export, as a tqdm bar when shown."""

    def __init__(self, args, desc: str, total: int | None = None):
        self.bar = None
        self._lock = threading.Lock()
        self._last = 0
        self.started = time.monotonic()
        if show_progress(args):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                dynamic_ncols=True,
            )

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
