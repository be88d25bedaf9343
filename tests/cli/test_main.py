"""The `vt` command surface: help, placeholders, errors without tracebacks."""

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
