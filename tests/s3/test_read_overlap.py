"""A restore's read pattern over the pack layout fetches each octet of a pack
about once: batches of leaves in order (`get_many`), with single gets of tree
blocks lying ahead in a window a prefetch is already fetching.  A single get
inside a window in flight waits for it instead of fetching its own window
again (that re-fetched 14% of a 1 GiB restore: PERFORMANCE.md)."""

from __future__ import annotations

import threading
import time

from vtstore.stores.backends.localdir import LocalDirBackend
from vtstore.stores.backends.packs import PackStore

from .test_get_many import blocks, fill


class SlowCountingBackend(LocalDirBackend):
    """Records the octets of every ranged read; each takes a little while, so
    that a prefetch is still in flight when the next read comes."""

    def __init__(self, root, delay: float = 0.03):
        super().__init__(root)
        self.delay = delay
        self.lock = threading.Lock()
        self.spans: list[tuple[str, int, int]] = []

    def get_range(self, name, start, end):
        with self.lock:
            self.spans.append((name, start, end))
        time.sleep(self.delay)
        return super().get_range(name, start, end)

    def fetched(self) -> int:
        return sum(e - s for _, s, e in self.spans)


def pack_bytes(back) -> int:
    return sum(o.size for o in back.list("data/"))


def restore_pattern(s, hs, data, batch: int = 40, ahead: int = 25) -> None:
    """Batches of blocks in order; after each, a single get of a block
    `ahead` blocks past the batch (a directory or indirect block written
    after the leaves it names)."""
    for i in range(0, len(hs), batch):
        assert s.get_many(hs[i : i + batch]) == data[i : i + batch]
        j = i + batch + ahead
        if j < len(hs):
            assert s[hs[j]] == data[j]


def test_single_get_inside_a_prefetch_in_flight_waits_for_it(tmp_path):
    data = blocks(1500, seed=11)  # about 10 MiB, one pack
    hs = fill(tmp_path, data, pack_size=64 << 20, compress=False)
    back = SlowCountingBackend(tmp_path / "o")
    with PackStore(back, tmp_path / "c2", readahead=1 << 20, read_cache=8 << 20) as s:
        restore_pattern(s, hs, data)
    total = pack_bytes(back)
    assert back.fetched() <= total * 1.02, (back.fetched(), total, len(back.spans))


def test_single_gets_in_order_fetch_each_octet_once(tmp_path):
    data = blocks(800, seed=12)
    hs = fill(tmp_path, data, pack_size=64 << 20, compress=False)
    back = SlowCountingBackend(tmp_path / "o", delay=0.01)
    with PackStore(back, tmp_path / "c2", readahead=1 << 20, read_cache=8 << 20) as s:
        for h, d in zip(hs, data, strict=True):
            assert s[h] == d
    assert back.fetched() <= pack_bytes(back) * 1.02, (back.fetched(), len(back.spans))


def test_kept_tails_stay_bounded_and_reads_stay_right(tmp_path, monkeypatch):
    """Random reads through small windows leave many cut records behind: the
    ones kept stay within their bounds, and every block read is its own."""
    import random

    from vtstore.stores.backends import packs

    monkeypatch.setattr(packs, "MAX_TAILS", 4)
    monkeypatch.setattr(packs, "MAX_TAIL_BYTES", 300_000)
    data = blocks(700, seed=13)
    hs = fill(tmp_path, data, pack_size=2 << 20, compress=False)
    back = SlowCountingBackend(tmp_path / "o", delay=0.0)
    with PackStore(back, tmp_path / "c2", readahead=200_000, read_cache=1 << 20) as s:
        order = list(range(len(hs)))
        random.Random(4).shuffle(order)
        for n, i in enumerate(order):
            assert s[hs[i]] == data[i]
            if n % 50 == 0:
                assert s.get_many(hs[i : i + 30]) == data[i : i + 30]
            with s._tlock:
                kept = sum(map(len, s._tails.values()))
                assert s._tail_bytes == kept <= 300_000 and len(s._tails) <= 4
        assert s._tails  # some were kept
