"""`vt push` and `vt pull` end to end: real datadirs, real servers (unix:,
tcp: with keys, a `|command` stdio server), killed processes, corrupt bytes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from vtstore.archive import Archive
from vtstore.stores.datadir import DataDir
from vtstore.tree.check import check
from vtstore.tree.dir import walk

from ..net.conftest import SRC as SRC_DIR
from ..net.conftest import ServerProcess, stdio_spec, subprocess_env
from ..net.test_ssh import sshd  # noqa: F401 (a fixture)
from .conftest import make_tree


def vt(*args, env=None, check_rc=True, timeout=300):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args],
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        timeout=timeout,
    )
    assert "Traceback" not in r.stderr, r.stderr
    if check_rc:
        assert r.returncode == 0, f"vt {args} -> {r.returncode}: {r.stderr}"
    return r


def sent(r) -> int:
    m = re.search(r"(?:sent|would send) (\d+) blocks", r.stdout)
    assert m, r.stdout
    return int(m.group(1))


@pytest.fixture
def packed(tmp_path):
    """A datadir `s1` holding the archive `s1/t.vt` of a 150-file tree; yields (s1, tree)."""
    tree = tmp_path / "t"
    make_tree(tree, files=150, size=30_000)
    vt("-q", "-S", str(tmp_path / "s1"), "pack", str(tree), "-a", str(tmp_path / "s1" / "t.vt"))
    return tmp_path / "s1", tree


@pytest.fixture
def servers(tmp_path):
    procs = []

    def make(store_spec, address, *extra):
        p = ServerProcess(tmp_path, store_spec, address, *extra)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()


def states(path) -> list:
    return [(e.when, str(e.dirent)) for e in Archive(str(path)).entries()]


def test_push_pull_between_datadirs_archive_by_state(packed, tmp_path):
    s1, tree = packed
    s2 = tmp_path / "s2"
    r = vt("push", str(s1), str(s2), "[default]t")
    assert sent(r) > 150 and "appended 1 states" in r.stdout
    assert states(s2 / "t.vt") == states(s1 / "t.vt")
    with DataDir(s2, readonly=True) as dst:
        e = Archive(str(s2 / "t.vt")).last()
        assert check(e.dirent, dst).problems == []
        assert e.store_id == dst.meta["uuid"]  # the destination's identity, not the source's
    # again: nothing sent, no duplicate state; a dry run says the same
    r = vt("push", str(s1), str(s2), str(s1 / "t.vt"))
    assert sent(r) == 0 and "appended 0 states" in r.stdout and "1 already there" in r.stdout
    assert len(states(s2 / "t.vt")) == 1
    # a new state of the source: only what changed goes, the state is appended
    (tree / "new").write_bytes(os.urandom(100_000))
    vt("-q", "-S", str(s1), "pack", str(tree), "-a", str(s1 / "t.vt"))
    r = vt("push", "-n", str(s1), str(s2), "[default]t")
    n_dry = sent(r)
    assert 0 < n_dry < 40 and "would append 1 states" in r.stdout
    assert len(states(s2 / "t.vt")) == 1
    r = vt("push", str(s1), str(s2), "[default]t")
    assert sent(r) == n_dry
    assert states(s2 / "t.vt") == states(s1 / "t.vt")
    # pull the other way into a third store, default store given as '-'
    s3 = tmp_path / "s3"
    r = vt("-S", str(s3), "pull", str(s2), "-", "[default]t")
    assert states(s3 / "t.vt") == states(s1 / "t.vt")
    r = vt("-S", str(s3), "fsck", "[default]t", check_rc=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_archives_from_two_sources_merge_by_time_without_duplicates(tmp_path):
    a, b, dst = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
    for name in "ab":
        make_tree(tmp_path / f"tree{name}", files=5, seed=ord(name))
    # states alternate in time: a1 < b1 < a2
    vt("-q", "-S", str(a), "pack", str(tmp_path / "treea"), "-a", str(a / "x.vt"))
    time.sleep(0.05)
    vt("-q", "-S", str(b), "pack", str(tmp_path / "treeb"), "-a", str(b / "x.vt"))
    time.sleep(0.05)
    (tmp_path / "treea" / "more").write_text("more")
    vt("-q", "-S", str(a), "pack", str(tmp_path / "treea"), "-a", str(a / "x.vt"))
    vt("push", str(b), str(dst), "[default]x")
    r = vt("push", str(a), str(dst), "[default]x")
    # a1 is older than b1 (already there): not appended; a2 is
    assert "appended 1 states" in r.stdout and "1 older" in r.stdout
    got = states(dst / "x.vt")
    assert got == sorted(got) and len(got) == len(set(got)) == 2
    assert got == [states(b / "x.vt")[0], states(a / "x.vt")[1]]
    vt("push", str(a), str(dst), "[default]x")
    vt("push", str(b), str(dst), "[default]x")
    assert states(dst / "x.vt") == got


def test_push_to_unix_tcp_with_keys_and_stdio_servers(packed, tmp_path, servers):
    s1, tree = packed
    env = subprocess_env()
    env["HOME"] = str(tmp_path / "home")
    ring, wkey = tmp_path / "ring", tmp_path / "w.key"
    vt("key", "new", "w", "--auth-keys", str(ring), "--key-file", str(wkey), env=env)
    uspec = servers(str(tmp_path / "u"), f"unix:{tmp_path}/u.sock").start()
    tspec = servers(str(tmp_path / "k"), "127.0.0.1:0", "--auth-keys", str(ring)).start()
    ref = vt("-S", str(s1), "save", str(tree)).stdout.strip()
    total = None
    for spec, extra in [
        (uspec, ()),
        (tspec, ("--key-file", str(wkey))),
        (stdio_spec(str(tmp_path / "p")), ()),
    ]:
        r = vt(*extra, "push", str(s1), spec, ref, env=env)
        total = total or sent(r)
        assert sent(r) == total > 150, (spec, r.stdout)
        assert sent(vt(*extra, "push", str(s1), spec, ref, env=env)) == 0
        # and back: pull from the server into a fresh datadir, the tree is whole
        back = tmp_path / f"back{len(os.listdir(tmp_path))}"
        vt(*extra, "pull", spec, str(back), ref, env=env)
        r = vt("-S", str(back), "fsck", ref, check_rc=False)
        assert r.returncode == 0, r.stdout + r.stderr
    # the named archive goes to the server's archive of the same name
    r = vt("--key-file", str(wkey), "push", str(s1), tspec, "[default]t", env=env)
    assert "appended 1 states" in r.stdout
    assert states(tmp_path / "k" / "t.vt") != []
    # without the key: one clear line, no traceback
    r = vt("push", str(s1), tspec, ref, env={**env, "VT_KEY_FILE": ""}, check_rc=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1


def test_corrupt_source_block_reported_and_not_propagated(packed, tmp_path):
    s1, _ = packed
    with DataDir(s1, readonly=True) as s:
        root = Archive(str(s1 / "t.vt")).last().dirent
        path, victim = next((p, d) for p, d in walk(root, s) if d.is_file and d.size > 20_000)
        leaf = next(iter(victim.block.leaves(s)))
        e = s._index.get(leaf.hashcode)
        file = s.data_file_path(s._index.files()[e.filenum])
    with open(file, "r+b") as f:
        f.seek(e.payload_offset + e.payload_length // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x5A]))
    s2 = tmp_path / "s2"
    r = vt("push", str(s1), str(s2), "[default]t", check_rc=False)
    assert r.returncode == 1
    # the damaged frame may hold a few blocks: each is named with its path
    bad = re.findall(r"(/\S+): \S+: corrupt block (blake3:[0-9a-f]{64})", r.stderr)
    assert bad and "held back" in r.stdout, r.stderr
    with DataDir(s2, readonly=True) as dst:
        assert root.block.hashcode not in dst
        held = {str(h) for h in dst.hashcodes()}
        assert not any(h in held for _, h in bad)
        assert len(dst) > 100  # the rest was copied
    assert not (s2 / "t.vt").exists() or states(s2 / "t.vt") == []


def test_two_pushes_into_one_destination_at_once(tmp_path, servers):
    srcs = []
    for name in "ab":
        make_tree(tmp_path / f"t{name}", files=60, size=40_000, seed=ord(name))
        vt("-q", "-S", str(tmp_path / name), "pack", str(tmp_path / f"t{name}"),
           "-a", str(tmp_path / name / "t.vt"))  # fmt: skip
        srcs.append(tmp_path / name)
    spec = servers(str(tmp_path / "dst"), f"unix:{tmp_path}/d.sock").start()
    for dst in (spec, str(tmp_path / "dd")):
        cmds = [
            [sys.executable, "-m", "vtstore.cli.main", "push", str(s), dst, str(s / "t.vt")]
            for s in srcs
        ]
        procs = [subprocess.Popen(c, env=subprocess_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for c in cmds]  # fmt: skip
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0 and "Traceback" not in err, err
        # both pushed into the archive t: each state appended is in time order
        # and its tree is whole; a state older than the other's is not appended
        if dst == spec:
            with DataDir(tmp_path / "dst", readonly=True):
                got = states(tmp_path / "dst" / "t.vt")
        else:
            got = states(tmp_path / "dd" / "t.vt")
        assert len(set(got)) == len(got) and 1 <= len(got) <= 2
        assert len(got) == 2 or any("1 older" in out for out, _ in outs)
        if dst != spec:
            # a local archive: the check and the append hold a lock, never out of
            # order (a server appends what it is given: see the module docstring)
            assert got == sorted(got)
        for s in srcs:
            e = Archive(str(s / "t.vt")).last()
            if (e.when, str(e.dirent)) in got:
                # every block of the tree arrived: --full asks about each one
                assert sent(vt("push", "--full", str(s), dst, str(e.dirent))) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["datadir", "unix"])
def test_killed_push_resumes_without_resending(tmp_path, servers, kind):
    """kill -9 a `vt push` of 150 MB midway; the next push sends exactly the
    blocks that had not arrived, and the tree is whole."""
    from vtstore.net import StreamStore

    big = tmp_path / "big"
    big.mkdir()
    for i in range(6):
        (big / f"f{i}").write_bytes(os.urandom(25 << 20))
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    ref = vt("-S", str(s1), "save", str(big)).stdout.strip()
    dst = str(s2) if kind == "datadir" else servers(str(s2), f"unix:{tmp_path}/k.sock").start()
    total = sent(vt("push", "-n", str(s1), dst, ref))
    p = subprocess.Popen(
        [sys.executable, "-m", "vtstore.cli.main", "push", str(s1), dst, ref],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # kill -9 once a good part has arrived in the destination's data files
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        size = sum(f.stat().st_size for f in s2.rglob("*") if f.is_file()) if s2.exists() else 0
        if size > 70 << 20 or p.poll() is not None:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if kind == "datadir":
        with DataDir(s2) as d:
            arrived = len(d)
    else:
        with StreamStore(dst) as d:
            arrived = len(d)
    assert 0 < arrived < total
    r = vt("push", str(s1), dst, ref)
    assert sent(r) == total - arrived
    assert sent(vt("push", "--full", str(s1), dst, ref)) == 0


def test_whole_store_push_and_bad_arguments(packed, tmp_path):
    s1, _ = packed
    s2 = tmp_path / "s2"
    r = vt("push", "-n", str(s1), str(s2))
    assert sent(r) > 150 and "whole store" in r.stdout
    r = vt("push", str(s1), str(s2))
    assert sent(r) > 150
    with DataDir(s1, readonly=True) as a, DataDir(s2, readonly=True) as b:
        assert set(a.hashcodes()) == set(b.hashcodes())
    assert sent(vt("push", str(s1), str(s2))) == 0
    # bad input: one line each, no traceback
    for args in (
        ("push", str(s1), "", "x.vt"),
        ("push", str(s1), str(s2), str(tmp_path / "nope.vt")),
        ("push", str(s1), str(s2), "B{bad"),
        ("push", "--batch", "0", str(s1), str(s2), "[default]t"),
        ("pull", "nosuchscheme:x", str(s2), "[default]t"),
    ):
        r = vt(*args, check_rc=False)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


@pytest.mark.skipif(
    not (os.path.exists("/usr/sbin/sshd") and shutil.which("ssh")), reason="needs openssh"
)
def test_push_and_pull_through_ssh(packed, tmp_path, sshd):  # noqa: F811 (the fixture)
    """`|ssh host vt serve -` as DST and as SRC: the archive's states land in the
    remote datadir's archive, and a pull brings the tree back whole."""
    s1, _ = packed
    remote = tmp_path / "remote"
    serve = f"PYTHONPATH={SRC_DIR} {sys.executable} -m vtstore.cli.main -q -S {remote} serve -"
    spec = f"|{sshd()} '{serve}'"
    r = vt("push", str(s1), spec, "[default]t")
    assert sent(r) > 150 and "appended 1 states" in r.stdout
    assert states(remote / "t.vt") == states(s1 / "t.vt")
    assert sent(vt("push", str(s1), spec, "[default]t")) == 0
    back = tmp_path / "back"
    vt("pull", spec, str(back), "[default]t")
    assert states(back / "t.vt") == states(s1 / "t.vt")
    r = vt("-S", str(back), "fsck", "[default]t", check_rc=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_clause_names_the_source_store(packed, tmp_path, vt_env):
    """`vt push - DST [clause]NAME`: the clause of the archive is the source."""
    s1, _ = packed
    rc = tmp_path / "home" / ".vtrc"
    rc.write_text(f"[src]\ntype = datadir\npath = {s1}\n")
    env = {**vt_env, "PYTHONPATH": vt_env["PYTHONPATH"]}
    r = vt("push", "-", str(tmp_path / "s2"), "[src]t", env=env)
    assert sent(r) > 150 and states(tmp_path / "s2" / "t.vt") == states(s1 / "t.vt")


def test_push_json_summary(tmp_path):
    """`--json`: one object on stdout saying what was sent, skipped and appended;
    the whole-store form prints the store sync's report."""
    import json

    tree, s1, s2 = tmp_path / "t", tmp_path / "s1", tmp_path / "s2"
    make_tree(tree, files=30, size=10_000)
    ref = vt("-S", str(s1), "save", str(tree)).stdout.strip()
    vt("-q", "-S", str(s1), "pack", str(tree), "-a", "[default]t")
    first = json.loads(vt("push", "--json", str(s1), str(s2), ref, "[default]t").stdout)
    assert first["sent_blocks"] > 30 and first["failed_blocks"] == 0 and not first["problems"]
    assert first["archives"] == [
        {
            "what": "[default]t",
            "dest": str(s2 / "t.vt"),
            "appended": 1,
            "present": 0,
            "older": 0,
            "held_back": 0,
        }
    ]
    again = json.loads(vt("push", "--json", str(s1), str(s2), ref, "[default]t").stdout)
    assert again["sent_blocks"] == 0 and again["present_blocks"] >= 1
    assert again["archives"][0]["present"] == 1
    whole = json.loads(vt("push", "--json", str(s1), str(tmp_path / "s3")).stdout)
    assert whole["sent_blocks"] == whole["src_blocks"] > 30
