"""A store with an archive of three states, for the selector, log and
snapshots tests: real `vt` processes over a real datadir and config clause."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vtstore.archive import Archive


@dataclass
class History:
    """`DIR.vt` (3 states) and `[c]home` (2 states) in one datadir."""

    tmp: Path
    env: dict
    archive: Path
    states: list  # the ArchiveEntry of each state of DIR.vt, oldest first

    def vt(self, *args, check=True, input=None) -> subprocess.CompletedProcess:
        """Run vt with the history's store and config; never a traceback."""
        r = subprocess.run(
            [sys.executable, "-m", "vtstore.cli.main", *args],
            capture_output=True,
            env=self.env,
            cwd=self.tmp,
            input=input,
        )
        assert b"Traceback" not in r.stderr, r.stderr.decode()
        if check:
            assert r.returncode == 0, f"vt {' '.join(args)}: {r.stderr.decode()}"
        return r


def make_history(tmp: Path) -> History:
    """State i of `src.vt` holds `sub/f` = `v{i}` and `only{i}`; state 1 has a
    comment; `at@sign` is a file whose name holds an @."""
    datadir = tmp / "store"
    (tmp / "vtrc").write_text(f"[c]\ntype = datadir\npath = {datadir}\n")
    env = dict(os.environ, VT_STORE=str(datadir), VT_CONFIG=str(tmp / "vtrc"), TZ="UTC")
    env.pop("COLUMNS", None)
    h = History(tmp, env, tmp / "src.vt", [])
    src = tmp / "src"
    (src / "sub").mkdir(parents=True)
    (src / "at@sign").write_text("at")
    for i in range(3):
        (src / "sub" / "f").write_text(f"v{i}")
        for old in src.glob("only*"):
            old.unlink()
        (src / f"only{i}").write_text(str(i))
        args = ["-q", "pack", str(src)] + (["-m", "the second state"] if i == 1 else [])
        h.vt(*args)
        if i < 2:
            h.vt("-q", "pack", "-a", "[c]home", str(src))
        time.sleep(0.02)
    h.states = list(Archive(str(h.archive)).entries())
    assert len(h.states) == 3
    return h
