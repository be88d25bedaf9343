"""The README's quick start, run exactly as printed (so it can never drift):
every command of its code blocks, in order, in one bash with a throwaway HOME
and a PATH without ~/.local/bin, as on a fresh machine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    """The command lines of the Quick start's code blocks, before `tools/test`."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    cmds = []
    for line in section.splitlines():
        if line.startswith("    ") and line.strip():
            cmd = line.strip()
            if cmd == "tools/test":
                break
            cmds.append(cmd)
    return cmds


def test_quick_start_runs_as_printed(tmp_path):
    cmds = quick_start_commands()
    assert cmds[0] == "tools/install" and any(c.startswith("vt mount") for c in cmds)
    # each command runs; a failure names it.  `vt diff` exits 1 when the trees
    # differ (as diff(1)), which is what the quick start shows.
    script = ["set -u"]
    for i, c in enumerate(cmds):
        ok = "0|1" if c.startswith("vt diff") else "0"
        script.append(f"echo '>>> {i}' >&2\n{c}\nrc=$?")
        script.append(f'case $rc in {ok}) ;; *) echo "FAILED ($rc): {c}" >&2; exit 1;; esac')
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_") and k != "PYTHONPATH"}
    env.update(HOME=str(tmp_path), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    r = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    # what each step should have shown
    assert "is not on your PATH" in out  # the installer told what to do
    log_lines = [ln for ln in out.splitlines() if re.search(r"\b(first|second)$", ln)]
    assert len(log_lines) == 2, out
    assert "M notes.txt" in out
    assert "first draft" in out
    assert (tmp_path / "demo-restored/notes.txt").read_text() == "first draft\n"
    assert (tmp_path / "demo/notes.txt").read_text() == "second draft\n"
    assert out.count("notes.txt") >= 3  # ls -R of the history: one per state, and diff
    assert "vt pack:" in r.stderr and "added to the store" in r.stderr
    assert not os.path.ismount(tmp_path / "history")
