"""ProgressStore: counters, dedup, rates, outstanding requests, the status line."""

from __future__ import annotations

import threading

from vtstore.stores.memory import MemoryStore
from vtstore.stores.progress import ProgressStore, human_size


class GatedStore(MemoryStore):
    """A memory store whose fetches wait for a gate: requests stay in flight."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def _get(self, h):
        self.entered.release()
        self.gate.wait(10)
        return super()._get(h)


def test_counts_and_dedup():
    p = ProgressStore(MemoryStore())
    p.add_many([b"a" * 100, b"b" * 100])
    p.add(b"a" * 100)
    p.add(b"c" * 1000)
    assert (p.add_count, p.add_bytes) == (4, 1300)
    assert (p.add_new_count, p.add_new_bytes) == (3, 1200)
    assert abs(p.dedup_ratio - 1300 / 1200) < 1e-9
    h = p.hashclass.from_data(b"c" * 1000)
    assert p[h] == b"c" * 1000
    assert p.get(p.hashclass.from_data(b"nope")) is None
    snap = p.snapshot()
    assert (snap["get_count"], snap["get_bytes"], snap["get_missing"]) == (2, 1000, 1)
    assert snap["add_rate"] > 0
    assert p.status_line() == "1.3KiB:4 1000B 0"
    assert p.status_line("{add_dup_count} {dedup_ratio}") == "1 1.08"
    p.close()


def test_outstanding_requests():
    inner = GatedStore()
    h = inner.add(b"x")
    p = ProgressStore(inner)
    ts = [threading.Thread(target=p.get, args=(h,)) for _ in range(3)]
    for t in ts:
        t.start()
    for _ in ts:
        assert inner.entered.acquire(timeout=10)
    assert p.outstanding == 3
    assert p.status_line().endswith(" 3")
    inner.gate.set()
    for t in ts:
        t.join()
    assert p.outstanding == 0
    p.close()


def test_human_size():
    assert human_size(0) == "0B"
    assert human_size(1023) == "1023B"
    assert human_size(1536) == "1.5KiB"
    assert human_size(5 * 1024**3) == "5.0GiB"
