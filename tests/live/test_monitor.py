"""The tree monitor on real directories, both backends: creates, writes,
renames, deletes, chmods, new subdirectories, a file written slowly, and an
inotify queue that really overflows."""

import os
import threading
import time

import pytest

from vtstore.live.monitor import InotifyMonitor, PollMonitor, open_monitor, scan

SETTLE = 0.3


@pytest.fixture(params=["inotify", "poll"])
def backend(request):
    return request.param


def mon_of(root, backend, settle=SETTLE):
    return open_monitor(str(root), backend, settle=settle, interval=0.2)


def collect(mon, want, timeout=10.0):
    """Changes until `want(seen)` holds for {rpath: (old, new)} (the latest per path)."""
    seen: dict = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for rp, old, new in mon.changes(0.2):
            first = seen.get(rp, (old, None))[0]
            seen[rp] = (first, new)
        if want(seen):
            return seen
    raise AssertionError(f"timed out; saw {sorted(seen)}")


def test_backend_chosen(tmp_path, backend):
    with mon_of(tmp_path, backend) as mon:
        assert isinstance(mon, InotifyMonitor if backend == "inotify" else PollMonitor)
        assert mon.changes(0.5) == []  # nothing happens, nothing reported


def test_create_write_chmod_delete(tmp_path, backend):
    (tmp_path / "old").write_bytes(b"o")
    (tmp_path / "keep").write_bytes(b"k")
    with mon_of(tmp_path, backend) as mon:
        (tmp_path / "new").write_bytes(b"hello")
        (tmp_path / "keep").write_bytes(b"changed content")
        os.chmod(tmp_path / "old", 0o600)
        seen = collect(mon, lambda s: {"new", "keep", "old"} <= set(s))
        assert seen["new"][0] is None and seen["new"][1].size == 5
        assert seen["keep"][1].size == len(b"changed content")
        assert seen["old"][1].mode & 0o777 == 0o600 and seen["old"][0].mode & 0o777 != 0o600
        os.unlink(tmp_path / "old")
        seen = collect(mon, lambda s: "old" in s)
        assert seen["old"][1] is None and seen["old"][0] is not None
        assert "old" not in mon.states and mon.states["new"].size == 5


def test_rename_file_and_directory(tmp_path, backend):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_bytes(b"f")
    (tmp_path / "a").write_bytes(b"a")
    with mon_of(tmp_path, backend) as mon:
        ino = os.lstat(tmp_path / "a").st_ino
        os.rename(tmp_path / "a", tmp_path / "b")
        os.rename(tmp_path / "d", tmp_path / "D")
        seen = collect(mon, lambda s: {"a", "b", "d/e/f", "D/e/f"} <= set(s))
        assert seen["a"][1] is None and seen["b"][0] is None and seen["b"][1].ino == ino
        assert seen["d/e/f"][1] is None and seen["D/e/f"][0] is None
        # the moved directory is still followed under its new name
        (tmp_path / "D" / "e" / "g").write_bytes(b"g")
        seen = collect(mon, lambda s: "D/e/g" in s)
        assert set(seen) == {"D/e/g"}


def test_new_subdirectories_are_followed(tmp_path, backend):
    with mon_of(tmp_path, backend) as mon:
        deep = tmp_path / "x" / "y" / "z"
        deep.mkdir(parents=True)
        (deep / "f").write_bytes(b"1")
        seen = collect(mon, lambda s: "x/y/z/f" in s)
        assert {"x", "x/y", "x/y/z"} <= set(seen)
        (deep / "f").write_bytes(b"22")
        (deep / "g").write_bytes(b"3")
        seen = collect(mon, lambda s: {"x/y/z/f", "x/y/z/g"} <= set(s))
        assert seen["x/y/z/f"][1].size == 2
        import shutil

        shutil.rmtree(tmp_path / "x")
        seen = collect(mon, lambda s: {"x", "x/y/z/g"} <= set(s))
        assert all(new is None for _, new in seen.values())
        assert mon.states.keys() == {""}


def test_file_being_written_is_taken_when_it_settles(tmp_path, backend):
    settle = 0.6
    with mon_of(tmp_path, backend, settle=settle) as mon:
        stop = threading.Event()

        def writer():
            with open(tmp_path / "slow", "wb") as f:
                for _ in range(15):  # 1.5 s of writes, 0.1 s apart
                    f.write(b"x" * 1000)
                    f.flush()
                    time.sleep(0.1)
            stop.set()

        t = threading.Thread(target=writer)
        t.start()
        try:
            got = []
            end = time.monotonic() + 10
            while time.monotonic() < end and not (stop.is_set() and got):
                got += mon.changes(0.2)
        finally:
            t.join()
        # one report, of the whole file, after the writes stopped
        assert [(rp, new.size) for rp, _, new in got] == [("slow", 15000)]


def test_nothing_reported_for_a_change_undone(tmp_path, backend):
    (tmp_path / "f").write_bytes(b"1")
    with mon_of(tmp_path, backend, settle=0.5) as mon:
        os.rename(tmp_path / "f", tmp_path / "g")
        os.rename(tmp_path / "g", tmp_path / "f")
        # the rename changes ctime only: reported as a change of f, never as g
        got = mon.changes(1.5) + mon.changes(0.5)
        assert "g" not in {rp for rp, _, _ in got}


def test_inotify_queue_overflow_is_recovered_by_a_rescan(tmp_path):
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    # each file written gives IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE: more than the
    # queue holds while the monitor is not reading (it reads in changes())
    n = limit // 2 + 500
    (tmp_path / "d").mkdir()  # watched from the start
    with open_monitor(str(tmp_path), "inotify", settle=SETTLE) as mon:
        for i in range(n):
            with open(tmp_path / "d" / f"f{i}", "wb") as f:
                f.write(b"x")
        (tmp_path / "d" / "sub").mkdir()
        (tmp_path / "d" / "sub" / "late").write_bytes(b"y")
        seen = collect(mon, lambda s: len(s) >= n + 2, timeout=60)
        assert mon.overflows >= 1
        assert len(seen) == n + 2 and all(old is None for old, _ in seen.values())
        assert mon.states == scan(str(tmp_path))
        # after the rescan the new directory is watched
        (tmp_path / "d" / "sub" / "later").write_bytes(b"z")
        assert set(collect(mon, lambda s: "d/sub/later" in s)) == {"d/sub/later"}


def test_wake_returns_at_once(tmp_path, backend):
    with mon_of(tmp_path, backend) as mon:
        threading.Timer(0.2, mon.wake).start()
        t0 = time.monotonic()
        assert mon.changes(5) == []
        assert time.monotonic() - t0 < 2


def test_not_a_directory(tmp_path, backend):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        mon_of(tmp_path / "f", backend)
