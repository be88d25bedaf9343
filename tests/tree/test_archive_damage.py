"""Archives under damage, as a user meets it: real `.vt` files written by real
`vt pack` runs, then bytes flipped, lines of garbage, NULs or invalid UTF-8
inserted, the file cut in the middle of a line.  `vt log`, `vt ls` and
`vt unpack` go on with a warning naming the line; `vt fsck X.vt` says damaged
(exit 1); `vt fsck --repair X.vt` leaves a clean archive and the damaged lines
in X.vt.damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from vtstore.archive import Archive, ArchiveEntry
from vtstore.tree.dirent import T_DIR, Dirent


def vt(env, *args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args], capture_output=True, env=env
    )
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    return r


@pytest.fixture
def packed(tmp_path, vt_env):
    """A datadir and src.vt with three states: state i adds file v{i}."""
    env = dict(vt_env, VT_DIR=str(tmp_path / "store"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "big").write_bytes(os.urandom(1 << 20))
    for i in range(3):
        (src / f"v{i}").write_text(f"version {i}\n")
        vt(env, "-q", "pack", str(src))
    path = tmp_path / "src.vt"
    assert len(path.read_bytes().splitlines()) == 3
    return env, path


def _lines(path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path, lines: list[bytes], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(x + b"\n" for x in lines) + tail)


def flip_middle(path):
    """Flip one bit in the middle line's `"dirent"` key: the line no longer has one."""
    lines = _lines(path)
    i = lines[1].index(b'"dirent"') + 3
    lines[1] = lines[1][:i] + bytes([lines[1][i] ^ 0x01]) + lines[1][i + 1 :]
    _write(path, lines)
    return 2, ["v0", "v1", "v2"], 2


def flip_brace(path):
    """Flip a bit of a brace inside the middle line's dirent transcription."""
    lines = _lines(path)
    i = lines[1].index(b"block:B{") + 7
    lines[1] = lines[1][:i] + bytes([lines[1][i] ^ 0x40]) + lines[1][i + 1 :]
    _write(path, lines)
    return 2, ["v0", "v1", "v2"], 2


def insert_garbage(path):
    lines = _lines(path)
    junk = bytes(b for b in os.urandom(300) if b != 0x0A)
    lines.insert(1, junk)
    _write(path, lines)
    return 2, ["v0", "v1", "v2"], 3


def insert_nuls(path):
    lines = _lines(path)
    lines.insert(2, b"\0" * 4096)
    _write(path, lines)
    return 3, ["v0", "v1", "v2"], 3


def insert_bad_utf8(path):
    lines = _lines(path)
    lines.insert(1, lines[0][:-3] + b"\xff\xfe\xc3" + lines[0][-3:])
    _write(path, lines)
    return 2, ["v0", "v1", "v2"], 3


def huge_when(path):
    lines = _lines(path)
    d = json.loads(lines[1])
    lines[1] = lines[1].replace(str(d["when"]).encode(), b"9" * 5000, 1)
    _write(path, lines)
    return 2, ["v0", "v1", "v2"], 2


def cut_last_line(path):
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: start + (len(data) - start) // 2])
    return 3, ["v0", "v1"], 2


def cut_in_the_middle(path):
    """The file cut in the middle of its second line (a copy or a disk cut short)."""
    lines = _lines(path)
    path.write_bytes(lines[0] + b"\n" + lines[1][: len(lines[1]) // 2])
    return 2, ["v0"], 1


DAMAGE = [
    flip_middle,
    flip_brace,
    insert_garbage,
    insert_nuls,
    insert_bad_utf8,
    huge_when,
    cut_last_line,
    cut_in_the_middle,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damaged_archive_still_restores_and_fsck_repairs(packed, tmp_path, damage):
    env, path = packed
    bad_line, latest_files, good = damage(path)
    before = path.read_bytes()

    r = vt(env, "log", str(path))
    assert f"src.vt line {bad_line}: ".encode() in r.stderr, r.stderr.decode()
    assert len(r.stdout.splitlines()) == good
    r = vt(env, "ls", str(path))
    assert sorted(r.stdout.decode().split()) == sorted(["sub/", *latest_files])
    assert f"line {bad_line}".encode() in r.stderr
    out = tmp_path / "out"
    vt(env, "-q", "unpack", str(path), str(out))
    assert sorted(os.listdir(out)) == sorted(["sub", *latest_files])
    assert (out / "sub" / "big").read_bytes() == (tmp_path / "src" / "sub" / "big").read_bytes()

    r = vt(env, "fsck", str(path), check=False)
    assert r.returncode == 1, r.stdout.decode()
    assert f"damage: {path} line {bad_line}: ".encode() in r.stdout, r.stdout.decode()
    assert b": ok;" not in r.stdout
    assert path.read_bytes() == before  # fsck without --repair changes nothing

    r = vt(env, "fsck", "--repair", str(path), check=False)
    assert r.returncode == 1 and b"repaired: 1 line(s) set aside" in r.stdout, r.stdout
    r = vt(env, "fsck", str(path))
    assert b"src.vt: ok;" in r.stdout
    r = vt(env, "log", "--brief", str(path))
    assert r.stderr == b"" and len(r.stdout.splitlines()) == good
    aside = (tmp_path / "src.vt.damaged").read_bytes()
    assert f"# {path} line {bad_line}: ".encode() in aside
    # every octet of the archive is in one of the two files
    assert len(aside) > len(before) - len(path.read_bytes())

    # and packing goes on from the clean archive
    vt(env, "-q", "pack", str(tmp_path / "src"))
    assert len(list(Archive(path).entries())) == good + 1


def test_fsck_reports_states_whose_blocks_are_missing(packed, tmp_path):
    env, path = packed
    gone = 'D{name:"src",block:B{hash:blake3:' + "ab" * 32 + ",span:300}}"
    with open(path, "a") as f:
        f.write(json.dumps({"when": 1.5e9, "dirent": gone}) + "\n")
    r = vt(env, "fsck", str(path), check=False)
    assert r.returncode == 1
    assert f"damage: {path} line 4 (2017-07-14T02:40:00.000000Z): src: missing block".encode() in (
        r.stdout
    ), r.stdout.decode()
    # vt log lists every state, the unreadable one without totals, and says so
    r = vt(env, "log", str(path), check=False)
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 4
    assert b"missing block" in r.stderr and b"could not be read" in r.stderr
    # missing blocks are reported, never repaired away: the line stays
    r = vt(env, "fsck", "--repair", str(path), check=False)
    assert r.returncode == 1 and len(_lines(path)) == 4
    assert not (tmp_path / "src.vt.damaged").exists()


def test_fsck_on_a_clean_archive_checks_every_state(packed):
    env, path = packed
    r = vt(env, "fsck", str(path))
    assert b"src.vt: ok; 3 states" in r.stdout, r.stdout
    r = vt(env, "fsck", str(path) + "/sub")
    assert b"ok; 3 states" in r.stdout


@pytest.mark.slow
def test_large_damaged_archive(packed, tmp_path):
    """50,000 states with a damaged line every 1,000: reading, checking every
    state (each state's tree is walked once, shared subtrees skipped) and
    repairing stay fast."""
    env, path = packed
    last = Archive(path).last()
    n = 50_000
    lines = []
    for i in range(n):
        if i % 1000 == 999:
            lines.append(b'{"when": 1, "dirent": "D{name:\\"x\\",block:B{hash:blake3:zz}}"}\n')
            continue
        d = Dirent(T_DIR, name=f"s{i % 7}", block=last.dirent.block, meta=last.dirent.meta)
        lines.append(ArchiveEntry(1e9 + i, d).to_line().encode())
    path.write_bytes(b"".join(lines))
    assert path.stat().st_size > 10_000_000

    t0 = time.perf_counter()
    states = list(Archive(path).entries())
    t_read = time.perf_counter() - t0
    assert len(states) == n - 50

    t0 = time.perf_counter()
    r = vt(env, "fsck", str(path), check=False)
    t_fsck = time.perf_counter() - t0
    assert r.returncode == 1 and r.stdout.count(b"damage: ") == 50
    assert f"{n - 50} states".encode() in r.stdout

    t0 = time.perf_counter()
    r = vt(env, "fsck", "--repair", str(path), check=False)
    t_repair = time.perf_counter() - t0
    assert b"repaired: 50 line(s)" in r.stdout
    assert vt(env, "fsck", str(path)).returncode == 0
    print(
        f"\n50,000-line archive: read {t_read:.2f} s, fsck {t_fsck:.2f} s, repair {t_repair:.2f} s"
    )
    assert t_read < 20 and t_fsck < 60 and t_repair < 60


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_repair_without_write_permission_is_one_clear_error(packed):
    """Another user may check root's archive but not rewrite it: one line on
    stderr, the archive untouched, nothing left beside it."""
    env, path = packed
    insert_garbage(path)
    before = path.read_bytes()
    # pytest's own temporary directories are root's alone: use one anyone may enter
    place = tempfile.mkdtemp(prefix="vt-archive-")
    try:
        os.chmod(place, 0o755)
        theirs = os.path.join(place, "src.vt")
        shutil.copy(path, theirs)
        env = dict(env, HOME=place)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        vtcmd = [sys.executable, "-m", "vtstore.cli.main", "-S", "memory:", "fsck"]
        r = subprocess.run([*cmd, *vtcmd, theirs], capture_output=True, env=env)
        assert r.returncode == 1 and f"damage: {theirs} line 2: ".encode() in r.stdout, r
        r = subprocess.run([*cmd, *vtcmd, "--repair", theirs], capture_output=True, env=env)
        assert r.returncode == 1 and b"Traceback" not in r.stderr
        assert r.stderr.count(b"\n") == 1 and b"Permission denied" in r.stderr, r.stderr
        with open(theirs, "rb") as f:
            assert f.read() == before
        assert os.listdir(place) == ["src.vt"]
    finally:
        shutil.rmtree(place)
