"""Payload signing of uploads (`sign_payload`): by default a body is not
hashed into the signature over loopback or TLS (it protects nothing there and
costs a SHA-256 of every octet on both sides), and is over plain HTTP to
another host; `yes`/`no` force it.  The headers are read off the wire through
a recording proxy, and the server accepts every kind."""

from __future__ import annotations

import re
import socket

import pytest

from vtstore.stores.backends.s3 import payload_signed

from .conftest import BUCKET, vt
from .test_s3_cli import make_tree, same_tree
from .test_s3_faults import ThrottlingProxy

SHA = re.compile(rb"x-amz-content-sha256: *([^\r\n]+)", re.I)


class RecordingProxy(ThrottlingProxy):
    """A proxy (no throttling) on `host` that keeps what clients send."""

    def __init__(self, target, host: str = "127.0.0.1"):
        self.sent = bytearray()
        super().__init__(target, rate=1e12)
        if host != "127.0.0.1":  # listen on another address instead
            self.sock.close()
            self.sock = socket.create_server((host, 0))
            self.port = self.sock.getsockname()[1]
            self._spawn(self._accept)

    def seen(self, sock, data) -> None:
        if sock.getsockname()[1] == self.port:  # from a client
            self.sent += data  # a small tree: a few MB at most

    def payload_hashes(self) -> set[bytes]:
        return set(SHA.findall(bytes(self.sent)))


@pytest.mark.parametrize(
    ("endpoint", "sign", "want"),
    [
        ("http://127.0.0.1:8333", "auto", False),
        ("http://127.5.6.7:8333", "auto", False),
        ("http://[::1]:8333", "auto", False),
        ("http://localhost:8333", "auto", False),
        ("https://s3.example.net", "auto", False),
        (None, "auto", False),  # AWS, over https
        ("http://192.0.2.7:8333", "auto", True),
        ("http://minio.lan:9000", "auto", True),
        ("HTTP://10.0.0.1", "auto", True),
        ("http://127.0.0.1:8333", "yes", True),
        ("http://10.0.0.1", "no", False),
    ],
)
def test_policy(endpoint, sign, want):
    assert payload_signed(endpoint, sign) is want


def test_policy_refuses_other_words():
    with pytest.raises(ValueError, match="auto, yes or no"):
        payload_signed("http://127.0.0.1", "sometimes")


def _host_address() -> str | None:
    """An address of this machine that is not loopback (None if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.mark.parametrize(
    ("where", "sign", "signed"),
    [("loopback", "auto", False), ("loopback", "yes", True), ("other", "auto", True)],
)
def test_on_the_wire_and_accepted(tmp_path, s3_env, weed, prefix, where, sign, signed):
    """`vt pack` then `vt unpack` through the proxy: what the PUTs said, and
    that the server took (and gives back) every byte either way."""
    host = "127.0.0.1" if where == "loopback" else _host_address()
    if host is None:
        pytest.fail("no address but loopback on this machine")
    proxy = RecordingProxy(("127.0.0.1", weed.s3_port), host)
    try:
        src = tmp_path / "src"
        make_tree(src, files=20)
        rc = tmp_path / "vtrc"
        rc.write_text(
            f"[s]\ntype = s3\nurl = s3://{BUCKET}/{prefix}\nendpoint = http://{host}:{proxy.port}\n"
            f"pack_size = 256KiB\nsign_payload = {sign}\ncache = {tmp_path}/cache\n"
        )
        vt(s3_env, "-c", str(rc), "-S", "[s]", "-q", "pack", str(src))
        hashes = proxy.payload_hashes()
        vt(s3_env, "-c", str(rc), "-S", "[s]", "-q", "unpack", f"{src}.vt", str(tmp_path / "o"))
    finally:
        proxy.close()
    assert same_tree(src, tmp_path / "o")
    uploads = {
        h
        for h in hashes
        if h != b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    }
    if signed:  # every body's own SHA-256 (bodiless requests hash the empty string)
        assert b"UNSIGNED-PAYLOAD" not in hashes
        assert len(uploads) >= 3 and all(re.fullmatch(rb"[0-9a-f]{64}", h) for h in uploads)
    else:
        assert b"UNSIGNED-PAYLOAD" in hashes, hashes
        assert all(h == b"UNSIGNED-PAYLOAD" for h in uploads), uploads


def test_a_bad_word_is_one_clear_error(tmp_path, s3_env, prefix):
    rc = tmp_path / "vtrc"
    rc.write_text(f"[s]\ntype = s3\nurl = s3://{BUCKET}/{prefix}\nsign_payload = maybe\n")
    r = vt(s3_env, "-c", str(rc), "-S", "[s]", "info", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "sign_payload" in lines[0], r.stderr
