"""`vt serve` on the command line, and the tcp:/unix:/|command store specs."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time

import pytest

from vtstore.errors import ConfigError
from vtstore.net import StreamStore
from vtstore.stores.memory import MemoryStore
from vtstore.stores.spec import open_store_spec, parse_store_spec

from vtstore.cli.serve import parse_targets  # isort: skip


@pytest.mark.parametrize(
    "argv, address, exports",
    [
        ([], None, []),
        (["-"], "-", []),
        (["127.0.0.1:9000"], "127.0.0.1:9000", []),
        ([":0", "b:memory:"], ":0", [("b", "memory:")]),
        (["[::1]:7"], "[::1]:7", []),
        (["/run/vt.sock", "x:/data/x"], "/run/vt.sock", [("x", "/data/x")]),
        (["./vt.sock"], "./vt.sock", []),
        (["unix:rel.sock"], "unix:rel.sock", []),
        (["b:memory:", "c:tcp:h:1"], None, [("b", "memory:"), ("c", "tcp:h:1")]),
    ],
)
def test_parse_targets(argv, address, exports):
    assert parse_targets(argv) == (address, exports)


@pytest.mark.parametrize("argv", [["-", "noexport"], ["-", ":memory:"], ["-", "a#b:memory:"]])
def test_parse_targets_refuses(argv):
    with pytest.raises(ConfigError):
        parse_targets(argv)


def test_store_specs():
    s = parse_store_spec("tcp:127.0.0.1:99#b")
    assert (s.type, s.params) == ("tcp", {"host": "127.0.0.1", "port": 99, "export": "b"})
    assert parse_store_spec("tcp:[::1]:5").params == {"host": "::1", "port": 5}
    assert parse_store_spec("unix:/x.sock#e").params == {"socket_path": "/x.sock", "export": "e"}
    assert parse_store_spec("|ssh h vt serve -").params == {"command": "ssh h vt serve -"}
    for bad in ("tcp:nohost", "tcp:h:99999", "tcp:h:1#", "unix:", "|"):
        with pytest.raises(ConfigError):
            parse_store_spec(bad)


def test_open_through_the_spec_registry(serve, tmp_path, helpers):
    a, b = MemoryStore(), MemoryStore()
    _, spec = serve({"": a, "b": b}, str(tmp_path / "s.sock"))
    with open_store_spec(spec + "#b") as st:
        assert isinstance(st, StreamStore)
        h = st.add(b"via the registry")
    assert h in b and h not in a
    with open_store_spec(spec, readonly=True) as st:
        assert st.readonly
    with open_store_spec(helpers.stdio_spec()) as st:
        assert st.get(st.add(b"stdio")) == b"stdio"


def test_vt_serve_named_exports_and_sigterm(tmp_path, server_process):
    sock = tmp_path / "vt.sock"
    server = server_process("memory:", str(sock), "b:memory:", "dd:" + str(tmp_path / "dd"))
    spec = server.start()
    assert spec == f"unix:{sock}"
    with StreamStore(spec + "#dd") as st:
        h = st.add(b"kept in the datadir export")
    with StreamStore(spec) as default, StreamStore(spec + "#b") as other:
        assert h not in default and h not in other
    assert server.terminate() == 0
    assert not sock.exists()
    from vtstore.stores.datadir import DataDir

    with DataDir(tmp_path / "dd") as dd:
        assert dd[h] == b"kept in the datadir export"


def test_vt_serve_errors_are_one_line(tmp_path, helpers):
    plain = tmp_path / "plain"
    plain.write_text("not a socket")
    r = subprocess.run(
        helpers.vt_command("-S", "memory:", "serve", str(plain)),
        env=helpers.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"vt serve: cannot listen on {plain}: it exists and is not a socket"
    ]
    r = subprocess.run(
        helpers.vt_command("-S", "memory:", "serve", "-", "noexport"),
        env=helpers.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "NAME:STORESPEC" in r.stderr and "Traceback" not in r.stderr


def test_vt_serve_defaults_to_the_server_clause(tmp_path, helpers):
    """No ADDRESS: the [server] clause (here from a config file) says where and what."""
    base = tmp_path / "base"
    rc = tmp_path / "vtrc"
    rc.write_text(
        f"[GLOBAL]\nbasedir = {base}\n\n[server]\ntype = unix\n"
        "socket_path = {basedir}/run/vt.sock\nstore = memory:\n"
        f"exports = arch:{tmp_path / 'dd'} scratch:memory:\n"
    )
    ready = tmp_path / "ready"
    env = dict(helpers.subprocess_env(), HOME=str(tmp_path))
    proc = subprocess.Popen(
        helpers.vt_command("-q", "-c", str(rc), "serve", "--ready-file", str(ready)), env=env
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        spec = ready.read_text().strip()
        sock = base / "run" / "vt.sock"
        assert spec == f"unix:{sock}"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        with StreamStore(spec) as st:
            assert st.server_store_name == "memory:"
        with StreamStore(spec + "#arch") as st:
            st.add(b"into the datadir")
        with StreamStore(spec + "#scratch") as st:
            assert len(st) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
