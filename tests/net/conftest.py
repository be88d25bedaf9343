"""Fixtures for the block protocol tests: real servers, in this process or not.

Every server and client a test starts is stopped by its fixture, and the autouse
`no_leftover_threads` fixture fails a test that leaves a thread running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import vtstore
from vtstore.net import BlockServer, StreamStore
from vtstore.net import protocol as P

SRC = str(Path(vtstore.__file__).resolve().parents[1])


def subprocess_env() -> dict:
    """The environment for a child `python -m vtstore...`: this checkout first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("VT_STORE", None)
    return env


def vt_command(*args: str) -> list[str]:
    """argv for running `vt ARGS...` from this checkout."""
    return [sys.executable, "-m", "vtstore.cli.main", *args]


def stdio_spec(store_spec: str = "memory:") -> str:
    """A `|command` client spec that runs `vt -S STORE serve -` from this checkout."""
    return f"|PYTHONPATH={SRC} {sys.executable} -m vtstore.cli.main -q -S {store_spec} serve -"


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"threads left running: {[t.name for t in extra]}"


@pytest.fixture
def serve():
    """`serve(exports, address="127.0.0.1:0", **server_kw) -> (server, spec)`: an
    in-process BlockServer, shut down at the end of the test.  Without `keys` it
    runs with `insecure_no_auth` (the tests of authentication give keys)."""
    servers = []

    def start(exports, address="127.0.0.1:0", **kw):
        if "keys" not in kw:
            kw.setdefault("insecure_no_auth", True)
        srv = BlockServer(exports, **kw)
        servers.append(srv)
        return srv, srv.listen(address)

    yield start
    for srv in servers:
        srv.shutdown()


@pytest.fixture
def clients():
    """`clients(spec, **kw) -> StreamStore`, closed at the end of the test."""
    opened = []

    def open_(spec, **kw):
        st = StreamStore(spec, **kw)
        opened.append(st)
        return st

    yield open_
    for st in opened:
        with contextlib.suppress(Exception):
            st.close()


class ServerProcess:
    """`vt -S STORE serve ADDRESS` in a child process; with `--insecure-no-auth`
    unless `extra` names `--auth-keys`."""

    def __init__(self, tmp: Path, store_spec: str, address: str, *extra: str):
        self.tmp = tmp
        self.store_spec = store_spec
        self.address = address
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.spec: str | None = None
        self.extra_global: tuple[str, ...] = ()

    def start(self, timeout: float = 20.0) -> str:
        ready = self.tmp / f"ready-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(
            vt_command(
                "-q",
                *self.extra_global,
                "-S",
                self.store_spec,
                "serve",
                "--ready-file",
                str(ready),
                *(() if "--auth-keys" in self.extra else ("--insecure-no-auth",)),
                self.address,
            )
            + list(self.extra),
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"vt serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("vt serve did not become ready")
            time.sleep(0.02)
        self.spec = ready.read_text().strip()
        return self.spec

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def server_process(tmp_path):
    """`server_process(store_spec, address) -> ServerProcess` (started by the test),
    killed at the end of the test if still running."""
    procs = []

    def make(store_spec: str, address: str, *extra: str) -> ServerProcess:
        p = ServerProcess(tmp_path, store_spec, address, *extra)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()


class RawClient:
    """A bare protocol speaker over a socket, for hostile and low-level tests."""

    def __init__(self, spec: str, timeout: float = 10.0):
        kind, _, rest = spec.partition(":")
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(rest)
        else:
            host, _, port = rest.rpartition(":")
            self.sock = socket.create_connection((host, int(port)))
        self.sock.settimeout(timeout)
        self.rfile = self.sock.makefile("rb")

    def auth(self, key, tag=1) -> P.Packet:
        """The AUTH exchange with `key`; the last answer (an error, or the
        server's proof, checked)."""
        from vtstore.security.auth import ClientAuth

        a = ClientAuth(key)
        self.request(P.OP_AUTH, a.start(), tag=tag)
        p = self.recv()
        if p is None or p.is_error:
            return p
        self.request(P.OP_AUTH, a.respond(p.payload), tag=tag + 1)
        p = self.recv()
        if p is not None and not p.is_error:
            assert a.verify(p.payload)
        return p

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, op, payload=b"", tag=1, channel=0, flags=0) -> None:
        self.send(P.encode_packet(op, flags, channel, tag, payload))

    def recv(self) -> P.Packet | None:
        return P.read_packet(self.rfile, 1 << 30)

    def hello(self, export="", channel=0, tag=1) -> P.Packet:
        self.request(P.OP_HELLO, P.encode_hello(1, None, export), tag=tag, channel=channel)
        return self.recv()

    def at_eof(self) -> bool:
        """True once the server has closed (reads return nothing)."""
        try:
            return self.rfile.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


@pytest.fixture
def raw():
    """`raw(spec) -> RawClient`, closed at the end of the test."""
    opened = []

    def open_(spec):
        c = RawClient(spec)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


class Helpers:
    """Helper functions for tests (a fixture, since test modules cannot import
    conftest under `--import-mode=importlib`)."""

    src = SRC
    subprocess_env = staticmethod(subprocess_env)
    vt_command = staticmethod(vt_command)
    stdio_spec = staticmethod(stdio_spec)


@pytest.fixture
def helpers() -> Helpers:
    return Helpers()


# -- network store factories for the generic store suite ------------------------------


class NetStoreFactory:
    """The `StoreFactory` interface of tests/conftest.py for a client store whose
    server (a child `vt serve`) keeps a datadir: `open()` is a new client on the
    same store, `close_all()` stops the server."""

    persistent = True

    def __init__(self, kind: str, tmp: Path, hashclass):
        self.kind = kind
        self.tmp = tmp
        self.hashclass = hashclass
        self.datadir = tmp / "dd"
        self.server: ServerProcess | None = None

    def _spec(self) -> str:
        hname = self.hashclass.hashname
        if self.kind == "stdio":
            return (
                f"|PYTHONPATH={SRC} {sys.executable} -m vtstore.cli.main -q -H {hname}"
                f" -S {self.datadir} serve -"
            )
        if self.server is None:
            address = "127.0.0.1:0" if self.kind == "tcp" else str(self.tmp / "vt.sock")
            self.server = ServerProcess(self.tmp, str(self.datadir), address)
            self.server.extra_global = ("-H", hname)
            self.server.start()
        return self.server.spec

    def open(self, readonly: bool = False):
        return StreamStore(self._spec(), hashclass=self.hashclass, readonly=readonly)

    def close_all(self) -> None:
        if self.server is not None:
            assert self.server.terminate() == 0
            self.server = None


@pytest.fixture
def net_factory(request, tmp_path):
    kind, hashclass = request.param
    f = NetStoreFactory(kind, tmp_path, hashclass)
    yield f
    f.close_all()
