"""`vt gc` and `vt forget --prune` of object stores, against the real SeaweedFS
of `conftest.py`: both layouts (packs and one object per block), the grace
period, a writer packing into the bucket meanwhile, and kill -9 mid-gc."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest
from tests.killaim import KillAim

from .conftest import vt
from .test_s3_cli import rc_file, same_tree


def tree(root, seed: int, files: int = 40) -> None:
    """A tree of files that no other seed shares (so a forgotten state's
    blocks are garbage), a few of them large."""
    rnd = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        size = rnd.randrange(200_000, 600_000) if i % 8 == 0 else rnd.randrange(100, 20_000)
        (d / f"f{i}").write_bytes(rnd.randbytes(size))


def objects(weed, prefix: str, what: str = "") -> tuple[int, int]:
    """(count, octets) of the store's data objects: packs and their index
    objects, or block objects."""
    b = weed.backend(prefix)
    got = [
        o
        for o in b.list("")
        if not o.name.startswith(("archives/", "gc/", "config")) and o.name.startswith(what)
    ]
    return len(got), sum(o.size for o in got)


def gc_json(env, *args) -> dict:
    r = vt(env, *args, "--json")
    out = json.loads(r.stdout)
    return out.get("gc", out)


@pytest.mark.parametrize("layout", ["packs", "blocks"])
def test_forget_prune_reclaims_and_kept_states_unpack(tmp_path, s3_env, weed, prefix, layout):
    rc = rc_file(tmp_path, weed, prefix)
    S = ["-c", rc, "-S", f"[{layout}]", "-q"]
    srcs = []
    for k in range(4):
        src = tmp_path / f"src{k}"
        tree(src, seed=k)
        srcs.append(src)
        vt(s3_env, *S, "pack", "-a", f"[{layout}]home", "-m", f"s{k}", str(src))
    n0, b0 = objects(weed, f"{prefix}-{layout}")
    # the default grace: everything was first listed just now, nothing goes
    rep = gc_json(s3_env, *S, "forget", "--keep-last", "2", "--prune", f"[{layout}]home")
    assert rep["deleted_files"] == 0 and rep["rewritten_files"] == 0, rep
    assert rep["young"] > 0, rep
    assert objects(weed, f"{prefix}-{layout}") == (n0, b0)
    # past the grace period: the forgotten states' objects go
    rep = gc_json(s3_env, *S, "gc", "--grace", "0", "--threshold", "1", "--max-unused", "0")
    assert rep["deleted_files"] + rep["rewritten_files"] > 0, rep
    n1, b1 = objects(weed, f"{prefix}-{layout}")
    assert b1 < b0 * 0.7, (b0, b1, rep)
    assert rep["disk_before"] - rep["disk_after"] >= (b0 - b1) * 0.9, rep
    for k, sel in ((3, "latest"), (2, "-2")):
        out = tmp_path / f"out{k}"
        vt(s3_env, *S, "unpack", f"[{layout}]home@{sel}", str(out))
        assert same_tree(srcs[k], out)
    assert "ok" in vt(s3_env, *S, "fsck").stdout
    # nothing left to collect: a second gc deletes nothing
    rep = gc_json(s3_env, *S, "gc", "--grace", "0", "--threshold", "1", "--max-unused", "0")
    assert rep["deleted_files"] == 0 and rep["rewritten_files"] == 0, rep


def test_threshold_leaves_a_mostly_live_pack(tmp_path, s3_env, weed, prefix):
    """A tree, then the same tree less a few small files; the first state
    forgotten: its packs are mostly live.  A threshold above their garbage
    fraction keeps them, one below rewrites them; the tree stays whole."""
    rc = rc_file(tmp_path, weed, prefix)
    S = ["-c", rc, "-S", "[packs]", "-q"]
    src = tmp_path / "src"
    tree(src, seed=1, files=40)
    vt(s3_env, *S, "pack", "-a", "[packs]home", str(src))
    for i in (1, 2, 3):
        os.unlink(src / f"d{i % 4}" / f"f{i}")
    vt(s3_env, *S, "pack", "-a", "[packs]home", str(src))
    vt(s3_env, *S, "forget", "--keep-last", "1", "[packs]home")
    _, b0 = objects(weed, f"{prefix}-packs")
    rep = gc_json(s3_env, *S, "gc", "--grace", "0", "--threshold", "90")
    assert rep["rewritten_files"] == 0 and rep["deleted_files"] == 0, rep
    assert rep["kept_files"] >= 1 and 0 < rep["dead_bytes"] < rep["live_bytes"] * 0.2, rep
    assert objects(weed, f"{prefix}-packs")[1] == b0
    rep = gc_json(s3_env, *S, "gc", "--grace", "0", "--threshold", "1", "--max-unused", "0")
    assert rep["rewritten_files"] >= 1 and rep["blocks_copied"] > 0, rep
    assert objects(weed, f"{prefix}-packs")[1] < b0
    vt(s3_env, *S, "unpack", "[packs]home", str(tmp_path / "out"))
    assert same_tree(src, tmp_path / "out")


WRITER = r"""
import subprocess, sys
rc, layout, root, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for k in range(n):
    subprocess.run([sys.executable, "-m", "vtstore.cli.main", "-c", rc, "-S", f"[{layout}]",
                    "-q", "pack", "-a", f"[{layout}]writer", "-m", f"w{k}", f"{root}/w{k}"],
                   check=True)
"""


@pytest.mark.parametrize("layout", ["packs", "blocks"])
def test_gc_beside_a_writer_loses_nothing(tmp_path, s3_env, weed, prefix, layout):
    """Another process packs new trees into the bucket while gc runs (with a
    grace period, as by default): every state of both archives unpacks."""
    rc = rc_file(tmp_path, weed, prefix)
    S = ["-c", rc, "-S", f"[{layout}]", "-q"]
    old = []
    for k in range(3):
        src = tmp_path / f"old{k}"
        tree(src, seed=k)
        old.append(src)
        vt(s3_env, *S, "pack", "-a", f"[{layout}]home", str(src))
    vt(s3_env, *S, "gc", "--grace", "0", "-n")  # a first listing: the ledger
    vt(s3_env, *S, "forget", "--keep-last", "1", f"[{layout}]home")
    gc_json(s3_env, *S, "gc", "--grace", "0")  # all of today's garbage gone
    for k in range(6):
        tree(tmp_path / f"w{k}", seed=1000 + k, files=12)
    w = subprocess.Popen(
        [sys.executable, "-c", WRITER, rc, layout, str(tmp_path), "6"],
        env=s3_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(3):
            gc_json(s3_env, *S, "gc", "--grace", "30s", "--threshold", "1", "--max-unused", "0")
    finally:
        out, err = w.communicate(timeout=300)
    assert w.returncode == 0, err
    gc_json(s3_env, *S, "gc", "--grace", "30s", "--threshold", "1", "--max-unused", "0")
    for k in range(6):
        dst = tmp_path / f"wout{k}"
        vt(s3_env, *S, "unpack", f"[{layout}]writer@{k}", str(dst))  # @0 the oldest
        assert same_tree(tmp_path / f"w{k}", dst), k
    vt(s3_env, *S, "unpack", f"[{layout}]home", str(tmp_path / "hout"))
    assert same_tree(old[2], tmp_path / "hout")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["packs", "blocks"])
def test_kill_9_mid_gc_then_gc_again(tmp_path, s3_env, weed, prefix, layout):
    """12 rounds: pack a new state, forget down to 2, start `vt gc` and
    SIGKILL it after a random delay within its usual run time; the kept
    states unpack after every round.  In the end a gc (taking over the killed
    runs' lock) leaves fsck clean and the garbage gone."""
    rc = rc_file(tmp_path, weed, prefix)
    S = ["-c", rc, "-S", f"[{layout}]", "-q"]
    home = f"[{layout}]home"
    cmd = [
        sys.executable,
        "-m",
        "vtstore.cli.main",
        *S,
        "gc",
        "--grace",
        "0",
        "--threshold",
        "1",
        "--max-unused",
        "0",
    ]

    def new_state(k: int) -> None:
        tree(tmp_path / f"src{k}", seed=k, files=30)
        vt(s3_env, *S, "pack", "-a", home, str(tmp_path / f"src{k}"))
        vt(s3_env, *S, "forget", "--keep-last", "2", home)

    def check(k: int, tag: str) -> None:
        for j, sel in ((k, "latest"), (k - 1, "-2")):
            out = tmp_path / f"out-{tag}-{j}"
            vt(s3_env, *S, "unpack", f"{home}@{sel}", str(out))
            assert same_tree(tmp_path / f"src{j}", out), (tag, j)

    t = time.monotonic()  # the interpreter and a gc's imports: no gc yet
    subprocess.run(
        [sys.executable, "-c", "import vtstore.cli.main, vtstore.lifecycle.gc_objects, obstore"],
        env=s3_env,
        check=True,
    )
    start = time.monotonic() - t
    for k in range(3):
        new_state(k)
    t = time.monotonic()
    vt(s3_env, *cmd[3:])
    aim = KillAim(start, time.monotonic() - t - start, seed=1141, least=0.1)
    for k in range(3, 15):
        new_state(k)
        p = subprocess.Popen(cmd, env=s3_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        aim.run(p)
        _, err = p.communicate()
        assert b"Traceback" not in err, err.decode()
        check(k, f"r{k}")
    assert aim.killed >= 4, (aim.killed, aim.finished)
    _, b0 = objects(weed, f"{prefix}-{layout}")
    vt(
        s3_env, *S, "gc", "--grace", "0", "--threshold", "1", "--max-unused", "0"
    )  # takes over a killed gc's lock
    _, b1 = objects(weed, f"{prefix}-{layout}")
    assert b1 <= b0
    assert "ok" in vt(s3_env, *S, "fsck").stdout
    check(14, "final")
    # what is left is about the two kept states (a few MB each), not 15 states
    assert b1 < 3 * sum(f.stat().st_size for f in (tmp_path / "src14").rglob("f*")), b1


def test_forget_all_in_a_bucket(tmp_path, s3_env, weed, prefix):
    """`vt forget --all` works on the named archives kept in the bucket."""
    rc = rc_file(tmp_path, weed, prefix)
    S = ["-c", rc, "-S", "[blocks]", "-q"]
    for name in ("a", "b"):
        for k in range(3):
            src = tmp_path / f"{name}{k}"
            tree(src, seed=k, files=4)
            vt(s3_env, *S, "pack", "-a", f"[blocks]{name}", str(src))
    r = vt(s3_env, *S, "forget", "--keep-last", "1", "--all", "--json")
    got = {a["archive"].rsplit("/", 1)[-1]: a for a in json.loads(r.stdout)["archives"]}
    assert sorted(got) == ["a", "b"], got
    assert all(len(a["kept"]) == 1 and len(a["forgotten"]) == 2 for a in got.values()), got
    assert len(list(weed.backend(f"{prefix}-blocks").list("archives/"))) == 2


def test_another_machine_reads_after_gc(tmp_path, s3_env, weed, prefix):
    """A second machine (its own cache, filled before the gc) reads the kept
    state after gc rewrote and deleted the packs its cache names."""
    rc = rc_file(tmp_path, weed, prefix)
    S = ["-c", rc, "-S", "[packs]", "-q"]
    other = {**s3_env, "XDG_CACHE_HOME": str(tmp_path / "other-cache")}
    src = tmp_path / "src"
    tree(src, seed=1, files=40)
    vt(s3_env, *S, "pack", "-a", "[packs]home", str(src))
    for i in (1, 2, 3):
        os.unlink(src / f"d{i % 4}" / f"f{i}")
    vt(s3_env, *S, "pack", "-a", "[packs]home", str(src))
    vt(other, *S, "unpack", "[packs]home", str(tmp_path / "before"))  # fills its cache
    vt(s3_env, *S, "forget", "--keep-last", "1", "[packs]home")
    rep = gc_json(s3_env, *S, "gc", "--grace", "0", "--threshold", "1", "--max-unused", "0")
    assert rep["rewritten_files"] >= 1, rep
    vt(other, *S, "unpack", "[packs]home", str(tmp_path / "after"))
    assert same_tree(src, tmp_path / "after")
