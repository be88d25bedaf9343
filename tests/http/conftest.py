"""Fixtures for the HTTP tests: real `vt httpd` servers on 127.0.0.1 (in this
process under Uvicorn, or a child `vt httpd`), a sample tree and archive, and a
plain HTTP client that sends paths exactly as given."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import vtstore

SRC = str(Path(vtstore.__file__).resolve().parents[1])


def vt_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = str(home)
    return env


class Client:
    """HTTP/1.1 with keep-alive; the target is sent as given (no normalising)."""

    def __init__(self, url: str):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def __call__(self, method: str, target: str, body=None, headers=None):
        """`(status, headers dict (lower-case), body)`."""
        try:
            self.conn.request(method, target, body=body, headers=headers or {})
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request(method, target, body=body, headers=headers or {})
            r = self.conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.will_close:
            self.conn.close()
        return r.status, hdrs, data

    def get(self, target: str, **headers):
        return self("GET", target, headers={k.replace("_", "-"): v for k, v in headers.items()})

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send raw octets on a new connection; everything answered until close."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def httpd():
    """`httpd(exports, **app_kw) -> base URL`: an in-process server (Uvicorn in a
    thread), stopped at the end of the test.  Without `keys`, writes are open
    (`insecure_no_auth`) unless `insecure_no_auth=False` is given."""
    from vtstore.http.app import HTTPApp
    from vtstore.http.server import BackgroundServer

    servers = []

    def start(exports, **kw):
        if "keys" not in kw:
            kw.setdefault("insecure_no_auth", True)
        srv = BackgroundServer(HTTPApp(exports, **kw))
        servers.append(srv)
        return srv.start()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def client():
    """`client(url) -> Client`, closed at the end."""
    made = []

    def make(url):
        c = Client(url)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class Sample:
    """A datadir holding a small tree (text, HTML, PNG, a 3 MB random file, a
    subdirectory, a symlink, a name needing escapes) and an archive `proj` of
    two states of it."""

    def __init__(self, tmp: Path, hashclass=None):
        from vtstore.archive import Archive
        from vtstore.stores.datadir import DataDir
        from vtstore.tree.fsimport import import_tree

        self.src = tmp / "proj"
        (self.src / "sub").mkdir(parents=True)
        (self.src / "a.txt").write_text("hello world\n" * 100)
        (self.src / "page.html").write_text("<script>alert(1)</script><b>x</b>")
        self.png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + (
            bytes.fromhex(
                "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
            )
        )
        (self.src / "dot.png").write_bytes(self.png)
        self.big = os.urandom(3_000_000)
        (self.src / "big.bin").write_bytes(self.big)
        (self.src / "sub" / "s.txt").write_text("in sub\n")
        (self.src / "we ird%2F#?.txt").write_text("odd name\n")
        os.symlink("a.txt", self.src / "link")
        self.store = DataDir(tmp / "dd", hashclass=hashclass)
        first, _ = import_tree(str(self.src), self.store)
        self.first = first.renamed("")
        (self.src / "a.txt").write_text("changed\n")
        (self.src / "new.txt").write_text("new file\n")
        second, _ = import_tree(str(self.src), self.store)
        self.top = second.renamed("")
        self.store.flush()
        arch = Archive(str(self.store.archive_path("proj")))
        arch.update(self.first, when=1_700_000_000.0, comment="first")
        arch.update(self.top, when=1_700_000_100.0, comment="second")
        self.ref = str(self.top)

    def close(self):
        self.store.close()


@pytest.fixture
def sample(tmp_path):
    s = Sample(tmp_path)
    yield s
    s.close()


class HttpdProcess:
    """`vt -S STORE httpd 127.0.0.1:0 ...` in a child process."""

    def __init__(self, tmp: Path, store: str, *extra: str, hashname: str | None = None):
        self.tmp, self.store, self.extra = tmp, store, extra
        self.hashname = hashname
        self.proc = None
        self.url = None

    def start(self, timeout: float = 30.0) -> str:
        ready = self.tmp / f"ready-{time.monotonic_ns()}"
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", self.store]
            + (["-H", self.hashname] if self.hashname else [])
            + ["httpd"]
            + ["127.0.0.1:0", "--ready-file", str(ready), *self.extra],
            env=vt_env(home),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"vt httpd exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("vt httpd did not become ready")
            time.sleep(0.02)
        self.url = ready.read_text().strip()
        return self.url

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def httpd_process(tmp_path):
    """`httpd_process(store_spec, *options) -> HttpdProcess` (started), stopped at the end."""
    procs = []

    def make(store, *extra):
        p = HttpdProcess(tmp_path, store, *extra)
        procs.append(p)
        p.start()
        return p

    yield make
    for p in procs:
        p.stop()


def make_key(tmp: Path, name: str = "k", rights: str = "all"):
    """A key file and an authorized-keys file holding it: `(key, key_file, keys_file)`."""
    from vtstore.security.keys import Key, KeyRing, parse_rights, save_key_file

    key = Key.generate(name, {"*": parse_rights(rights)})
    kf = tmp / f"{name}.key"
    save_key_file(str(kf), key)
    ring_file = tmp / f"server-keys-{name}"
    KeyRing([key]).save(str(ring_file))
    return key, kf, ring_file


@pytest.fixture
def keys(tmp_path):
    """`keys(name, rights) -> (key, key_file, keys_file)`."""
    return lambda name="k", rights="all": make_key(tmp_path, name, rights)


# -- the generic store suite over HTTP ------------------------------------------------


class HTTPStoreFactory:
    """The StoreFactory interface of tests/conftest.py for `HTTPStore`: a child
    `vt httpd` over a datadir, writes signed with a key."""

    persistent = True

    def __init__(self, tmp: Path, hashclass):
        self.tmp = tmp
        self.hashclass = hashclass
        self.proc = None
        self.key = None

    def _server(self):
        if self.proc is None:
            self.key, _, ring = make_key(self.tmp)
            dd = self.tmp / "dd"
            self.proc = HttpdProcess(
                self.tmp, str(dd), "--auth-keys", str(ring), hashname=self.hashclass.hashname
            )
            self.proc.start()
        return self.proc.url

    def open(self, readonly: bool = False):
        from vtstore.http.client import HTTPStore

        return HTTPStore(self._server(), hashclass=self.hashclass, readonly=readonly, key=self.key)

    def close_all(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture
def http_factory(request, tmp_path):
    f = HTTPStoreFactory(tmp_path, request.param)
    yield f
    f.close_all()
