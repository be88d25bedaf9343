"""Progress bars for tree commands (tqdm on stderr, only on a terminal, never with -q)."""

from __future__ import annotations

import os
import stat as statmod
import threading
import time

from vtstore.cli.common import progress_bar
from vtstore.errors import VTError


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
        self._stop = threading.Event()
        self._scanner: threading.Thread | None = None
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

    def set_total(self, total: int) -> None:
        """The bytes the work will come to, once known: the bar shows an ETA."""
        if self.bar is None:
            return
        with self._lock:
            self.bar.total = total
            self.bar.refresh()

    def scan_tree(self, root: str, filters=None, one_filesystem: bool = False) -> None:
        """Measure the tree at `root` in a background thread (only when a bar is
        shown), then `set_total`: the file bytes a pack will go through, with
        the same filters.  The thread stops with the progress."""
        if self.bar is None:
            return
        self._scanner = threading.Thread(
            target=self._scan_quietly,
            args=(root, filters, one_filesystem),
            daemon=True,
            name="vt-scan",
        )
        self._scanner.start()

    def _scan_quietly(self, root: str, flt, one_fs: bool) -> None:
        try:
            self._scan(root, flt, one_fs)
        except Exception as e:  # only the bar's total is lost; the pack says the rest
            import logging

            logging.getLogger(__name__).debug("scanning %s for the progress total: %s", root, e)

    def _scan(self, root: str, flt, one_fs: bool) -> None:
        total = 0
        seen: set = set()
        try:
            dev = os.lstat(root).st_dev
        except OSError:
            return
        stack: list = [(root, "", None)]
        while stack:
            if self._stop.is_set():
                return
            path, rel, scope = stack.pop()
            try:
                with os.scandir(path) as it:
                    entries = list(it)
                if flt is not None:
                    scope = flt.enter(scope, rel, {e.name for e in entries}, path)
            except (OSError, VTError):
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                sub = f"{rel}/{e.name}" if rel else e.name
                if flt is not None and flt.leaves_out(scope, sub, e.name, os.fsencode(e.path), st):
                    continue
                mode = st.st_mode
                if statmod.S_ISDIR(mode):
                    if not one_fs or st.st_dev == dev:
                        stack.append((e.path, sub, scope))
                elif statmod.S_ISREG(mode):
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        self.set_total(total)

    def close(self) -> None:
        """Stop the scan, if any, and remove the bar."""
        self._stop.set()
        if self._scanner is not None:
            self._scanner.join()
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
