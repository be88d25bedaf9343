"""Shell completion: the bash script in a real bash, candidates from the parser,
the config's clauses and an archive's states; the zsh script in a real zsh."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VT = str(Path(sys.executable).parent / "vt")


def _env(tmp_path) -> dict:
    cfg = tmp_path / "vtrc"
    cfg.write_text(f"[mybackup]\ntype = datadir\npath = {tmp_path}/mb\n")
    env = {**os.environ, "VT_CONFIG": str(cfg), "VT_DIR": str(tmp_path / "store")}
    env.pop("VT_STORE", None)
    return env


def bash_complete(line: str, env: dict, cwd=None) -> list[str]:
    """Run the installed bash completion function for `line` in a real bash."""
    script = f"""
set -e
source <("{VT}" completion bash)
complete -p vt >&2
COMP_LINE={_sh(line)}
COMP_POINT=${{#COMP_LINE}}
read -r -a COMP_WORDS <<< "$COMP_LINE"
COMP_WORDS[0]="{VT}"
case "$COMP_LINE" in *" ") COMP_WORDS+=("") ;; esac
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_vt_complete
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "-F _vt_complete" in r.stderr and " vt" in r.stderr  # complete -p vt
    return [c for c in r.stdout.splitlines() if c]


def _sh(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def test_commands_and_options(tmp_path):
    env = _env(tmp_path)
    assert bash_complete("vt unp", env) == ["unpack"]
    assert set(bash_complete("vt p", env)) >= {"pack", "push", "pull", "publish"}
    opts = bash_complete("vt pack --", env)
    assert "--archive" in opts and "--comment" in opts and "-a" not in opts
    assert bash_complete("vt -H sha", env) == ["sha256", "sha3_256", "sha1"]
    assert bash_complete("vt completion ", env) == ["bash", "zsh"]


def test_clause_names(tmp_path):
    env = _env(tmp_path)
    assert bash_complete("vt -S [myb", env) == ["[mybackup]"]
    assert "[mybackup]" in bash_complete("vt ls [", env)


def test_archive_selectors(tmp_path):
    env = _env(tmp_path)
    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("one")
    for i in range(2):
        (src / "f").write_text(f"version {i}")
        subprocess.run([VT, "-q", "pack", str(src)], check=True, env=env)
    # bash splits words at "@" (it is in COMP_WORDBREAKS): it completes what follows
    got = bash_complete("vt ls d.vt@", env, cwd=tmp_path)
    assert "latest" in got and "-1" in got and "-2" in got
    assert "-3" not in got


def test_paths_fall_back_to_the_shell(tmp_path):
    env = _env(tmp_path)
    # nothing from vt: bash's default (file) completion takes over (-o default)
    assert bash_complete("vt unpack ", env) == []
    r = subprocess.run([VT, "__complete", "vt unpack "], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout == ""


def test_wordbreaks_cut_like_bash(tmp_path):
    env = {**_env(tmp_path), "VT_COMP_WORDBREAKS": " =:"}
    r = subprocess.run(
        [VT, "__complete", "vt --key-file=x -S [myb"], capture_output=True, text=True, env=env
    )
    assert r.stdout.split() == ["[mybackup]"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads(tmp_path):
    script = f"""
autoload -U compinit && compinit -u -d {tmp_path}/zcd
source <("{VT}" completion zsh)
print -r -- $_comps[vt]
"""
    r = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "_vt"
