"""`vt snapshots` and `vt log`: store-wide listing, 80 columns, --json, totals."""

from __future__ import annotations

import datetime
import json
import os
import shutil

import pytest

from vtstore.archive import Archive
from vtstore.cli.log import stats_series
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import tree_stats
from vtstore.tree.fsimport import import_tree

from ._history import make_history

LONG = "a comment long enough to run past the right edge of an eighty column terminal, and on"


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    h = make_history(tmp_path_factory.mktemp("snap"))
    h.vt("-q", "pack", "-a", "[c]long-named-archive-of-someone", "-m", LONG, str(h.tmp / "src"))
    return h


def test_snapshots_lists_every_named_archive(h):
    lines = h.vt("-S", "[c]", "snapshots").stdout.decode().splitlines()
    home = Archive(str(h.tmp / "store" / "home.vt"))
    ids = [e.short_id for e in home.entries()]
    assert [ln.split()[:2] for ln in lines[:2]] == [["home", ids[0]], ["home", ids[1]]]
    assert lines[2].startswith("long-named-archiv...  ")
    assert all(len(ln) <= 80 for ln in lines) and lines[2].endswith("...")


def test_snapshots_of_stores_and_archive_files(h):
    r = h.vt("archives", "--json", "[c]", "src.vt", "[c]home@0")
    got = json.loads(r.stdout)
    assert [a["archive"] for a in got] == [
        "home",
        "long-named-archive-of-someone",
        "src.vt",
        "[c]home",
    ]
    src = got[2]["states"]
    assert [s["id"] for s in src] == [e.id for e in h.states]
    assert src[1]["comment"] == "the second state" and "files" not in src[1]
    assert len(got[3]["states"]) == 1
    r = h.vt("snapshots", "--latest", "--sizes", "src.vt")
    (line,) = r.stdout.decode().splitlines()
    assert line.split()[:2] == ["src.vt", h.states[2].short_id] and " 3" in line


def test_snapshots_errors(h):
    r = h.vt("snapshots", "nope.vt", "src.vt", check=False)
    assert r.returncode == 1 and b"nope.vt: no such archive" in r.stderr
    assert r.stdout.decode().count("src.vt") == 3  # the rest is still listed
    r = h.vt("snapshots", "no-such-store", check=False)
    assert r.returncode == 1 and b"no-such-store: unrecognised store spec" in r.stderr


def test_log_fits_80_columns(h):
    r = h.vt("log", "[c]long-named-archive-of-someone")
    (line,) = r.stdout.decode().splitlines()
    assert len(line) == 80 and line.endswith("...")
    e = list(Archive(str(h.tmp / "store" / "long-named-archive-of-someone.vt")).entries())[0]
    assert line.startswith(e.short_id)
    for ln in h.vt("log", "src.vt").stdout.decode().splitlines():
        assert len(ln) <= 80 and "D{" not in ln
    lines = h.vt("log", "src.vt").stdout.decode().splitlines()
    assert [ln.split()[0] for ln in lines] == [e.short_id for e in h.states]
    assert "the second state" in lines[1]
    # -v: the whole comment and the ref, on a line of its own
    full = h.vt("log", "-v", "[c]long-named-archive-of-someone").stdout.decode()
    assert LONG in full and "\n    D{" in full
    js = [json.loads(x) for x in h.vt("log", "--json", "src.vt").stdout.splitlines()]
    assert [j["id"] for j in js] == [e.id for e in h.states]
    assert all(j["files"] == 3 and j["dirent"].startswith("D{") for j in js)


def test_log_totals_by_diff_equal_a_walk_of_each_state(tmp_path):
    """The totals of later states come from diffs: they must equal full walks."""
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    store = MemoryStore()
    tops = []
    steps = [
        lambda: (src / "d" / "f").write_bytes(b"x" * 1000),
        lambda: (src / "d" / "e" / "g").write_bytes(b"y" * 50),
        lambda: os.symlink("f", src / "d" / "ln"),
        lambda: (src / "d" / "f").write_bytes(b"z" * 7),
        lambda: shutil.rmtree(src / "d" / "e"),
        lambda: ((src / "d" / "ln").unlink(), (src / "d" / "ln").mkdir()),
        lambda: (src / "d" / "ln" / "inside").write_bytes(b"q" * 3),
        lambda: shutil.rmtree(src / "d"),
    ]
    prev = None
    for step in steps:
        step()
        prev, _ = import_tree(str(src), store, previous=prev)
        tops.append(prev)

    class E:  # the part of an ArchiveEntry stats_series uses
        def __init__(self, d):
            self.dirent = d

    series = list(stats_series([E(d) for d in tops], store))
    assert [s for _, s, _ in series] == [tree_stats(d, store) for d in tops]


@pytest.mark.slow
def test_a_long_history(h, tmp_path):
    """20,000 states: log, selectors by ID, index and date, snapshots --latest."""
    from vtstore.archive import ArchiveEntry

    top = h.states[0].dirent
    entries = [
        ArchiveEntry(1_600_000_000 + 3600 * i, top, comment=f"run {i}") for i in range(20_000)
    ]
    big = tmp_path / "big.vt"
    big.write_text("".join(e.to_line() for e in entries))
    r = h.vt("log", "--brief", str(big))
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 20_000 and lines[12_345].startswith(entries[12_345].short_id)
    for sel in (entries[12_345].short_id, "-7655", "+12345"):
        (line,) = h.vt("log", "--brief", f"{big}@{sel}").stdout.decode().splitlines()
        assert line.endswith("run 12345"), sel
    day = datetime.datetime.fromtimestamp(entries[12_345].when).strftime("%Y-%m-%dT%H:%M:%S")
    (line,) = h.vt("log", "--brief", f"{big}@{day}").stdout.decode().splitlines()
    assert line.endswith("run 12345")
    assert h.vt("cat", f"{big}@+12345/sub/f").stdout == b"v0"
    (line,) = h.vt("snapshots", "--latest", str(big)).stdout.decode().splitlines()
    assert line.endswith("run 19999")


def test_log_on_an_80_column_terminal(h):
    """On a terminal: a header, and every line within the terminal's width."""
    import shlex
    import subprocess
    import sys

    base = [sys.executable, "-m", "vtstore.cli.main"]
    for args in (["log", "[c]long-named-archive-of-someone"], ["snapshots", "-s", "[c]"]):
        cmd = "stty cols 80 rows 40; exec " + " ".join(shlex.quote(a) for a in base + args)
        r = subprocess.run(
            ["script", "-qec", cmd, "/dev/null"], capture_output=True, env=h.env, cwd=h.tmp
        )
        lines = r.stdout.decode().replace("\r", "").splitlines()
        assert r.returncode == 0 and lines, r.stdout
        assert "ID" in lines[0] and "COMMENT" in lines[0], lines
        assert all(len(ln) <= 80 for ln in lines) and lines[-1].endswith("..."), lines


def test_an_archive_another_user_cannot_read(h):
    """uid 65534 meets one line naming the archive, not a traceback."""
    import shutil
    import subprocess
    import sys
    import tempfile

    d = tempfile.mkdtemp(prefix="vt-private-")  # pytest's own tmp is closed to others
    try:
        os.chmod(d, 0o755)
        shutil.copy(h.archive, f"{d}/src.vt")
        os.chmod(f"{d}/src.vt", 0o600)
        env = {"PATH": os.environ["PATH"], "HOME": d}
        for args in (["log", f"{d}/src.vt"], ["cat", f"{d}/src.vt@-1/sub/f"]):
            r = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                + [sys.executable, "-m", "vtstore.cli.main", "-S", "memory:", *args],
                capture_output=True,
                env=env,
                cwd=d,
            )
            err = r.stderr.decode().strip()
            assert r.returncode == 1 and err.endswith(f"{d}/src.vt: Permission denied"), err
            assert len(err.splitlines()) == 1 and "Traceback" not in err
    finally:
        shutil.rmtree(d)
