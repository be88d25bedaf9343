"""The manual: vt.1 and the help topics are generated from docs/ and kept fresh;
the man page renders; every command and option is documented; `vt help`."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vtstore import __version__
from vtstore.cli.main import build_parser
from vtstore.cli.manual import TOPICS, generate, sections, to_roff

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src/vtstore/data"
VT = [sys.executable, "-m", "vtstore.cli.main"]


def _no_th(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith(".TH "))


def test_packaged_manual_is_generated_from_docs(tmp_path):
    generate(ROOT / "docs", tmp_path, __version__, "2000-01-01")
    for name in ("vt.1", "topics.json"):
        fresh = (tmp_path / name).read_text()
        packaged = (DATA / name).read_text()
        if name == "vt.1":
            fresh, packaged = _no_th(fresh), _no_th(packaged)
        assert packaged == fresh, f"src/vtstore/data/{name} is stale: run tools/gen-manual"


def test_man_renders_without_warnings():
    env = {**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "LC_ALL": "C.UTF-8"}
    r = subprocess.run(
        ["man", "--warnings", "-l", str(DATA / "vt.1")], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    out = r.stdout
    for heading in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT"):
        assert f"\n{heading}\n" in out
    assert "vt - the vtstore command" in out
    # no markdown left over: backquotes and ** are converted
    assert "`" not in out and "**" not in out


def _subcommands():
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _named(word: str, md: str) -> bool:
    """Whether `word` is in `md` as a whole word (`--exclude` is not found in
    `--exclude-from`, nor `vt ar` in `vt archives`)."""
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", md) is not None


def test_every_command_and_option_is_in_the_manual():
    md = (ROOT / "docs/vt.md").read_text()
    missing = []
    for name, sp in _subcommands().items():
        placeholder = any(a.dest == "rest" for a in sp._actions)
        if placeholder:  # a planned command: the manual says it is planned
            assert f"`{name}`" in md or f"vt {name}" in md, name
            continue
        if not _named(f"vt {name}", md):
            missing.append(f"vt {name}")
        for a in sp._actions:
            opts = [o for o in a.option_strings if o not in ("-h", "--help")]
            if opts and not any(_named(o, md) for o in opts):
                missing.append(f"vt {name} {'/'.join(opts)}")
    assert missing == [], "not in docs/vt.md: " + ", ".join(missing)


def test_roff_escapes_and_structures():
    md = "# x(1) — y\n\n## A\n\n.dot starts `--opt` and a\\b\n\n- item `-x`\n\n    code -q\n"
    roff = to_roff(md, "1", "d")
    assert ".SH NAME\nx \\- y" in roff
    assert "\\&.dot starts \\fB\\-\\-opt\\fR and a\\eb" in roff
    assert ".IP \\(bu 2\nitem \\fB\\-x\\fR" in roff
    assert ".nf\ncode \\-q\n.fi" in roff


def test_sections_ignore_headings_in_code_fences():
    md = "## A\n\ntext\n\n```\n## not a heading\n```\n\n## B\n\nb\n"
    s = sections(md)
    assert list(s) == ["A", "B"] and "## not a heading" in s["A"]


def test_help_topics():
    for topic in TOPICS:
        r = subprocess.run([*VT, "help", topic], capture_output=True, text=True)
        assert r.returncode == 0, (topic, r.stderr)
        assert len(r.stdout) > 100, topic
    r = subprocess.run([*VT, "help", "env"], capture_output=True, text=True)
    assert r.returncode == 0 and "VT_STORE" in r.stdout and "VT_DIR" in r.stdout
    r = subprocess.run([*VT, "help", "stores"], capture_output=True, text=True)
    assert "unix:" in r.stdout and "crypt:" in r.stdout


def test_help_command_and_unknown():
    r = subprocess.run([*VT, "help", "pack"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: vt pack" in r.stdout
    r = subprocess.run([*VT, "help", "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = subprocess.run([*VT, "help"], capture_output=True, text=True)
    assert r.returncode == 0 and "unpack" in r.stdout and "selectors" in r.stdout


def test_help_man_renders_for_a_pipe():
    r = subprocess.run([*VT, "help", "--man"], capture_output=True, text=True)
    assert r.returncode == 0 and "EXIT STATUS" in r.stdout


def test_no_arguments_orients(tmp_path):
    env = {**os.environ, "VT_DIR": str(tmp_path / "store")}
    env.pop("VT_STORE", None)
    r = subprocess.run(VT, capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr  # still a usage error for a script
    for cmd in ("vt pack", "vt unpack", "vt log", "vt mount"):
        assert cmd in r.stdout
    assert str(tmp_path / "store") in r.stdout
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 80


@pytest.mark.parametrize("bad", ["help --nosuch"])
def test_help_bad_option(bad):
    r = subprocess.run([*VT, *bad.split()], capture_output=True, text=True)
    assert r.returncode == 2
