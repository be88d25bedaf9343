"""An object's age for gc's grace period: the older of its time on the
backend and when a gc first listed it (lifecycle/gc_objects.first_seen)."""

import os
import time

from vtstore.lifecycle.gc_objects import first_seen
from vtstore.stores.backends.base import ObjectInfo
from vtstore.stores.backends.localdir import LocalDirBackend


def test_backends_report_object_times(tmp_path):
    b = LocalDirBackend(tmp_path / "b")
    b.put("data/x", b"1")
    old = time.time() - 7200
    os.utime(tmp_path / "b" / "data" / "x", (old, old))
    (info,) = list(b.list("data/"))
    assert abs(info.mtime - old) < 1
    assert abs(b.stat("data/x").mtime - old) < 1


def test_an_old_object_counts_as_old_at_its_first_listing(tmp_path):
    b = LocalDirBackend(tmp_path / "b")
    now = 10_000.0
    infos = [ObjectInfo("old", 1, 100.0), ObjectInfo("new", 1, 9_990.0), ObjectInfo("untimed", 1)]
    seen = first_seen(b, infos, now, write=True)
    assert seen == {"old": 100.0, "new": 9_990.0, "untimed": now}
    # listed again later: an untimed object keeps its first sighting
    again = first_seen(b, [ObjectInfo("untimed", 1)], now + 500, write=False)
    assert again == {"untimed": now}
