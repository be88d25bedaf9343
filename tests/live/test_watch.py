"""`vt watch` end to end: real `vt` processes on a real directory and datadir,
killed with SIGTERM and SIGKILL."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from vtstore.archive import Archive

VT = [sys.executable, "-m", "vtstore.cli.main"]


class Watch:
    """A running `vt watch --json`; its state lines arrive on `self.lines`."""

    def __init__(self, store, tree, *extra, interval=1.0, settle=0.3):
        self.proc = subprocess.Popen(
            [
                *VT,
                "-S",
                str(store),
                "watch",
                str(tree),
                "--json",
                "--interval",
                str(interval),
                "--settle",
                str(settle),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout):
        """The next recorded state's summary, or None after `timeout` seconds."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        self._t.join(10)
        err = self.proc.stderr.read().decode()
        assert "Traceback" not in err, err
        return rc, err


def vt(store, *args):
    r = subprocess.run([*VT, "-q", "-S", str(store), *args], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    (t / "sub").mkdir(parents=True)
    for i in range(50):
        (t / "sub" / f"f{i}").write_bytes(os.urandom(3000))
    (t / "a").write_text("first\n")
    return t


def states(tree):
    return list(Archive(str(tree) + ".vt").entries())


def test_records_within_its_interval_and_none_when_idle(tmp_path, tree):
    store = tmp_path / "store"
    w = Watch(store, tree, interval=2.0, settle=0.3)
    try:
        first = w.next(30)
        assert first["reason"] == "catch-up" and first["files"] == 51
        time.sleep(2.2)  # the interval since the catch-up has passed
        (tree / "a").write_text("second\n")
        (tree / "new").write_bytes(b"n" * 10000)
        t0 = time.monotonic()
        s = w.next(15)
        delay = time.monotonic() - t0
        assert s is not None and s["reason"] == "change"
        assert delay < 2.0 + 0.3 + 2.0, delay  # interval + settle + slack (loaded machine)
        # only what changed was read
        assert s["files_unchanged"] == 50 and s["bytes_read"] == len("second\n") + 10000
        assert vt(store, "cat", f"{tree}.vt/a") == b"second\n"
        assert vt(store, "cat", f"{tree}.vt/new") == b"n" * 10000
        # nothing changes: no state
        assert w.next(4.5) is None
        assert len(states(tree)) == 2
    finally:
        rc, _ = w.stop()
    assert rc == 0
    assert len(states(tree)) == 2  # the final state was not needed


def test_at_most_one_state_per_interval(tmp_path, tree):
    store = tmp_path / "store"
    w = Watch(store, tree, interval=2.0, settle=0.2)
    try:
        assert w.next(30)["reason"] == "catch-up"
        t0 = time.monotonic()
        for i in range(20):  # an edit every 0.3 s for 6 s
            (tree / f"e{i}").write_text(str(i))
            time.sleep(0.3)
        elapsed = time.monotonic() - t0
        got = []
        while (s := w.next(4)) is not None:
            got.append(s)
    finally:
        rc, _ = w.stop()
    assert rc == 0
    assert 1 <= len(got) <= elapsed / 2.0 + 2, len(got)
    assert vt(store, "cat", f"{tree}.vt/e19") == b"19"


def test_sigterm_records_a_final_state(tmp_path, tree):
    store = tmp_path / "store"
    w = Watch(store, tree, interval=600.0, settle=0.2)
    assert w.next(30)["reason"] == "catch-up"
    (tree / "late").write_text("late")
    time.sleep(0.5)
    rc, _ = w.stop(signal.SIGTERM)
    assert rc == 0
    last = w.next(1)
    assert last is not None and last["reason"] == "final"
    assert vt(store, "cat", f"{tree}.vt/late") == b"late"
    assert len(states(tree)) == 2


def test_catches_up_after_kill_9(tmp_path, tree):
    store = tmp_path / "store"
    w = Watch(store, tree, interval=600.0)
    assert w.next(30)["reason"] == "catch-up"
    w.stop(signal.SIGKILL)
    (tree / "a").write_text("changed while nobody watched\n")
    os.unlink(tree / "sub" / "f3")
    w = Watch(store, tree, interval=600.0)
    try:
        s = w.next(30)
        assert s is not None and s["reason"] == "catch-up"
        assert s["files_unchanged"] == 49 and s["files"] == 50
    finally:
        w.stop(signal.SIGKILL)
    assert vt(store, "cat", f"{tree}.vt/a") == b"changed while nobody watched\n"
    assert b"f3" not in vt(store, "ls", f"{tree}.vt/sub").split()
    # restarted on an unchanged tree: no state at all
    w = Watch(store, tree, interval=600.0)
    assert w.next(5) is None
    rc, _ = w.stop()
    assert rc == 0 and w.next(1) is None
    assert len(states(tree)) == 2


def test_poll_monitor_and_low_priority(tmp_path, tree):
    store = tmp_path / "store"
    w = Watch(store, tree, "--monitor", "poll", "--poll-interval", "0.3", interval=0.5)
    try:
        assert w.next(30)["reason"] == "catch-up"
        pid = str(w.proc.pid)
        assert (
            subprocess.run(["ionice", "-p", pid], capture_output=True, text=True).stdout.strip()
            == "idle"
        )
        ni = subprocess.run(["ps", "-o", "ni=", "-p", pid], capture_output=True, text=True).stdout
        assert int(ni) >= 10
        (tree / "sub" / "f1").write_bytes(b"polled")
        s = w.next(15)
        assert s is not None and s["files_changed"] == 1
    finally:
        rc, _ = w.stop()
    assert rc == 0
    assert vt(store, "cat", f"{tree}.vt/sub/f1") == b"polled"


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["watch", "/nonexistent/dir"], 1, "not a directory"),
        (["watch", ".", "--interval", "0"], 2, "positive number of seconds"),
        (["watch", ".", "--settle", "soon"], 2, "not a number of seconds"),
        (["watch", ".", "--monitor", "fanotify"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, args, code, words):
    r = subprocess.run(
        [*VT, "-S", str(tmp_path / "s"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert r.returncode == code and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_another_user_with_an_unreadable_subdirectory(tmp_path):
    """Run as nobody: an unreadable directory is skipped with a warning, the
    rest recorded, changes still followed; no traceback."""
    import shutil
    import tempfile

    place = tempfile.mkdtemp(prefix="vt-watch-")
    try:
        os.chmod(place, 0o755)
        tree = os.path.join(place, "tree")
        os.makedirs(os.path.join(tree, "secret"))
        with open(os.path.join(tree, "secret", "s"), "w") as f:
            f.write("s")
        with open(os.path.join(tree, "open"), "w") as f:
            f.write("o")
        subprocess.run(["chown", "-R", "65534:65534", place], check=True)
        os.chmod(os.path.join(tree, "secret"), 0)
        env = {**os.environ, "HOME": place, "XDG_CACHE_HOME": os.path.join(place, "cache")}
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *VT]
        p = subprocess.Popen(
            [
                *cmd,
                "-S",
                os.path.join(place, "store"),
                "watch",
                tree,
                "--json",
                "--interval",
                "0.5",
                "--settle",
                "0.3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        first = json.loads(p.stdout.readline())
        assert first["reason"] == "catch-up" and first["errors"] == 1 and first["files"] == 1
        with open(os.path.join(tree, "open"), "w") as f:
            f.write("changed")
        second = json.loads(p.stdout.readline())
        assert second["reason"] == "change" and second["files_changed"] == 1
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        err = p.stderr.read().decode()
        assert "Traceback" not in err and "secret" in err, err
    finally:
        os.chmod(os.path.join(place, "tree", "secret"), 0o755)
        shutil.rmtree(place)
