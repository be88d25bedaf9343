"""`vt diff` as a user runs it: output forms, exit status 0/1/2, damage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ._history import make_history


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("diff"))


def test_name_status_summary_and_exit_status(h):
    r = h.vt("diff", "src.vt", check=False)  # the last two states
    assert r.returncode == 1
    lines = r.stdout.decode().splitlines()
    # the top directory's mtime changed too: a file came and one went
    assert lines[:4] == ["M .", "- only1", "+ only2", "M sub/f"]
    assert lines[-1].startswith("1 added, 1 removed, 2 modified; +3B -3B")
    r = h.vt("diff", "src.vt@1", "src.vt@-2")
    assert r.returncode == 0 and r.stdout.decode().startswith("0 added, 0 removed, 0 modified")
    r = h.vt("diff", "--stat", "src.vt@0", "@2", check=False)
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 1
    r = h.vt("diff", "-l", "src.vt@0/sub", "@-1", check=False)
    (line, _summary) = r.stdout.decode().splitlines()
    assert line.startswith("M ") and line.endswith("f  (content, mtime)") and "2B" in line


def test_json(h):
    r = h.vt("diff", "--json", h.states[0].dirent.__str__(), "src.vt", check=False)
    assert r.returncode == 1
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    changes, summary = objs[:-1], objs[-1]["summary"]
    f = next(c for c in changes if c["path"] == "sub/f")
    assert f["kind"] == "M" and "content" in f["what"] and f["old_size"] == f["new_size"] == 2
    assert {c["path"] for c in changes if c["kind"] == "+"} == {"only2"}
    assert summary["added"] == 1 and summary["removed"] == 1 and summary["dirs_read"] >= 2


def test_trouble_is_exit_2_and_one_line(h):
    ref = str(h.states[0].dirent)
    bad = (["nope.vt", "src.vt"], ["src.vt@-9", "src.vt"], ["src.vt@0", "B{x}"], [ref, "@1"])
    for args in bad:
        r = h.vt("diff", *args, check=False)
        err = r.stderr.decode().strip()
        assert r.returncode == 2 and len(err.splitlines()) == 1, (args, err)


def test_a_missing_block_is_reported_not_raised(h, tmp_path):
    """The old state's blocks live in another datadir: its top cannot be read."""
    other = tmp_path / "other"
    src = tmp_path / "t"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_text("x")
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(other), "pack", str(src)],
        capture_output=True,
        check=True,
    )
    foreign = r.stdout.decode().strip()
    r = h.vt("diff", foreign, "src.vt", check=False)
    assert r.returncode == 2, r.stderr
    assert any(x.startswith("! .: missing block") for x in r.stdout.decode().splitlines())
    assert b"could not be read" in r.stderr and b"Traceback" not in r.stderr


def test_two_files(h):
    r = h.vt("diff", "src.vt@0/sub/f", "src.vt/sub/f", check=False)
    assert r.returncode == 1 and r.stdout.decode().splitlines()[0] == "M f"
    assert h.vt("diff", "src.vt@0/at@sign", "src.vt/at@sign").returncode == 0
