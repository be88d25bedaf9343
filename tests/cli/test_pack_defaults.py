"""Sensible defaults of `vt pack` for a home backup, as a normal user.

`vt pack ~` with no -a, as uid 65534 whose home's parent is root's: the state
goes to the archive named after the home in the default store
(`~/.local/share/vt/NAME.vt`), the summary says where; when no archive can be
written the error comes before anything is read.  The summary on stderr, the
--json summary, and a progress bar with a total (on a terminal).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
VT = [sys.executable, "-m", "vtstore.cli.main"]


@pytest.fixture
def home():
    """/tmp/vt-home-X (root's, 0755) / user (nobody's home)."""
    top = Path(tempfile.mkdtemp(prefix="vt-home-"))
    os.chmod(top, 0o755)
    h = top / "user"
    (h / "docs").mkdir(parents=True)
    for i in range(30):
        (h / "docs" / f"f{i}").write_bytes(os.urandom(4000))
    for dirpath, _dirnames, filenames in os.walk(top / "user"):
        os.chown(dirpath, 65534, 65534)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), 65534, 65534)
    try:
        yield h
    finally:
        shutil.rmtree(top)


def env_for(home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VT_", "XDG_"))}
    env["HOME"] = str(home)
    return env


def as_nobody(home, *args):
    r = subprocess.run([*NOBODY, *VT, *args], capture_output=True, env=env_for(home), cwd=home)
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    return r


def test_pack_home_goes_to_the_store_archive(home):
    r = as_nobody(home, "pack", "--json", str(home))
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    where = home / ".local/share/vt/user.vt"
    assert s["archive"] == str(where) and where.exists()
    assert not (home.parent / "user.vt").exists()
    assert str(where) in r.stderr.decode() and "30 new" in r.stderr.decode()
    assert s["files_new"] == 30 and s["bytes_read"] == 120_000 and s["bytes_added"] > 0
    for _ in range(2):  # the first pack made ~/.local while it walked: stored again once
        again = json.loads(as_nobody(home, "pack", "--json", str(home)).stdout)
    assert again["archive"] == str(where) and again["files_unchanged"] == 30
    assert again["bytes_added"] == 0
    out = home / "restored"
    r = as_nobody(home, "unpack", "[default]user", str(out))
    assert r.returncode == 0, r.stderr.decode()
    assert (out / "docs/f7").read_bytes() == (home / "docs/f7").read_bytes()


def test_no_writable_archive_fails_before_reading(home):
    secret = home / "docs" / "root-only"
    secret.write_bytes(b"x")
    os.chmod(secret, 0)  # reading the tree would report it unreadable
    for args in (["-S", "memory:", "pack", str(home)], ["pack", "-a", "/root/x.vt", str(home)]):
        r = as_nobody(home, *args)
        err = r.stderr.decode()
        assert r.returncode == 1 and err.count("\n") == 1, err
        assert "root-only" not in err and "could not be read" not in err
        assert ("-a" in err) or ("not writable" in err)
    assert not (home / ".local/share/vt/user.vt").exists()


def on_terminal(cmd, env) -> str:
    """Run `cmd` with stderr on a pseudo-terminal; what it showed there."""
    master, slave = pty.openpty()
    # a terminal of no size is one tqdm draws nothing on
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif p.poll() is not None:
            break
    p.wait()
    os.close(master)
    text = shown.decode(errors="replace")
    assert p.returncode == 0, text
    return text


def test_progress_bars_have_a_total_on_a_terminal(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"big{i}").write_bytes(os.urandom(4 << 20))
    env = env_for(tmp_path)
    archive = str(tmp_path / "s.vt")
    text = on_terminal([*VT, "pack", "-a", archive, str(src)], env)
    # a bar with a total: "pack:  40%|████      | 19.2M/48.0M [00:01<00:01, ...]"
    # (without one tqdm shows "pack: 19.2MB [00:01, ...]")
    assert "%|" in text and "/48.0M" in text, text[-2000:]
    assert "12 files (12 new, 0 changed, 0 unchanged)" in text
    text = on_terminal([*VT, "unpack", archive, str(tmp_path / "out")], env)
    assert "%|" in text and "/48.0M" in text, text[-2000:]
