"""The `vt` command surface: help, placeholders, errors without tracebacks."""

import os
import subprocess
import sys

import pytest

from vtstore.cli.main import COMMANDS, main

PLANNED = [
    "init",
    "config",
    "info",
    "save",
    "cat",
    "ls",
    "pack",
    "unpack",
    "import",
    "export",
    "log",
    "mount",
    "serve",
    "httpd",
    "push",
    "pull",
    "fsck",
    "scan",
    "ftp",
    "publish",
    "benchmark",
]


def vt(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args], capture_output=True, text=True, **kw
    )


def test_help_lists_every_planned_command():
    r = vt("--help")
    assert r.returncode == 0
    for cmd in PLANNED:
        assert f"\n    {cmd} " in r.stdout, cmd


@pytest.mark.parametrize("cmd", [c for _, c, _ in COMMANDS])
def test_each_command_has_help(cmd):
    r = vt(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: vt" in r.stdout


def test_placeholders_say_so_and_exit_2(capsys):
    import importlib

    placeholders = []
    for mod, cmd, _ in COMMANDS:
        try:
            importlib.import_module(f"vtstore.cli.{mod}")
        except ModuleNotFoundError:
            placeholders.append(cmd)
    for cmd in placeholders:
        assert main([cmd]) == 2
        assert "not implemented yet" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2():
    r = vt()
    assert r.returncode == 2
    assert "commands" in r.stdout


def test_unknown_command_is_usage_error():
    r = vt("frobnicate")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


BAD_INPUT = [
    ("cat", "nope"),
    ("cat", "nope.vt"),
    ("cat", "B{"),
    ("cat", "I{hash:sha1:00,span:1}"),
    ("ls", "/etc/passwd"),
    ("save", "/nonexistent"),
    ("pack", "/nonexistent"),
    ("unpack", "/etc/passwd"),
    ("unpack", "--at", "yesterday", "x.vt"),
    ("export", "nope.vt"),
    ("log", "nope.vt"),
    ("fsck", "nope.vt"),
    ("scan", "/nonexistent"),
    ("scan", "/etc"),
    ("import", "/nonexistent", "x.vt"),
    ("publish", "/nonexistent"),
    ("cat", "[nosuchclause]name/a"),
    ("serve", "999.1.1.1:99999"),
]


@pytest.mark.parametrize("argv", BAD_INPUT, ids=lambda a: " ".join(a))
def test_bad_input_is_one_line_and_an_exit_code(argv, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", str(tmp_path / "s"), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vt {argv[0]}: "), r.stderr


@pytest.mark.parametrize(
    "spec", ["/etc/passwd", "bogus:x", "tcp:127.0.0.1:1", "s3://bucket/prefix", "/proc/none"]
)
def test_bad_stores_are_one_line(spec, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(os.urandom(100_000))
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", spec, "save", str(f)],
        capture_output=True,
        text=True,
    )
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1, r.stderr
