"""ProgressStore: a pass-through store that counts what goes through it.

Counts blocks and octets added (split into new and already present, so the dedup
ratio is known) and fetched, the requests in flight, and rates both since the
start and over the last few seconds.  To tell new from present it asks the
inner store `contains_many` before adding and adds only the new blocks, which
costs a lookup but saves sending data the store already has.

`status_line()` renders `{add_bytes}:{add_count} {get_bytes} {outstanding}`
(octet counts in human units) or any format using the fields of `snapshot()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from vtstore.hashes import HashCode
from vtstore.stores.base import Store

DEFAULT_STATUS = "{add_bytes}:{add_count} {get_bytes} {outstanding}"
_RATE_WINDOW = 5.0


def human_size(n: float) -> str:
    """`1536` -> `1.5KiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}PiB"  # pragma: no cover


class ProgressStore(Store):
    """Wraps `inner`, counting; closes it on close when `owns`."""

    def __init__(self, inner: Store, *, name: str | None = None, owns: bool = True):
        super().__init__(
            name=name or f"progress({inner.name})",
            hashclass=inner.hashclass,
            readonly=inner.readonly,
        )
        self.inner = inner
        self.owns = owns
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.add_count = 0
        self.add_bytes = 0
        self.add_new_count = 0
        self.add_new_bytes = 0
        self.get_count = 0
        self.get_bytes = 0
        self.get_missing = 0
        self.outstanding = 0
        self._samples: deque[tuple[float, int, int]] = deque()

    @contextmanager
    def _request(self):
        with self._lock:
            self.outstanding += 1
        try:
            yield
        finally:
            with self._lock:
                self.outstanding -= 1

    def _sample(self, now: float) -> None:
        s = self._samples
        if not s or now - s[-1][0] >= 0.2:
            s.append((now, self.add_bytes, self.get_bytes))
            while len(s) > 2 and now - s[1][0] > _RATE_WINDOW:
                s.popleft()

    @property
    def chunker_params(self):
        """The inner store's chunker sizes, if it records them."""
        return getattr(self.inner, "chunker_params", None)

    @property
    def chunk_params(self):
        """The inner store's chunking parameters."""
        return self.inner.chunk_params

    @property
    def add_copies(self) -> bool:
        """Whether the inner store copies what it is given (see `Store`)."""
        return getattr(self.inner, "add_copies", False)

    @property
    def keeps_views(self) -> bool:
        """Whether the inner store keeps views of immutable buffers."""
        return getattr(self.inner, "keeps_views", False)

    # -- the store -----------------------------------------------------------

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Add the blocks the inner store lacks; count all of them."""
        return self._add(datas, self.inner.add_many_reporting)

    def add_tree_many(self, datas: Sequence) -> list[HashCode]:
        """Tree blocks to the inner store's tree frames; counted like any add."""
        return self._add(datas, self.inner.add_tree_many_reporting)

    def _add(self, datas: Sequence, add_reporting) -> list[HashCode]:
        self._check_writable()
        with self._request():
            hs, fresh = add_reporting(datas)
        new = [d for d, f in zip(datas, fresh, strict=True) if f]
        with self._lock:
            self.add_count += len(datas)
            self.add_bytes += sum(len(d) for d in datas)
            self.add_new_count += len(new)
            self.add_new_bytes += sum(len(d) for d in new)
            self._sample(time.monotonic())
        return hs

    def _get(self, h: HashCode) -> bytes | None:
        with self._request():
            data = self.inner.get(h)
        with self._lock:
            self.get_count += 1
            if data is None:
                self.get_missing += 1
            else:
                self.get_bytes += len(data)
            self._sample(time.monotonic())
        return data

    def _contains(self, h: HashCode) -> bool:
        with self._request():
            return h in self.inner

    def contains_many(self, hashcodes) -> list[bool]:
        """The inner store's batch membership."""
        self._check_open()
        with self._request():
            return self.inner.contains_many(hashcodes)

    def __len__(self) -> int:
        return len(self.inner)

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        return self.inner.hashcodes(start=start)

    def flush(self) -> None:
        """Flush the inner store."""
        if not self.closed and not self.inner.readonly:
            with self._request():
                self.inner.flush()

    def _close(self) -> None:
        if self.owns:
            self.inner.close()

    @property
    def exports(self) -> dict:
        """The inner store's exports."""
        return self.inner.exports

    # -- reporting ------------------------------------------------------------

    @property
    def dedup_ratio(self) -> float:
        """Octets added over octets that were new (1.0 when nothing repeated)."""
        return self.add_bytes / self.add_new_bytes if self.add_new_bytes else 1.0

    def rates(self) -> dict[str, float]:
        """Octets per second added and fetched: overall and over the last seconds."""
        now = time.monotonic()
        with self._lock:
            elapsed = max(now - self.started, 1e-9)
            out = {"add_rate": self.add_bytes / elapsed, "get_rate": self.get_bytes / elapsed}
            s = self._samples
            if len(s) >= 2 and s[-1][0] > s[0][0]:
                dt = s[-1][0] - s[0][0]
                out["add_rate_recent"] = (s[-1][1] - s[0][1]) / dt
                out["get_rate_recent"] = (s[-1][2] - s[0][2]) / dt
            else:
                out["add_rate_recent"] = out["add_rate"]
                out["get_rate_recent"] = out["get_rate"]
        return out

    def snapshot(self) -> dict:
        """Every counter and rate, raw numbers."""
        with self._lock:
            d = {
                "add_count": self.add_count,
                "add_bytes": self.add_bytes,
                "add_new_count": self.add_new_count,
                "add_new_bytes": self.add_new_bytes,
                "add_dup_count": self.add_count - self.add_new_count,
                "add_dup_bytes": self.add_bytes - self.add_new_bytes,
                "get_count": self.get_count,
                "get_bytes": self.get_bytes,
                "get_missing": self.get_missing,
                "outstanding": self.outstanding,
                "elapsed": time.monotonic() - self.started,
            }
        d["dedup_ratio"] = self.dedup_ratio
        d.update(self.rates())
        return d

    def status_line(self, fmt: str = DEFAULT_STATUS) -> str:
        """`fmt` filled from `snapshot()`, octet counts and rates in human units."""
        d = self.snapshot()
        for k in list(d):
            if k.endswith("_bytes"):
                d[k] = human_size(d[k])
            elif "_rate" in k:
                d[k] = human_size(d[k]) + "/s"
        d["dedup_ratio"] = f"{d['dedup_ratio']:.2f}"
        d["elapsed"] = f"{d['elapsed']:.1f}s"
        return fmt.format(**d)

    def info(self) -> dict:
        """The inner store's description plus the counters."""
        from vtstore.stores.spec import store_info

        d = dict(store_info(self.inner))
        d["progress"] = self.snapshot()
        return d
