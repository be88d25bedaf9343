"""Real processes: SIGKILL a writer at random points, several writers at once,
readers in other processes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vtstore.stores.datadir import DataDir

sys.path.insert(0, str(Path(__file__).parent))
from writer_proc import block  # noqa: E402

WRITER = str(Path(__file__).parent / "writer_proc.py")


class Writer:
    """A writer_proc.py child whose `F n` lines are collected as they come."""

    def __init__(self, env, path, run, count=10**6, every=25, small=False):
        argv = [sys.executable, WRITER, str(path), str(run), str(count), str(every)]
        if small:
            argv += ["16384", "262144"]
        self.p = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.flushed = 0
        self.ready = threading.Event()
        self.done = False
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.p.stdout:
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("F "):
                self.flushed = int(line.split()[1])
            elif line.startswith("DONE"):
                self.done = True
        self.ready.set()

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self._t.join()
        self.p.stderr.close()

    def wait(self, timeout=120):
        rc = self.p.wait(timeout)
        self._t.join()
        err = self.p.stderr.read()
        self.p.stderr.close()
        return rc, err


def check_flushed(path, flushed: dict[int, int]):
    with DataDir(path, readonly=True) as s:
        for run, n in flushed.items():
            for i in range(n):
                h = s.hashclass.from_data(block(run, i))
                assert s.get(h) == block(run, i), f"run {run}: flushed block {i} of {n} lost"


@pytest.mark.slow
@pytest.mark.parametrize("small", [False, True], ids=["default-files", "tiny-files"])
def test_sigkill_loses_nothing_flushed(tmp_path, vt_env, small):
    path = tmp_path / "dd"
    rnd = random.Random(7 if small else 8)
    flushed = {}
    kills = 10
    for run in range(kills):
        w = Writer(vt_env, path, run, every=rnd.choice((7, 25, 60)), small=small)
        assert w.ready.wait(30), "writer did not start"
        time.sleep(rnd.uniform(0.05, 0.9))
        w.kill()
        flushed[run] = w.flushed
        check_flushed(path, {run: w.flushed})
    assert sum(flushed.values()) > 0, "no writer got as far as a flush: kill later"
    check_flushed(path, flushed)
    with DataDir(path) as s:
        rep = s.fsck()
        assert rep.ok, rep.lines()
        # the next writer adopts a dead writer's file and carries on cleanly
        h = s.add(b"after the crashes")
        s.flush()
        assert s[h] == b"after the crashes"
        assert s.fsck().ok
        if small:
            assert s.info()["sealed_files"] > 0


def test_two_processes_add_at_once(tmp_path, vt_env):
    path = tmp_path / "dd"
    hold = tmp_path / "go"
    env = dict(vt_env, VT_TEST_HOLD=str(hold))
    ws = [Writer(env, path, run, count=3000, every=50) for run in (1, 2)]
    # both hold their own file (a first flush each) before either goes on
    deadline = time.monotonic() + 60
    while not all(w.flushed for w in ws) and time.monotonic() < deadline:
        time.sleep(0.01)
    hold.touch()
    for w in ws:
        rc, err = w.wait()
        assert rc == 0, err
        assert w.done
    with DataDir(path) as s:
        for run in (1, 2):
            for i in range(3000):
                assert s[s.hashclass.from_data(block(run, i))] == block(run, i)
        assert len(s) == 6000
        assert s.info()["data_files"] == 2  # one writer, one file
        assert s.fsck().ok


def test_same_blocks_from_two_processes(tmp_path, vt_env):
    path = tmp_path / "dd"
    ws = [Writer(vt_env, path, 3, count=400, every=40) for _ in range(2)]
    for w in ws:
        rc, err = w.wait()
        assert rc == 0, err
    with DataDir(path) as s:
        assert len(s) == 400
        assert all(s[s.hashclass.from_data(block(3, i))] == block(3, i) for i in range(400))
        assert s.fsck().ok


@pytest.mark.parametrize("exists_first", [False, True])
def test_reader_in_this_process_sees_another_writer(tmp_path, vt_env, exists_first):
    path = tmp_path / "dd"
    if exists_first:
        with DataDir(path) as s:
            s.add(b"seed block")
    reader = DataDir(path, readonly=True)  # opened before the writer starts
    try:
        h = reader.hashclass.from_data(block(9, 99))
        assert h not in reader
        w = Writer(vt_env, path, 9, count=100, every=100)
        rc, err = w.wait()
        assert rc == 0, err
        assert h in reader
        assert reader[h] == block(9, 99)
        assert len(reader) == 100 + exists_first
    finally:
        reader.close()


def test_killed_during_long_frames_leaves_residue_not_damage(tmp_path, vt_env):
    """Kill often enough and some kill lands mid-record: that is residue."""
    path = tmp_path / "dd"
    for run in range(4):
        w = Writer(vt_env, path, 100 + run, every=1000)
        assert w.ready.wait(30)
        time.sleep(0.3 + 0.1 * run)
        w.kill()
    with DataDir(path, readonly=True) as s:
        rep = s.fsck()
        assert rep.ok, rep.lines()
