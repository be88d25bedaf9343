"""Named archives on block servers: `[clause]NAME` over unix:, tcp: with keys
and ssh for pack -a, log, ls, cat and unpack; ARCHIVE_STATES (paged, the read
right, old servers); two writers into one server archive; `archives_from`."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vtstore.archive import Archive
from vtstore.blocks import HashCodeBlock
from vtstore.errors import FormatError
from vtstore.named_archives import list_archives, open_archive
from vtstore.net import StreamStore
from vtstore.net import protocol as P
from vtstore.stores.datadir import DataDir
from vtstore.tree.dirent import T_FILE, Dirent

from ..sync.conftest import make_tree
from .conftest import SRC, ServerProcess, subprocess_env
from .sshd import SSHD
from .test_ssh import sshd  # noqa: F401 (a fixture)


def vt(*args, env, check_rc=True, timeout=300):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert "Traceback" not in r.stderr, r.stderr
    if check_rc:
        assert r.returncode == 0, f"vt {args} -> {r.returncode}: {r.stderr}"
    return r


@pytest.fixture
def env(tmp_path):
    e = subprocess_env()
    e = {k: v for k, v in e.items() if not k.startswith("VT_")}
    e["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    e["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    return e


@pytest.fixture
def servers(tmp_path):
    procs = []

    def make(store_spec, address, *extra):
        p = ServerProcess(tmp_path, store_spec, address, *extra)
        procs.append(p)
        return p.start()

    yield make
    for p in procs:
        p.kill()


def same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    todo = [cmp]
    while todo:
        c = todo.pop()
        assert not c.left_only and not c.right_only and not c.diff_files, (c.left, c.right)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors
        todo.extend(c.subdirs.values())


def _clauses(tmp_path, servers, env, kind, sshd_cmd=None) -> str:
    """Start a server of `kind` on a fresh datadir; write its clause [k]."""
    remote = tmp_path / f"remote-{kind}"
    if kind == "unix":
        servers(str(remote), f"unix:{tmp_path}/s.sock")
        body = f"type = unix\nsocket_path = {tmp_path}/s.sock\n"
    elif kind == "tcp":
        ring, key = tmp_path / "ring", tmp_path / "w.key"
        vt("key", "new", "w", "--auth-keys", str(ring), "--key-file", str(key), env=env)
        spec = servers(str(remote), "127.0.0.1:0", "--auth-keys", str(ring))
        host, port = spec.removeprefix("tcp:").rsplit(":", 1)
        body = f"type = tcp\nhost = {host}\nport = {port}\nkey_file = {key}\n"
    else:
        serve = f"PYTHONPATH={SRC} {sys.executable} -m vtstore.cli.main -q -S {remote} serve -"
        body = f"type = command\ncommand = {sshd_cmd} '{serve}'\n"
    (tmp_path / "home" / ".vtrc").write_text(f"[k]\n{body}")
    return str(remote)


@pytest.mark.parametrize("kind", ["unix", "tcp", "ssh"])
def test_clause_name_over_each_server(kind, tmp_path, servers, env, request):
    sshd_cmd = None
    if kind == "ssh":
        if not os.path.exists(SSHD) or os.geteuid() != 0:
            pytest.skip("needs openssh-server and root")
        sshd_cmd = request.getfixturevalue("sshd")()
    remote = _clauses(tmp_path, servers, env, kind, sshd_cmd)
    tree = tmp_path / "tree"
    make_tree(tree, files=40, size=20_000)
    vt("-q", "pack", str(tree), "-a", "[k]web", env=env)
    time.sleep(0.01)
    (tree / "new").write_bytes(os.urandom(50_000))
    vt("-q", "pack", str(tree), "-a", "[k]web", "-m", "second", env=env)
    # the server's datadir holds the archive, in time order, with its own identity
    local = list(Archive(os.path.join(remote, "web.vt")).entries())
    assert len(local) == 2 and local[0].when < local[1].when
    with DataDir(remote, readonly=True) as dd:
        assert {e.store_id for e in local} == {dd.meta["uuid"]}
    r = vt("log", "--brief", "[k]web", env=env)
    assert len(r.stdout.splitlines()) == 2
    r = vt("ls", "[k]web", env=env)
    assert set(r.stdout.split()) == {"new"} | {f"d{i}/" for i in range(10)}
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "cat", "[k]web/new"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout == (tree / "new").read_bytes()
    out = tmp_path / "out"
    vt("-q", "unpack", "[k]web", str(out), env=env)
    same_tree(tree, out)
    old = tmp_path / "old"
    vt("-q", "unpack", "--at", str(local[0].when), "[k]web", str(old), env=env)
    assert not (old / "new").exists()
    # pull brings every state of the server's archive (ARCHIVE_STATES)
    back = tmp_path / "back"
    r = vt("pull", "[k]", str(back), "[k]web", env=env)
    assert "appended 2 states" in r.stdout, r.stdout
    assert [e.when for e in Archive(str(back / "web.vt")).entries()] == [e.when for e in local]
    r = vt("fsck", "[k]web", env=env)
    assert "ok; 2 states" in r.stdout, r.stdout
    # a name the server does not have: one line, no traceback
    r = vt("ls", "[k]nope", env=env, check_rc=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "no such archive" in r.stderr


def _state(store, text: bytes) -> Dirent:
    return Dirent(T_FILE, name="f", block=HashCodeBlock(store.add(text), len(text)))


def test_states_paged_and_listed(serve, clients, tmp_path):
    """More states than one ARCHIVE_STATES answer holds arrive whole, in order."""
    with DataDir(tmp_path / "dd") as dd:
        top = _state(dd, b"content")
        a = open_archive(dd, "many", create=True)
        for i in range(600):
            a.update(top, when=1000.0 + i, comment="c" * 100)
        open_archive(dd, "other", create=True).update(top, when=5.0)
        dd.flush()
        _, spec = serve({"": dd})
        st = clients(spec)
        assert list_archives(st) == ["many", "other"]
        remote = open_archive(st, "many")
        got = list(remote.entries())
        assert [e.when for e in got] == [1000.0 + i for i in range(600)]
        assert remote.at(1010.5).when == 1010.0 and remote.last().when == 1599.0
        assert remote.exists() and not open_archive(st, "nope", create=True).exists()
        with pytest.raises(Exception, match="no such archive"):
            open_archive(st, "nope")
        # one answer holds a page of them, and says where the next begins
        pkt = st._call(P.OP_ARCHIVE_STATES, [P.encode_json({"name": "many"})], P.F_JSON)
        page = P.decode_json(pkt.payload)
        assert 0 < len(page["states"]) == page["next"] < 600


def test_old_server_without_archive_states(serve, clients, tmp_path, monkeypatch):
    """A server that answers ARCHIVE_STATES with E_UNKNOWN_OP: the latest state only."""
    from vtstore.net import connection

    monkeypatch.delitem(connection.HANDLERS, P.OP_ARCHIVE_STATES)
    with DataDir(tmp_path / "dd") as dd:
        top = _state(dd, b"x")
        a = open_archive(dd, "h", create=True)
        a.update(top, when=1.0)
        a.update(top, when=2.0)
        dd.flush()
        _, spec = serve({"": dd})
        got = list(open_archive(clients(spec), "h").entries())
        assert [e.when for e in got] == [2.0]


def test_reading_states_needs_the_read_right(serve, clients, tmp_path):
    from vtstore.security.keys import Key, KeyRing

    reader = Key.generate("reader", {"*": frozenset({"read"})})
    adder = Key.generate("adder", {"*": frozenset({"add"})})
    with DataDir(tmp_path / "dd") as dd:
        open_archive(dd, "h", create=True).update(_state(dd, b"x"), when=1.0)
        dd.flush()
        _, spec = serve({"": dd}, keys=KeyRing([reader, adder]))
        assert [e.when for e in open_archive(clients(spec, key=reader), "h").entries()] == [1.0]
        with pytest.raises(P.RemoteError) as ei:
            clients(spec, key=adder).archive_states("h")
        assert ei.value.code == P.E_DENIED


def test_two_writers_keep_time_order(serve, tmp_path):
    """Two clients appending to one server archive with if_newer, times
    interleaved: the archive stays in time order and holds exactly what each
    was told it appended."""
    with DataDir(tmp_path / "dd") as dd:
        top = _state(dd, b"shared")
        dd.flush()
        _, spec = serve({"": dd})
        appended: list[float] = []
        errors: list[BaseException] = []

        def writer(offset: float) -> None:
            try:
                with StreamStore(spec) as st:
                    a = open_archive(st, "race", create=True)
                    for i in range(60):
                        when = 100.0 + 2 * i + offset
                        if a.update(top, when=when, if_newer=True) is not None:
                            appended.append(when)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        ts = [threading.Thread(target=writer, args=(o,)) for o in (0.0, 1.0)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
        got = [e.when for e in Archive(dd.archive_path("race")).entries()]
        assert got == sorted(got) and len(got) == len(set(got))
        assert sorted(appended) == got and len(got) >= 60


def test_archives_from_a_unix_server(tmp_path, servers, env):
    """`archives_from = GLOB:SPEC`: a datadir clause whose archives named GLOB
    live on a unix: server (listed, read, appended there), the others beside
    the datadir; a proxy saving to both keeps its archives on the server."""
    from vtstore.config import load_config
    from vtstore.stores.spec import open_store_spec

    sock = f"{tmp_path}/s.sock"
    remote, local = tmp_path / "remote", tmp_path / "local"
    servers(str(remote), f"unix:{sock}")
    rc = tmp_path / "home" / ".vtrc"
    rc.write_text(
        f"[loc]\ntype = datadir\npath = {local}\narchives_from = web*:unix:{sock}\n"
        f"[both]\ntype = proxy\nsave = {local} unix:{sock}\narchives_from = *:unix:{sock}\n"
    )
    tree = tmp_path / "tree"
    make_tree(tree, files=20, size=10_000)
    vt("-q", "pack", str(tree), "-a", "[both]web", env=env)
    vt("-q", "pack", str(tree), "-a", "[loc]mine", env=env)
    assert (remote / "web.vt").exists() and not (local / "web.vt").exists()
    assert (local / "mine.vt").exists() and not (remote / "mine.vt").exists()
    # read through the datadir clause: states from the server, blocks local
    r = vt("ls", "[loc]web", env=env)
    assert set(r.stdout.split()) == {f"d{i}/" for i in range(10)}
    out = tmp_path / "out"
    vt("-q", "unpack", "[loc]web", str(out), env=env)
    same_tree(tree, out)
    assert len(vt("log", "--brief", "[loc]mine", env=env).stdout.splitlines()) == 1
    with open_store_spec("[loc]", config=load_config(str(rc)), readonly=True) as st:
        assert list_archives(st) == ["mine", "web"]
        assert open_archive(st, "web").path.endswith(":web")
    with open_store_spec("[both]", config=load_config(str(rc)), readonly=True) as st:
        assert list_archives(st) == ["web"]
    # a state whose blocks the server lacks is refused there: one clear line
    other = tmp_path / "other"
    make_tree(other, files=3, seed=7)
    r = vt("pack", str(other), "-a", "[loc]web-new", env=env, check_rc=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "not in" in r.stderr
    # a bad value: one line naming the key
    rc.write_text(f"[bad]\ntype = datadir\npath = {local}\narchives_from = nocolon\n")
    r = vt("ls", "[bad]x", env=env, check_rc=False)
    assert r.returncode != 0 and "archives_from" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_served_proxy_lists_and_creates_archives(serve, clients, tmp_path):
    """A server of a proxy offers its read stores' archives and creates a new
    one in its first save store that keeps archives."""
    from vtstore.stores.proxy import ProxyStore

    d1, d2 = DataDir(tmp_path / "d1"), DataDir(tmp_path / "d2")
    open_archive(d2, "old", create=True).update(_state(d2, b"o"), when=1.0)
    proxy = ProxyStore(save=[d1], read=[d1, d2])
    try:
        _, spec = serve({"": proxy})
        st = clients(spec)
        assert list_archives(st) == ["old"]
        new = open_archive(st, "new", create=True)
        assert new.update(_state(st, b"n"), when=2.0) is not None
        assert list_archives(st) == ["new", "old"]
        assert (tmp_path / "d1" / "new.vt").exists() and not (tmp_path / "d2" / "new.vt").exists()
        assert [e.when for e in open_archive(st, "old").entries()] == [1.0]
        st.close()
    finally:
        proxy.close()


@pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs FUSE (as root)"
)
def test_mount_a_server_archive(tmp_path, servers, env):
    """`vt mount [clause]NAME` of a unix: server's archive: read-only it shows
    the latest state; read-write, the unmount appends a new state there."""
    _clauses(tmp_path, servers, env, "unix")
    tree = tmp_path / "tree"
    make_tree(tree, files=10, size=5_000)
    vt("-q", "pack", str(tree), "-a", "[k]web", env=env)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    f = next(p for p in tree.rglob("*") if p.is_file())
    try:
        vt("mount", "-r", "[k]web", str(mnt), env=env)
        assert (mnt / f.relative_to(tree)).read_bytes() == f.read_bytes()
        vt("umount", str(mnt), env=env)
        vt("mount", "[k]web", str(mnt), env=env)
        (mnt / "added").write_bytes(b"written through the mount")
        vt("umount", str(mnt), env=env)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    assert len(vt("log", "--brief", "[k]web", env=env).stdout.splitlines()) == 2
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "cat", "[k]web/added"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert r.stdout == b"written through the mount"


@pytest.mark.parametrize(
    "request_obj",
    [{"name": "h", "start": -1}, {"name": "h", "start": "0"}, {"name": "h", "start": True},
     {"name": "h", "start": 1.5}, {"start": 0}, {"name": ""}],
)  # fmt: skip
def test_archive_states_refuses_bad_requests(serve, clients, tmp_path, request_obj):
    """A malformed ARCHIVE_STATES is one E_PROTOCOL answer; the channel goes on."""
    with DataDir(tmp_path / "dd") as dd:
        open_archive(dd, "h", create=True).update(_state(dd, b"x"), when=1.0)
        dd.flush()
        _, spec = serve({"": dd})
        st = clients(spec)
        with pytest.raises(P.RemoteError) as ei:
            st._call(P.OP_ARCHIVE_STATES, [P.encode_json(request_obj)], P.F_JSON)
        assert ei.value.code == P.E_PROTOCOL
        assert len(st.archive_states("h")) == 1


def test_a_server_whose_pages_do_not_move_on_is_refused(serve, clients, tmp_path, monkeypatch):
    """A broken server answering `next` that does not advance: a FormatError,
    not an endless loop."""
    from vtstore.net import handlers

    monkeypatch.setattr(handlers, "_archive_state_texts", lambda archive, start: (["x"], start))
    with DataDir(tmp_path / "dd") as dd:
        open_archive(dd, "h", create=True).update(_state(dd, b"x"), when=1.0)
        dd.flush()
        _, spec = serve({"": dd})
        with pytest.raises(FormatError, match="continue at"):
            clients(spec).archive_states("h")
