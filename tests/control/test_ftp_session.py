"""`vt ftp` driven as a person drives it: a real pseudo-terminal, real stores."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from ..tree.conftest import rsync_diff
from .conftest import VT, vt


def _make(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


def _world(tmp_path, env):
    """A store S with an archive base.vt, a peer store P holding a tree, local files."""
    t = str(tmp_path)
    _make(f"{t}/base", {"docs/readme.txt": b"read me\n", "keep.bin": os.urandom(70_000)})
    _make(f"{t}/local", {"big.bin": os.urandom(3_000_000), "sub/small": b"small\n"})
    _make(f"{t}/peersrc", {"sub/deep/x": os.urandom(200_000), "sub/y": b"y\n", "other": b"o"})
    _make(t, {"bound.txt": b"bound by ref\n"})
    os.makedirs(f"{t}/gets")
    for s in ("S", "P"):
        vt("-q", "-S", f"{t}/{s}", "init", env=env)
    vt("-q", "-S", f"{t}/S", "pack", f"{t}/base", env=env)
    bound = vt("-S", f"{t}/S", "save", "-F", f"{t}/bound.txt", env=env).stdout.decode().strip()
    peer = vt("-S", f"{t}/P", "save", f"{t}/peersrc", env=env).stdout.decode().strip()
    return t, bound, peer


def _expected(t: str) -> str:
    """The tree the session should leave: base + local, bound.txt, the peer's sub in docs."""
    exp = f"{t}/expected"
    subprocess.run(["cp", "-a", f"{t}/base", exp], check=True)
    subprocess.run(["cp", "-a", f"{t}/local", f"{exp}/docs/local"], check=True)
    subprocess.run(["cp", "-a", f"{t}/bound.txt", f"{exp}/docs/bound.txt"], check=True)
    subprocess.run(["cp", "-a", f"{t}/peersrc/sub", f"{exp}/docs/fromPeer"], check=True)
    st = os.stat(f"{t}/base/docs")  # entries added in a tree do not touch its directory
    os.utime(f"{exp}/docs", ns=(st.st_atime_ns, st.st_mtime_ns))
    return exp


def _same_but_times(a: str, b: str) -> list[str]:
    """rsync's itemized differences of two trees in content, type, mode, owner, links."""
    r = subprocess.run(
        ["rsync", "-rlpgoDHAXc", "-n", "--itemize-changes", f"{a}/", f"{b}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [x for x in r.stdout.splitlines() if x.strip()]


def _unpacked(t: str, env, name: str) -> str:
    out = f"{t}/{name}"
    vt("-q", "-S", f"{t}/S", "unpack", f"{t}/base.vt", out, env=env)
    return out


def test_session_through_a_terminal(tmp_path, env, terminal):
    t, bound, peer = _world(tmp_path, env)
    term = terminal([*VT, "-S", f"{t}/S", "ftp", f"{t}/base.vt"], env=env, cwd=t)
    term.expect(r"vt:/> ")
    term.line("cd docs")
    term.expect(r"vt:/docs> ")
    term.line("put local")
    term.expect(r"vt:/docs> ")
    term.line(f"bind bound.txt '{bound}'")
    term.expect(r"vt:/docs> ")
    term.line(f"peer {t}/P")
    term.expect(r"vt:/docs> ")
    term.line(f"pull '{peer}/sub' fromPeer")
    term.expect(r"pulled .*\n.*vt:/docs> ")
    term.line("cd nowhere")  # an error is one line; the shell goes on
    term.expect(r"vt ftp: /docs/nowhere: no such file or directory\r?\n")
    term.expect(r"vt:/docs> ")
    term.line("ls -l")
    term.expect(r"-rw-r--r-- .* bound.txt")
    term.expect(r"vt:/docs> ")
    term.line("cd /")
    term.expect(r"vt:/> ")
    term.line("lcd gets")
    term.expect(r"vt:/> ")
    term.line("get docs/local/big.bin")
    term.expect(r"-> big.bin")
    term.line("quit")
    term.expect(r"recorded a new state")
    assert term.wait() == 0
    with open(f"{t}/gets/big.bin", "rb") as a, open(f"{t}/local/big.bin", "rb") as b:
        assert a.read() == b.read()
    assert rsync_diff(_expected(t), _unpacked(t, env, "out")) == []
    assert len(vt("-S", f"{t}/S", "log", f"{t}/base.vt", env=env).stdout.splitlines()) == 2


def test_quit_without_change_records_nothing(tmp_path, env, terminal):
    t, _, _ = _world(tmp_path, env)
    term = terminal([*VT, "-S", f"{t}/S", "ftp", f"{t}/base.vt"], env=env, cwd=t)
    term.expect(r"vt:/> ")
    term.line("ls")
    term.expect(r"keep.bin")
    term.expect(r"vt:/> ")
    term.send("\x04")  # Ctrl-D quits
    term.expect(r"no change, no state recorded")
    assert term.wait() == 0
    assert len(vt("-S", f"{t}/S", "log", f"{t}/base.vt", env=env).stdout.splitlines()) == 1


def test_history_completion_and_ctrl_c(tmp_path, env, terminal):
    t, _, _ = _world(tmp_path, env)
    hist = f"{t}/hist"
    argv = [*VT, "-S", f"{t}/S", "ftp", "--history", hist, f"{t}/base.vt"]
    term = terminal(argv, env=env, cwd=t)
    term.expect(r"vt:/> ")
    term.send("cd do\t")  # remote completion: docs is a directory of the tree
    term.expect(r"cd docs/")
    term.send("\r")
    term.expect(r"vt:/docs> ")
    term.send("put lo\t")  # local completion: ./local
    term.expect(r"put local/")
    time.sleep(0.3)  # let readline settle after the completion
    term.send("\x03")  # Ctrl-C drops the line, not the shell
    term.expect(r"\^C")
    term.expect(r"vt:/docs> ")
    term.line("inspect readme.txt")
    term.expect(r"size: 8")
    term.line("!sleep 60")  # Ctrl-C interrupts the running command, not the shell
    time.sleep(0.5)
    t0 = time.monotonic()
    term.send("\x03")
    term.expect(r"vt ftp: interrupted", timeout=10)
    term.expect(r"vt:/docs> ")
    assert time.monotonic() - t0 < 10
    term.line("quit")
    assert term.wait() == 0
    assert "inspect readme.txt" in open(hist).read()
    # a new session: the up arrow brings the last command back
    term = terminal(argv, env=env, cwd=t)
    term.expect(r"vt:/> ")
    term.line("cd docs")
    term.expect(r"vt:/docs> ")
    term.send("\x1b[A" * 4)  # up: "cd docs", then the last session's quit, !sleep, inspect
    term.expect(r"inspect readme.txt")
    term.send("\r")
    term.expect(r"size: 8")
    term.line("quit")
    assert term.wait() == 0


SCRIPT = [
    "cd docs",
    "put local",
    "clone local/big.bin copy.bin",
    "mv copy.bin /moved.bin",
    "rm -r local/sub",
    "link ../keep.bin docs-link",
    "crop /moved.bin 100 2000100",
]


def test_same_script_by_c_stdin_and_terminal(tmp_path, env, terminal):
    t, bound, peer = _world(tmp_path, env)
    script = SCRIPT + [f"bind b.txt '{bound}'", f"peer {t}/P", f"pull '{peer}/sub' p"]
    log = vt("-S", f"{t}/S", "log", "-v", f"{t}/base.vt", env=env).stdout.decode()
    ref = next(w for w in log.split() if w.startswith("D{"))
    base = ["-S", f"{t}/S", "ftp", ref]
    by_c = vt(*base, "-c", "; ".join(script), env=env, cwd=t).stdout.decode().split()[-1]
    by_stdin = (
        vt(*base, input="\n".join(script).encode(), env=env, cwd=t).stdout.decode().split()[-1]
    )
    term = terminal([*VT, *base], env=env, cwd=t)
    for line in script:
        term.expect(r"vt:/\S*> ")
        term.line(line)
    term.expect(r"vt:/\S*> ")
    term.line("quit")
    m = term.expect(r"(D\{.*\})\r?\n")
    assert term.wait() == 0
    refs = [by_c, by_stdin, m.group(1)]
    assert all(r.startswith("D{") and r != ref for r in refs)
    # crop and link stamp the time of the edit: the three trees agree in all else
    outs = []
    for i, r in enumerate(refs):
        outs.append(f"{t}/scripted{i}")
        vt("-q", "-S", f"{t}/S", "unpack", r, outs[-1], env=env)
    for other in outs[1:]:
        assert _same_but_times(outs[0], other) == []
    out = outs[0]
    with open(f"{t}/local/big.bin", "rb") as f:
        assert open(f"{out}/moved.bin", "rb").read() == f.read()[100:2000100]
    assert os.readlink(f"{out}/docs/docs-link") == "../keep.bin"
    assert not os.path.exists(f"{out}/docs/local/sub")
    assert open(f"{out}/docs/p/y", "rb").read() == b"y\n"


def test_script_stops_at_first_error_and_records_nothing(tmp_path, env):
    t, _, _ = _world(tmp_path, env)
    r = vt("-S", f"{t}/S", "ftp", f"{t}/base.vt", "-c", "mkdir new; rm nope; mkdir x", check=False)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "vt ftp: /nope: no such file or directory",
        "vt ftp: script stopped at an error; nothing recorded",
    ]
    assert len(vt("-S", f"{t}/S", "log", f"{t}/base.vt", env=env).stdout.splitlines()) == 1
    r = vt("-S", f"{t}/S", "ftp", f"{t}/base.vt", "-c", "frobnicate", check=False)
    assert r.returncode == 1 and "unknown command 'frobnicate'" in r.stderr.decode()
    r = vt("-S", f"{t}/S", "ftp", f"{t}/base.vt", "-c", f"peer unix:{t}/dead.sock", check=False)
    assert r.returncode == 1 and len(r.stderr.decode().splitlines()) == 2
    shutil.rmtree(f"{t}/gets")


def test_a_new_archive_needs_create(tmp_path, env):
    t, _, _ = _world(tmp_path, env)
    r = vt("-S", f"{t}/S", "ftp", f"{t}/new.vt", "-c", "mkdir a", check=False)
    assert r.returncode == 1 and r.stderr.decode().strip().endswith("(--create starts one)")
    assert not os.path.exists(f"{t}/new.vt")
    vt("-S", f"{t}/S", "ftp", "--create", f"{t}/new.vt", "-c", "put local", env=env, cwd=t)
    out = f"{t}/newout"
    vt("-q", "-S", f"{t}/S", "unpack", f"{t}/new.vt", out, env=env)
    assert rsync_diff(f"{t}/local", f"{out}/local") == []


def test_help_lists_and_explains(tmp_path, env):
    out = vt("-q", "-S", f"{tmp_path}/S", "ftp", "-c", "help; help PUT; ? pull", env=env)
    text = out.stdout.decode()
    for word in ("ls [-l] [PATH]", "bind PATH REF", "!CMD", "merge THEIRS [BASE]", "quit"):
        assert word in text
    assert "put LOCAL [PATH]: store a local file or tree" in text
    assert "pull SRC [PATH]: copy the tree SRC names in the peer" in text
    r = vt("-S", f"{tmp_path}/S", "ftp", "-c", "help nosuch", env=env, check=False)
    assert r.returncode == 1 and "no command 'nosuch'" in r.stderr.decode()
