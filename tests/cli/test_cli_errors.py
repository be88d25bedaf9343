"""The CLI's smaller failures: a reader that goes away (`vt ... | head`), a config
file named by `$VT_CONFIG` that is not there, `-v` on an expected error, and a
table of bad input for every subcommand.  Every run is a real `vt` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VT = [sys.executable, "-m", "vtstore.cli.main"]
# root without the capabilities that bypass file modes: a mode-000 file is
# unreadable to it, as a root-only file is to another user (the interpreter lives
# under /root, which uid 65534 cannot enter, so `setpriv --reuid` cannot run vt)
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture
def env(tmp_path):
    """An environment of our own: home, base directory, no ambient store or config."""
    home = tmp_path / "home"
    home.mkdir()
    e = dict(os.environ, HOME=str(home), VT_DIR=str(tmp_path / "vt"))
    for v in ("VT_CONFIG", "VT_STORE", "VT_HASHCLASS", "XDG_CACHE_HOME"):
        e.pop(v, None)
    return e


def vt(*args, env, **kw):
    return subprocess.run(
        [*VT, *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, **kw
    )


def ok(*args, env, **kw) -> str:
    r = vt(*args, env=env, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout


def one_line(r, cmd: str) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vt {cmd}: "), r.stderr
    return lines[0]


# -- a reader that goes away ---------------------------------------------------


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """A store with a 4 MB file and an archive of 3,000 files packed twice: every
    listing below is far larger than a pipe's 64 KiB buffer."""
    tmp = tmp_path_factory.mktemp("piped")
    home = tmp / "home"
    home.mkdir()
    e = dict(os.environ, HOME=str(home), VT_DIR=str(tmp / "vt"))
    for v in ("VT_CONFIG", "VT_STORE", "VT_HASHCLASS"):
        e.pop(v, None)
    big = tmp / "big"
    big.write_bytes(os.urandom(4 << 20))
    tree = tmp / "tree"
    tree.mkdir()
    for i in range(3000):
        (tree / f"file-with-a-longish-name-{i:05}").write_text(str(i))
    ref = ok("-q", "save", str(big), env=e).strip()
    ok("-q", "pack", str(tree), env=e)
    (tree / "another").write_text("x")
    ok("-q", "pack", str(tree), env=e)
    # a long history: the two states again and again, later each time
    import json

    states = [json.loads(x) for x in (tmp / "tree.vt").read_text().splitlines()]
    with open(tmp / "long.vt", "w") as f:
        for i in range(2000):
            d = dict(states[i % 2], when=states[0]["when"] + i)
            f.write(json.dumps(d) + "\n")
    return tmp, e, ref


def _closed_pipe_run(argv, env, cwd):
    """Run vt with stdout a pipe whose reading end is closed before vt starts:
    its first write meets EPIPE, whatever the size of its output."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(
            [*VT, *argv], stdout=w, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
    finally:
        os.close(w)


def _pipe_cases(ref):
    return [
        ["cat", ref],
        ["ls", "tree.vt"],
        ["ls", "-l", "tree.vt"],
        ["log", "long.vt"],
        ["scan", "big"],
        ["scan", "--json", "big"],
        ["info"],
        ["config"],
        ["export", "tree.vt"],
    ]


@pytest.mark.parametrize("i", range(9))
def test_closed_stdout_exits_141_quietly(piped, i):
    tmp, env, ref = piped
    argv = _pipe_cases(ref)[i]
    r = _closed_pipe_run(argv, env, tmp)
    assert (r.returncode, r.stderr) == (141, ""), argv


@pytest.mark.parametrize(
    "argv, head",
    [
        (["cat", "REF"], ["head", "-c", "10"]),
        (["ls", "tree.vt"], ["head", "-1"]),
        (["log", "long.vt"], ["head", "-1"]),
        (["scan", "TREE"], ["head", "-1"]),
    ],
    ids=lambda a: " ".join(a),
)
def test_real_pipeline_into_head(piped, argv, head):
    """`vt ... | head`: head reads a little and exits while vt is still writing."""
    tmp, env, ref = piped
    files = sorted(str(p) for p in (tmp / "tree").iterdir())
    argv = [x for a in argv for x in ({"REF": [ref], "TREE": files}.get(a) or [a])]
    p1 = subprocess.Popen(
        [*VT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp
    )
    p2 = subprocess.Popen(head, stdin=p1.stdout, stdout=subprocess.PIPE)
    p1.stdout.close()  # only head holds the reading end now
    out, _ = p2.communicate(timeout=60)
    err = p1.stderr.read().decode()
    rc = p1.wait(timeout=60)
    assert out
    assert (rc, err) == (141, ""), argv[:3]


# -- configuration named but absent --------------------------------------------


def test_vt_config_naming_a_missing_file_is_an_error(env, tmp_path):
    r = vt("info", env=dict(env, VT_CONFIG=str(tmp_path / "missing")))
    assert r.returncode == 2
    assert "no such config file" in one_line(r, "info")
    # exactly as -c
    r = vt("-c", str(tmp_path / "missing"), "info", env=env)
    assert r.returncode == 2 and "no such config file" in one_line(r, "info")
    # no file at the default place: the built-in defaults, no error
    assert not (Path(env["HOME"]) / ".vtrc").exists()
    ok("info", env=env)
    # and vt init writes the file $VT_CONFIG names
    ok("init", env=dict(env, VT_CONFIG=str(tmp_path / "vtrc")))
    assert (tmp_path / "vtrc").exists()


# -- -v on an expected error -----------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root's capabilities with setpriv")
def test_verbose_unreadable_file_is_one_line_and_vv_shows_the_traceback(env, tmp_path):
    f = tmp_path / "secret"
    f.write_text("secret")
    f.chmod(0)
    argv = [*NO_DAC, *VT]
    for flags in ([], ["-v"]):
        r = subprocess.run(
            [*argv, *flags, "-S", "memory:", "save", str(f)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert r.returncode == 1
        assert "Permission denied" in one_line(r, "save"), flags
    r = subprocess.run(
        [*argv, "-vv", "-S", "memory:", "save", str(f)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "PermissionError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("vt save: ")


def test_verbose_bad_ref_is_one_line(env, tmp_path):
    r = vt("-v", "-S", str(tmp_path / "s"), "cat", "B{", env=env)
    assert r.returncode in (1, 2)
    one_line(r, "cat")


# -- bad input for every subcommand ------------------------------------------------

HASH0 = "blake3:" + "0" * 64
# (argv, what the line must say).  Paths are relative to a directory holding:
# afile (a small file), adir/ (an empty directory), dir.vt/ (a directory named
# like an archive), rand.vtd (random octets), text.vt (a line that is no state).
BAD = [
    (["init", "extra"], None),  # argparse: usage and exit 2
    (["-c", "adir", "init"], "is a directory"),
    (["-c", "", "info"], "empty config file name"),
    (["-c", "rand.vtd", "info"], "not UTF-8"),
    (["config", "nosuch"], "no clause [nosuch]"),
    (["-S", "", "info"], "empty store spec"),
    (["-S", "bogus:x", "info"], "unrecognised store spec"),
    (["-S", "afile", "info"], "unrecognised store spec"),
    (["-S", "./afile", "info"], "not a directory"),
    (["-S", "file:rand.vtd", "info"], "not a vtstore data file"),
    (["-S", "file:adir", "info"], None),  # FileStore: "No such device", no path
    (["-S", "proxy(", "info"], "proxy"),
    (["-S", "proxy(read=)", "info"], "store spec"),
    (["-S", "[nosuch]", "info"], "no clause [nosuch]"),
    (["-S", "unix:/nonexistent/vt.sock", "info"], "/nonexistent/vt.sock"),
    (["-S", "|false", "info"], "|false"),
    (["-S", "tcp:127.0.0.1:0", "info"], "port"),
    (["-C", "", "info"], "empty store spec"),
    (["-C", "./afile", "info"], "not a directory"),
    (["save", "/nonexistent"], "/nonexistent"),
    (["save", ""], "PATH: an empty argument"),
    (["-S", "file:rand.vtd", "save", "afile"], "not a vtstore data file"),
    (["cat", ""], "an empty argument"),
    (["cat", "B{"], None),
    (["cat", f"B{{hash:{HASH0},span:5}}"], "missing block"),
    (["cat", "I{hash:blake3:zz,span:1}"], None),
    (["cat", "dir.vt"], "Is a directory"),
    (["cat", "afile"], "not an archive"),
    (["cat", 'D{name:"a"}'], "not a file"),
    (["ls", ""], "an empty argument"),
    (["ls", "dir.vt"], "Is a directory"),
    (["ls", "/nonexistent.vt"], None),
    (["log", "dir.vt"], "Is a directory"),
    (["log", "afile"], "not an archive"),
    (["pack", "/nonexistent"], None),
    (["pack", ""], "DIR: an empty argument"),
    (["pack", "afile"], None),
    (["unpack", "dir.vt"], "Is a directory"),
    (["unpack", "/nonexistent.vt", "out"], None),
    (["import", "/nonexistent", "x.vt"], None),
    (["import", "adir", "dir.vt"], "Is a directory"),
    (["export", "dir.vt"], "Is a directory"),
    (["export", "/nonexistent.vt"], None),
    (["fsck", "dir.vt"], "Is a directory"),
    (["fsck", "/nonexistent"], None),
    (["-S", "file:rand.vtd", "fsck"], "not a vtstore data file"),
    (["-S", "memory:", "reindex"], "no index"),
    (["scan", "/nonexistent"], None),
    (["scan", "adir"], None),
    (["scan", ""], "an empty argument"),
    (["mount", "/nonexistent.vt", "adir"], None),
    (["mount", "afile", "/nonexistent"], "/nonexistent"),
    (["umount", "/nonexistent"], "not a mount point"),
    (["umount", "adir"], "not a mount point"),
    (["serve", "/nonexistent/x.sock"], "/nonexistent/x.sock"),
    (["serve", "127.0.0.1:1", "x:bogus:"], "unrecognised store spec"),
    (["serve", "127.0.0.1:1", "nocolon"], "NAME:STORESPEC"),
    (["publish", "/nonexistent"], None),
    (["publish", ""], "an empty argument"),
    (["umount", ""], "MOUNTPOINT: an empty argument"),  # was: the current directory
    (["import", "afile", ""], "X.vt: an empty argument"),
    (["push", "x"], "required: DST"),
    (["pull", "x"], "required: DST"),
    (["httpd", "127.0.0.1:1", "x:bogus:"], "unrecognised store spec"),
    (["httpd", "127.0.0.1:1", "nocolon"], "NAME:STORESPEC"),
    (["ftp", "x.vt"], None),
    (["benchmark", "nosuch"], None),
    (["-H", "md5", "info"], "md5"),
    (["-H", "", "info"], None),
]


@pytest.fixture
def junk(tmp_path):
    (tmp_path / "afile").write_text("a small file\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "dir.vt").mkdir()
    (tmp_path / "rand.vtd").write_bytes(os.urandom(3000))
    (tmp_path / "text.vt").write_text("not a state\n")
    return tmp_path


@pytest.mark.parametrize(
    "argv, needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else ""
)
def test_bad_input_is_one_line_never_a_traceback(junk, env, argv, needle):
    env = dict(env, VT_DIR=str(junk / "vt"))
    r = subprocess.run(
        [*VT, *argv], capture_output=True, text=True, env=env, cwd=junk,
        stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    if lines and lines[0].startswith("usage: "):  # argparse: usage, then one error line
        assert r.returncode == 2 and lines[-1].startswith("vt"), r.stderr
        assert not needle or needle in lines[-1], lines[-1]
        return
    cmd = next(a for a in argv if a in _COMMANDS)
    assert len(lines) == 1 and lines[0].startswith(f"vt {cmd}: "), r.stderr
    if needle:
        assert needle in lines[0], lines[0]


_COMMANDS = {c for _, c, _ in __import__("vtstore.cli.main").cli.main.COMMANDS}


def test_damaged_archive_is_a_warning_and_one_error(junk, env):
    """A .vt file of random octets: the command fails with one error line; the
    lines before it are warnings about the damaged states (said once each by the
    archive reader), never a traceback."""
    (junk / "garbage.vt").write_bytes(os.urandom(3000))
    for cmd in ("cat", "ls", "export", "unpack"):
        r = vt(cmd, str(junk / "garbage.vt"), env=dict(env, VT_DIR=str(junk / "vt")))
        assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
        lines = r.stderr.splitlines()
        assert lines[-1].startswith(f"vt {cmd}: ") and "no states" in lines[-1]
        assert all(x.startswith("vt: ") for x in lines[:-1]), lines


def test_closed_stdout_is_one_line_and_closed_stderr_keeps_stdout_clean(piped):
    """`vt cat REF >&-`: an error, not a traceback; `vt cat B{ 2>&-`: the error
    line goes nowhere, not into stdout (print(file=None) would write there)."""
    tmp, env, ref = piped
    base = [*VT, "cat"]
    r = subprocess.run([*base, ref], stdout=None, stderr=subprocess.PIPE, text=True, env=env,
                       cwd=tmp, close_fds=True, pass_fds=(), preexec_fn=lambda: os.close(1))  # fmt: skip
    assert r.returncode == 1 and r.stderr == "vt cat: standard output is closed\n", r.stderr
    r = subprocess.run([*base, "B{"], stdout=subprocess.PIPE, stderr=None, text=True, env=env,
                       cwd=tmp, preexec_fn=lambda: os.close(2))  # fmt: skip
    assert r.returncode in (1, 2) and r.stdout == ""
