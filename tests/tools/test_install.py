"""tools/install talks: what it does, where vt is, and what to do when
~/.local/bin is not on PATH; it links the man page and the completion scripts.

Runs the real installer with a throwaway HOME (the checkout's .venv is already
built by the README's test command, so this run only checks and links)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _install(home: Path, path: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "PATH": path}
    return subprocess.run(
        [str(ROOT / "tools/install"), *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_install_without_local_bin_on_path_says_what_to_do(tmp_path):
    r = _install(tmp_path, "/usr/sbin:/usr/bin:/sbin:/bin")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    bin_dir = tmp_path / ".local/bin"
    assert f"vt is {bin_dir}/vt" in out
    assert "is not on your PATH" in out and 'export PATH="$HOME/.local/bin:$PATH"' in out
    assert os.access(bin_dir / "vt", os.X_OK)
    man = tmp_path / ".local/share/man/man1/vt.1"
    r2 = subprocess.run(
        ["man", "-l", str(man)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
    )
    assert r2.returncode == 0 and "vtstore" in r2.stdout
    comp = tmp_path / ".local/share/bash-completion/completions/vt"
    assert "complete -o default -o bashdefault -F _vt_complete vt" in comp.read_text()
    assert (tmp_path / ".local/share/zsh/site-functions/_vt").read_text().startswith("#compdef vt")
    # the installed vt runs, and man finds the page through PATH's ../share/man
    r3 = subprocess.run([str(bin_dir / "vt"), "--version"], capture_output=True, text=True)
    assert r3.returncode == 0 and r3.stdout.startswith("vt ")


def test_install_on_path_is_ready_and_quiet_is_quiet(tmp_path):
    path = f"{tmp_path}/.local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    r = _install(tmp_path, path)
    assert r.returncode == 0, r.stderr
    assert "ready: try 'vt'" in r.stdout and "not on your PATH" not in r.stdout
    env = {**os.environ, "HOME": str(tmp_path), "PATH": path, "MANPAGER": "cat"}
    r2 = subprocess.run(["man", "-w", "vt"], capture_output=True, text=True, env=env)
    # found through HOME's link (man -w prints the link's target)
    assert r2.returncode == 0, r2.stderr
    assert Path(r2.stdout.strip()).resolve() == (ROOT / "src/vtstore/data/vt.1").resolve()
    r3 = _install(tmp_path, path, "-q")
    assert r3.returncode == 0 and r3.stdout == "" and r3.stderr == ""


def test_install_rejects_unknown_options(tmp_path):
    r = _install(tmp_path, "/usr/bin:/bin", "--nonsense")
    assert r.returncode == 2 and "unknown option" in r.stderr
