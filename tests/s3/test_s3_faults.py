"""Faults for real: the server killed mid-upload and restarted, a server that
stays down, a slow server (a throttling TCP proxy on loopback), credentials
that may only read, wrong credentials.  Each ends in success after retries or
in one clear line on stderr, never a traceback, and loses nothing acknowledged."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from .conftest import ADMIN, BUCKET, READER, Weed, vt
from .test_s3_cli import make_tree, same_tree
from .writer_proc import batch


class ThrottlingProxy:
    """A TCP proxy on 127.0.0.1 that forwards at most `rate` octets a second
    each way per connection, after `delay` seconds of latency per chunk."""

    def __init__(self, target: tuple[str, int], rate: float, delay: float = 0.0):
        self.target = target
        self.rate = rate
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, fn, *a) -> None:
        t = threading.Thread(target=fn, args=a, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            self.conns += [c, u]
            self._spawn(self._pump, c, u)
            self._spawn(self._pump, u, c)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(16384)
                if not data:
                    break
                self.seen(a, data)
                time.sleep(self.delay + len(data) / self.rate)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def seen(self, sock: socket.socket, data: bytes) -> None:
        """Called with what is read from `sock`, before it is forwarded."""

    def close(self) -> None:
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            c.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def own_weed(tmp_path):
    """A SeaweedFS of this test's own, to kill and restart."""
    w = Weed(tmp_path / "weed")
    w.start()
    yield w
    w.kill()


def test_server_killed_mid_upload_and_restarted(tmp_path, own_weed, prefix):
    from vtstore.stores.backends.base import Retrying
    from vtstore.stores.backends.packs import PackStore

    store = PackStore(
        Retrying(own_weed.backend(prefix, timeout=10), max_time=120, cap=1.0),
        tmp_path / "cache",
        pack_size=1 << 20,
        uploads=2,
    )
    acked: list[int] = []
    errors: list[BaseException] = []

    def write():
        try:
            for i in range(12):
                store.add_many(batch(5, i))
                store.flush()
                acked.append(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    while not acked and t.is_alive():
        time.sleep(0.01)
    own_weed.kill()
    time.sleep(2)
    own_weed.start()
    t.join(240)
    assert not errors, errors
    assert acked == list(range(12))
    assert store.backend.retries > 0  # the outage was met, and retried through
    store.close()
    check = PackStore(own_weed.backend(prefix), tmp_path / "fresh")
    with check:
        want = [b for i in range(12) for b in batch(5, i)]
        hs = [check.hash(b) for b in want]
        assert all(check.contains_many(hs))
        assert check.fsck().ok


def test_server_that_stays_down_is_one_clear_error(tmp_path, s3_env):
    src = tmp_path / "src"
    make_tree(src, files=5)
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    rc = tmp_path / "vtrc"
    rc.write_text(
        f"[down]\ntype = s3\nurl = s3://{BUCKET}/x\nendpoint = http://127.0.0.1:{port}\n"
        "retry_time = 2\n"
    )
    r = vt(s3_env, "-c", str(rc), "-S", "[down]", "-q", "pack", str(src), check=False)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "gave up after 2 s of retries" in lines[0], r.stderr


def test_slow_server(tmp_path, s3_env, weed, prefix):
    """Through a proxy of 3 MB/s and 5 ms a chunk: the pack is slow, not broken."""
    src = tmp_path / "src"
    make_tree(src, files=20)
    size = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    proxy = ThrottlingProxy(("127.0.0.1", weed.s3_port), rate=3e6, delay=0.005)
    try:
        rc = tmp_path / "vtrc"
        rc.write_text(
            f"[slow]\ntype = s3\nurl = s3://{BUCKET}/{prefix}\n"
            f"endpoint = http://127.0.0.1:{proxy.port}\npack_size = 1MiB\nuploads = 2\n"
        )
        t0 = time.monotonic()
        vt(s3_env, "-c", str(rc), "-S", "[slow]", "-q", "pack", str(src))
        took = time.monotonic() - t0
        vt(s3_env, "-c", str(rc), "-S", "[slow]", "-q", "unpack", f"{src}.vt", str(tmp_path / "o"))
    finally:
        proxy.close()
    assert same_tree(src, tmp_path / "o")
    # compressed, the upload is smaller than the tree; still the proxy was felt
    assert took > 0.5, took
    assert size > 1 << 20


def test_read_only_credentials(tmp_path, s3_env, weed, prefix):
    """A key that may only read: reading works, a write is one clear error."""
    src = tmp_path / "src"
    make_tree(src, files=8)
    S = ["-S", f"s3://{BUCKET}/{prefix}", "-q"]
    vt(s3_env, *S, "pack", str(src))
    ro = {**s3_env, "AWS_ACCESS_KEY_ID": READER[0], "AWS_SECRET_ACCESS_KEY": READER[1]}
    ro["XDG_CACHE_HOME"] = str(tmp_path / "ro-cache")
    vt(ro, *S, "unpack", f"{src}.vt", str(tmp_path / "out"))
    assert same_tree(src, tmp_path / "out")
    (src / "new").write_bytes(b"a new file " * 1000)
    r = vt(ro, *S, "pack", str(src), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "access denied" in lines[0], r.stderr


@pytest.mark.parametrize("what", ["wrong secret", "unknown key"])
def test_wrong_credentials(tmp_path, s3_env, weed, prefix, what):
    src = tmp_path / "src"
    make_tree(src, files=3)
    bad = dict(s3_env)
    if what == "wrong secret":
        bad["AWS_SECRET_ACCESS_KEY"] = ADMIN[1] + "x"
    else:
        bad["AWS_ACCESS_KEY_ID"] = "AKIAEXPIREDKEY"
    for args in (("pack", str(src)), ("info",), ("fsck",)):
        r = vt(bad, "-S", f"s3://{BUCKET}/{prefix}", "-q", *args, check=False)
        assert r.returncode == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and "access denied" in lines[0], r.stderr
