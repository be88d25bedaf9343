"""The failures users fear from a garbage collector: killed with SIGKILL at
random points, and running while another process packs into the same store.
Nothing reachable may be lost, from either side."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest
from tests.killaim import KillAim

from vtstore.archive import Archive
from vtstore.lifecycle.forget import forget
from vtstore.lifecycle.policy import Policy
from vtstore.stores.datadir import DataDir

from .conftest import check_archive, data_kib, pack, popen_vt, write_version


def _fsck_clean(dd) -> None:
    with DataDir(dd) as s:
        rep = s.fsck()
    assert rep.problems == [], rep.problems[:3]


@pytest.mark.slow
def test_gc_killed_at_random_points_loses_nothing(tmp_path, vt):
    """50 rounds: pack a new state, forget down to 3, start `vt gc` and
    SIGKILL it after a random delay; then fsck and read every remaining
    state's every block.  The killed runs leave copies, pending deletions and
    torn files behind; the next runs must cope with all of them."""
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    with DataDir(dd, data_file_size=96 << 10) as s:
        for v in range(4):
            write_version(tree, v, files=24, size=12_000)
            pack(s, arch, tree)
    t = time.monotonic()  # the interpreter and a gc's imports: no gc yet
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import vtstore.cli.main, vtstore.lifecycle.gc, vtstore.stores.datadir",
        ],
        env=vt.env,
        check=True,
    )
    start = time.monotonic() - t
    t = time.monotonic()
    vt("-S", dd, "gc", "--grace", "0", "--max-unused", "0")
    aim = KillAim(start, time.monotonic() - t - start, seed=1141)
    for rnd_i in range(50):
        with DataDir(dd, data_file_size=96 << 10) as s:
            write_version(tree, 4 + rnd_i, files=24, size=12_000)
            pack(s, arch, tree)
        forget(Archive(arch), Policy(last=3))
        p = popen_vt(vt.env, "-q", "-S", dd, "gc", "--grace", "0", "--max-unused", "0")
        aim.run(p)
        _out, err = p.communicate()
        assert "Traceback" not in err, err
        assert check_archive(dd, arch) == 3
    _fsck_clean(dd)
    assert aim.killed >= 15, (aim.killed, aim.finished)
    before = data_kib(dd)
    vt("-S", dd, "gc", "--grace", "0", "--max-unused", "0")
    assert check_archive(dd, arch) == 3
    _fsck_clean(dd)
    # everything the killed runs left (copies, files dropped from the index)
    # is collected in the end: the store holds about three states' worth
    after = data_kib(dd)
    assert after <= before
    assert not (dd / "gc-pending").exists()


def test_gc_beside_a_packing_process(tmp_path, vt):
    """Each round makes garbage (a state of old.vt forgotten) and then, in
    another process, `vt pack`s the very same tree into new.vt, so the pack
    deduplicates against exactly the blocks gc is about to delete, while `vt
    gc` starts at a random moment of that pack.  Every state of both archives
    must stay whole: gc marks again, under the exclusive lock, what was
    recorded while it worked."""
    dd, tree = tmp_path / "dd", tmp_path / "t"
    old, new = str(tmp_path / "old.vt"), str(tmp_path / "new.vt")
    rnd = random.Random(7)
    rounds = 8
    collected = 0
    for k in range(rounds):
        garbage, kept = 50 * k + 20, 50 * k + 40
        with DataDir(dd, data_file_size=96 << 10) as s:
            for v in (garbage, kept):
                write_version(tree, v, files=24, size=24_000)
                pack(s, old, tree)
        forget(Archive(old), Policy(last=1))
        ptree = tmp_path / f"p{k}"
        write_version(ptree, garbage, files=24, size=24_000)
        packer = popen_vt(vt.env, "-q", "-S", dd, "pack", "-a", new, ptree)
        time.sleep(rnd.uniform(0.0, 0.6))
        r = vt("-q", "-S", dd, "gc", "--grace", "0", "--max-unused", "0", "--wait", "60", "--json")
        rep = json.loads(r.stdout)
        collected += rep["deleted_files"] + rep["rewritten_files"]
        _out, err = packer.communicate(timeout=120)
        assert packer.returncode == 0, err
        assert check_archive(dd, new) == k + 1
    assert check_archive(dd, old) == 1
    assert collected >= rounds // 2, collected
    _fsck_clean(dd)


SLOW_PACK = """
import sys, time
from pathlib import Path
from vtstore.archive import Archive, store_identity
from vtstore.stores.datadir import DataDir
from vtstore.tree.fsimport import Importer
dd, arch, tree, flag = sys.argv[1:]
with DataDir(dd) as s:
    d = Importer(s).import_path(tree)  # deduplicates against the garbage
    s.flush()
    Path(flag + ".imported").touch()
    while not Path(flag + ".go").exists():
        time.sleep(0.02)
    Archive(arch).update(d, store_id=store_identity(s))
"""


def test_sweep_marks_a_state_recorded_while_gc_worked(tmp_path, vt):
    """The race made certain: a pack has deduplicated against garbage blocks
    and not yet recorded its state when gc marks; gc then waits for the
    datadir lock, the pack records its state and closes, and gc must see that
    state before it deletes anything (its blocks are copied late)."""
    dd, tree = tmp_path / "dd", tmp_path / "t"
    old, new = str(tmp_path / "old.vt"), str(tmp_path / "new.vt")
    with DataDir(dd, data_file_size=96 << 10) as s:
        for v in (20, 40):
            write_version(tree, v, files=24, size=24_000)
            pack(s, old, tree)
    forget(Archive(old), Policy(last=1))
    ptree, flag = tmp_path / "p", str(tmp_path / "flag")
    write_version(ptree, 20, files=24, size=24_000)
    packer = subprocess.Popen(
        [sys.executable, "-c", SLOW_PACK, str(dd), new, str(ptree), flag], env=vt.env
    )
    deadline = time.monotonic() + 60
    while not os.path.exists(flag + ".imported"):
        assert packer.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    gc = popen_vt(
        vt.env, "-S", dd, "gc", "--grace", "0", "--max-unused", "0", "--json", "--wait", "60"
    )
    time.sleep(2.0)  # gc marks and copies, then waits for the pack's shared lock
    assert gc.poll() is None
    open(flag + ".go", "w").close()
    assert packer.wait(timeout=60) == 0
    out, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    rep = json.loads(out)
    assert check_archive(dd, new) == 1
    assert rep["late_copies"] > 0 and rep["deleted_files"] + rep["rewritten_files"] > 0, rep
    assert check_archive(dd, old) == 1
    _fsck_clean(dd)
