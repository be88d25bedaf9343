"""Fixtures for the HTTP tests: real `vt httpd` servers on 127.0.0.1 (in this
process under Uvicorn, or a child `vt httpd`), a sample tree and archive, and a
plain HTTP client that sends paths exactly as given."""

from __future__ import annotations

import http.client
import json
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

# every server, worker pool and client a test starts is stopped by it
from ..net.conftest import no_leftover_threads  # noqa: F401 (an autouse fixture)

SRC = str(Path(vtstore.__file__).resolve().parents[1])


def vt_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = str(home)
    return env


def vt_cat(url: str, ref: str, home: Path) -> subprocess.CompletedProcess:
    """`vt -S URL cat REF` in a child process: its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", url, "cat", ref],
        capture_output=True,
        env=vt_env(home),
        timeout=120,
    )


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


# -- a headless Chromium driven over the DevTools protocol ---------------------------


class Browser:
    """Debian's chromium, headless, driven over the DevTools protocol with a
    minimal websocket client (RFC 6455 text frames; no extra package)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    )

    def __init__(self, tmp: Path):
        import re
        import shutil

        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.skip("no chromium")
        self.profile = tmp / "chromium-profile"
        self.downloads = tmp / "downloads"
        self.downloads.mkdir()
        self.proc = subprocess.Popen(
            [exe, *self.FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0"]
            + ["about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        self.port = port
        # the page target's websocket
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/json/list")
        targets = json.loads(conn.getresponse().read())
        conn.close()
        page = next(t for t in targets if t["type"] == "page")
        self.sock = self._ws_connect(page["webSocketDebuggerUrl"])
        self.next_id = 0
        self.events: list[dict] = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call(
            "Browser.setDownloadBehavior",
            behavior="allow",
            downloadPath=str(self.downloads),
            eventsEnabled=True,
        )

    # -- websocket ---------------------------------------------------------------
    def _ws_connect(self, url: str) -> socket.socket:
        import base64

        u = urlsplit(url)
        s = socket.create_connection((u.hostname, u.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        return s

    def _send(self, text: str) -> None:
        import struct

        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(hdr + mask + masked)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("devtools closed")
            buf += chunk
        return buf

    def _recv(self) -> dict:
        import struct

        parts = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exact(8))
            parts.append(self._exact(n))
            if b0 & 0x80:
                return json.loads(b"".join(parts))

    # -- the protocol ------------------------------------------------------------
    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my = self.next_id
        self._send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0, where=lambda p: True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and where(ev.get("params", {})):
                    return self.events.pop(i)["params"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.events.append(self._recv())
            except TimeoutError:
                pass
            finally:
                self.sock.settimeout(60)

    def goto(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        import base64

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc.stderr.close()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()
