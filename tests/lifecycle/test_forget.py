"""`vt forget`: policies applied to real archives, the rewrite, and a
concurrent `vt pack` loop whose appended states must all survive."""

from __future__ import annotations

import json
import time

from vtstore.archive import Archive
from vtstore.stores.datadir import DataDir

from .conftest import pack, write_version

DAY = 86400


def _history(tmp_path, n=10, comments=None):
    """`n` states of a small tree, one a day, oldest first."""
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    t0 = time.time() - n * DAY
    with DataDir(dd) as s:
        for i in range(n):
            write_version(tree, i, files=6, size=2000)
            c = comments[i] if comments else f"day {i}"
            pack(s, arch, tree, when=t0 + i * DAY + i, comment=c)  # no state on a boundary
    return dd, arch


def test_keep_last_dry_run_changes_nothing_then_forgets(tmp_path, vt):
    dd, arch = _history(tmp_path)
    before = open(arch, "rb").read()
    r = vt("-S", dd, "forget", "--keep-last", "3", "--dry-run", "--json", arch)
    out = json.loads(r.stdout)
    (a,) = out["archives"]
    assert [v["comment"] for v in a["kept"]] == ["day 7", "day 8", "day 9"]
    assert all(v["reasons"] == ["last"] for v in a["kept"])
    assert len(a["forgotten"]) == 7 and all(len(v["id"]) == 8 for v in a["forgotten"])
    assert open(arch, "rb").read() == before
    r = vt("-S", dd, "forget", "--keep-last", "3", arch)
    assert "keeping 3 of 10 states, forgot 7" in r.stdout
    assert [e.comment for e in Archive(arch).entries()] == ["day 7", "day 8", "day 9"]
    # what is kept is byte-identical lines, in order
    assert open(arch, "rb").read() == b"".join(before.splitlines(keepends=True)[7:])


def test_keep_within_and_tag(tmp_path, vt):
    comments = [f"day {i}" + (" #release" if i in (1, 4) else "") for i in range(10)]
    dd, arch = _history(tmp_path, comments=comments)
    vt("-S", dd, "forget", "--keep-within", "2d", "--keep-tag", "release", arch)
    got = [e.comment for e in Archive(arch).entries()]
    assert got == ["day 1 #release", "day 4 #release", "day 8", "day 9"]


def test_forget_keeps_damaged_and_comment_lines(tmp_path, vt):
    dd, arch = _history(tmp_path, n=4)
    data = open(arch, "rb").read().splitlines(keepends=True)
    data.insert(1, b"# a note\n")
    data.insert(3, b"{not json\n")
    open(arch, "wb").write(b"".join(data))
    r = vt("-S", dd, "forget", "--keep-last", "1", arch)
    assert r.returncode == 0
    text = open(arch, "rb").read()
    assert b"# a note\n" in text and b"{not json\n" in text
    assert [e.comment for e in Archive(arch).entries()] == ["day 3"]


def test_usage_errors(tmp_path, vt):
    dd, arch = _history(tmp_path, n=2)
    for args, needle in [
        ((arch,), "no policy given"),
        (("--keep-last", "1"), "which archives"),
        (("--keep-within", "3x", arch), "bad duration"),
        (("--keep-daily", "-5", arch), "a count"),
        (("--keep-last", "1", str(tmp_path / "none.vt")), "no such archive"),
        (("--keep-last", "1", "--all", arch), "not both"),
    ]:
        r = vt("-S", dd, "forget", *args, check=False)
        assert r.returncode != 0, args
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert len(list(Archive(arch).entries())) == 2


def test_all_archives_of_a_store(tmp_path, vt):
    """--all: the store's named archives and the X.vt files registered as
    they recorded states into it."""
    dd, arch = _history(tmp_path, n=5)
    named = str(dd / "home.vt")
    with DataDir(dd) as s:
        for i in range(3):
            pack(s, named, tmp_path / "t", when=time.time() + i)
    r = vt("-S", dd, "forget", "--keep-last", "2", "--all", "--json")
    out = json.loads(r.stdout)
    assert sorted(a["archive"] for a in out["archives"]) == sorted([arch, named])
    assert len(list(Archive(arch).entries())) == 2
    assert len(list(Archive(named).entries())) == 2


def test_concurrent_pack_loop_loses_no_state(tmp_path, vt):
    """A `vt pack` loop appends states marked keep-N and junk-N while `vt
    forget` rewrites the archive again and again dropping the junk: every
    keep state appended must be there at the end (forget takes the lock,
    re-reads, rewrites and renames; a waiting appender finds the new file)."""
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    write_version(tree, 0, files=4, size=1000)
    env = vt.env
    n = 8
    script = (
        "import subprocess, sys\n"
        f"for i in range({n}):\n"
        "    for kind in ('keep', 'junk'):\n"
        "        subprocess.run([sys.executable, '-m', 'vtstore.cli.main', '-q', '-S',"
        f" {str(dd)!r}, 'pack', '-a', {arch!r}, '-m', f'{{kind}}-{{i}}', {str(tree)!r}],"
        " check=True, stdout=subprocess.DEVNULL)\n"
    )
    import subprocess
    import sys

    packer = subprocess.Popen([sys.executable, "-c", script], env=env)
    rewrites = 0
    while packer.poll() is None:
        if Archive(arch).exists():
            r = vt("-S", dd, "forget", "--keep-comment", "keep-*", "--json", arch, check=False)
            if r.returncode == 0 and json.loads(r.stdout)["archives"][0]["forgotten"]:
                rewrites += 1
    assert packer.returncode == 0
    vt("-S", dd, "forget", "--keep-comment", "keep-*", arch)
    got = [e.comment for e in Archive(arch).entries()]
    assert got == [f"keep-{i}" for i in range(n)], got
    assert rewrites >= 3, rewrites


def test_forget_named_states(tmp_path, vt):
    """`X.vt@SEL` forgets exactly the states named (restic's `forget ID`)."""
    dd, arch = _history(tmp_path, n=5)
    states = list(Archive(arch).entries())
    r = vt("-S", dd, "forget", f"{arch}@{states[1].short_id}", f"{arch}@-1", "--json")
    (a,) = json.loads(r.stdout)["archives"]
    assert sorted(v["comment"] for v in a["forgotten"]) == ["day 1", "day 4"]
    assert [e.comment for e in Archive(arch).entries()] == ["day 0", "day 2", "day 3"]
    r = vt("-S", dd, "forget", f"{arch}@-1", "--keep-last", "1", check=False)
    assert r.returncode == 2 and "not both" in r.stderr
    r = vt("-S", dd, "forget", f"{arch}@ffffffff", check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert len(list(Archive(arch).entries())) == 3
