"""The two-way shadow converges after edits on both sides: two real
directories shadowing one archive, in process and as two `vt shadow` daemons."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vtstore.archive import Archive
from vtstore.live.shadow import Shadow, base_path_for
from vtstore.stores.spec import open_store_spec

VT = [sys.executable, "-m", "vtstore.cli.main"]


def same_trees(a, b):
    return subprocess.run(["diff", "-r", str(a), str(b)], capture_output=True).returncode == 0


@pytest.fixture
def two(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("x1")
    (a / "d").mkdir()
    (a / "d" / "big").write_bytes(os.urandom(300_000))
    return a, b, Archive(str(tmp_path / "X.vt")), tmp_path / "store"


def settle(sa, sb, store, rounds=3):
    return [(sa.round(store), sb.round(store)) for _ in range(rounds)]


def test_converges_both_ways_in_process(two):
    a, b, ar, sp = two
    with open_store_spec(str(sp)) as store:
        sa, sb = Shadow(str(a), ar), Shadow(str(b), ar)
        steps = settle(sa, sb, store)
        assert steps[0] == (("recorded", []), ("applied", []))
        assert steps[1:] == [((None, []), (None, []))] * 2  # applying is not a local change
        assert same_trees(a, b)
        # edits on both sides, different paths
        (b / "y").write_text("from B")
        (a / "x").write_text("x2 from A")
        os.unlink(a / "d" / "big")
        settle(sa, sb, store)
        assert same_trees(a, b) and (a / "y").read_text() == "from B"
        assert (b / "x").read_text() == "x2 from A" and not (b / "d" / "big").exists()
        # the same file on both sides: nothing lost, one copy beside the other
        (a / "x").write_text("A's")
        (b / "x").write_text("B's")
        steps = settle(sa, sb, store)
        assert steps[0][1] == ("merged", ["x"])
        assert same_trees(a, b)
        assert {(a / "x").read_text(), (a / "x.vt-conflict").read_text()} == {"A's", "B's"}
        # a new subtree and a removal
        (b / "new" / "deep").mkdir(parents=True)
        (b / "new" / "deep" / "f").write_bytes(b"f" * 5000)
        os.unlink(a / "y")
        settle(sa, sb, store)
        assert same_trees(a, b) and (a / "new" / "deep" / "f").read_bytes() == b"f" * 5000
        n = len(list(ar.entries()))
        assert settle(sa, sb, store) == [((None, []), (None, []))] * 3
        assert len(list(ar.entries())) == n  # converged: no more states
    assert os.path.exists(base_path_for(str(a)))


def test_restart_resumes_from_its_base(two):
    a, b, ar, sp = two
    with open_store_spec(str(sp)) as store:
        settle(Shadow(str(a), ar), Shadow(str(b), ar), store)
        (b / "x").write_text("while A was away")
        assert Shadow(str(b), ar).round(store)[0] == "recorded"
        # a new Shadow object (a restarted daemon) reads its base from disk
        assert Shadow(str(a), ar).round(store)[0] == "applied"
        assert (a / "x").read_text() == "while A was away"


class Daemon:
    def __init__(self, store, d, ar):
        self.p = subprocess.Popen(
            [
                *VT,
                "-q",
                "-S",
                str(store),
                "shadow",
                str(d),
                str(ar),
                "--json",
                "--interval",
                "0.5",
                "--settle",
                "0.3",
                "--check",
                "0.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(30)
        out, err = self.p.communicate()
        assert "Traceback" not in err.decode(), err.decode()
        return rc, [json.loads(line) for line in out.splitlines()]


def wait_for(cond, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_two_daemons_converge(two):
    a, b, ar, sp = two
    da = Daemon(sp, a, ar.path)
    assert wait_for(lambda: ar.exists())
    db = Daemon(sp, b, ar.path)
    try:
        assert wait_for(lambda: same_trees(a, b))
        (a / "from_a").write_text("a")
        (b / "from_b").write_text("b")
        assert wait_for(lambda: (a / "from_b").exists() and (b / "from_a").exists())
        assert wait_for(lambda: same_trees(a, b))
    finally:
        rca, outa = da.stop()
        rcb, outb = db.stop()
    assert rca == rcb == 0
    assert same_trees(a, b)
    assert {"recorded", "applied"} <= {o["step"] for o in outa + outb}


def test_bad_input(tmp_path):
    r = subprocess.run(
        [*VT, "-S", str(tmp_path / "s"), "shadow", str(tmp_path / "none"), str(tmp_path / "X.vt")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "not a directory" in r.stderr and "Traceback" not in r.stderr


def test_concurrent_rounds_lose_nothing(two):
    import threading

    a, b, ar, sp = two
    with open_store_spec(str(sp)) as store:
        sa, sb = Shadow(str(a), ar), Shadow(str(b), ar)
        settle(sa, sb, store)
        for i in range(6):
            (a / f"a{i}").write_text(str(i))
            (b / f"b{i}").write_text(str(i))
            ts = [threading.Thread(target=s.round, args=(store,)) for s in (sa, sb)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        settle(sa, sb, store)
        for i in range(6):
            assert (a / f"b{i}").read_text() == str(i) and (b / f"a{i}").read_text() == str(i)
        assert same_trees(a, b)


@pytest.mark.parametrize(
    "damage", [b"", b"no newline", b"\xff\xfe\n", b'{"when":1}\nD{', b"x\nB{hash:blake3:00,span:1}"]
)
def test_damaged_base_file_is_one_clear_error(two, damage):
    a, b, ar, sp = two
    with open_store_spec(str(sp)) as store:
        Shadow(str(a), ar).round(store)
    with open(base_path_for(str(a)), "wb") as f:
        f.write(damage)
    r = subprocess.run(
        [*VT, "-S", str(sp), "shadow", "--once", str(a), str(ar.path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "damaged" in r.stderr and "Traceback" not in r.stderr, r.stderr
