"""TLS on the block protocol (issue 13, item 2): a self-signed certificate made
in the test, a server on 127.0.0.1, clients that verify it by CA file or by pin,
and the refusals: another certificate, a wrong pin, plain TCP on a TLS port.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import threading

import pytest

from vtstore.errors import ConfigError, StoreError
from vtstore.security.keys import Key, KeyRing, save_key_file
from vtstore.security.tls import cert_fingerprint, make_self_signed, server_context
from vtstore.stores.memory import MemoryStore


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    pin = make_self_signed(str(d / "c.pem"), str(d / "k.pem"))
    other_pin = make_self_signed(str(d / "other.pem"), str(d / "other-k.pem"))
    return d, pin, other_pin


@pytest.fixture
def tls_server(serve, certs):
    d, pin, _ = certs
    store = MemoryStore()
    key = Key.generate("k")
    srv, spec = serve(
        {"": store},
        keys=KeyRing([key]),
        tls_context=server_context(str(d / "c.pem"), str(d / "k.pem")),
    )
    assert spec.startswith("tls:127.0.0.1:")
    return spec, store, key


def test_tls_by_ca_file_and_by_pin(tls_server, certs, clients):
    spec, store, key = tls_server
    d, pin, _ = certs
    assert cert_fingerprint(str(d / "c.pem")) == pin
    st = clients(spec, key=key, tls_ca=str(d / "c.pem"))
    data = [os.urandom(n) for n in (10, 70_000, 1 << 20)]
    hs = st.add_many(data)
    st.flush()
    assert [store[h] for h in hs] == data
    for p in (pin, "sha256:" + pin.upper(), ":".join(pin[i : i + 2] for i in range(0, 64, 2))):
        assert clients(spec, key=key, tls_pin=p).get(hs[2]) == data[2]


def test_tls_refuses_a_wrong_certificate(tls_server, certs, clients):
    spec, store, key = tls_server
    d, pin, other_pin = certs
    with pytest.raises(StoreError, match="certificate verify failed"):
        clients(spec, key=key, tls_ca=str(d / "other.pem"))
    with pytest.raises(StoreError, match="not the pinned one"):
        clients(spec, key=key, tls_pin=other_pin)
    with pytest.raises(StoreError, match="certificate verify failed"):
        clients(spec, key=key)  # the system's CAs do not know a self-signed one
    with pytest.raises(ConfigError, match="64 hex digits"):
        clients(spec, key=key, tls_pin="abcd")
    assert len(store) == 0


def test_plain_tcp_to_a_tls_port_and_tls_to_a_plain_port(tls_server, serve, certs, clients):
    spec, _, key = tls_server
    d, pin, _ = certs
    with pytest.raises(StoreError):
        clients("tcp:" + spec[4:], key=key)
    _, plain = serve({"": MemoryStore()})
    with pytest.raises(StoreError):
        clients("tls:" + plain[4:], tls_pin=pin, connect_timeout=5)


def test_tls_still_needs_the_key(tls_server, certs, clients, monkeypatch):
    from vtstore.net import protocol as P

    spec, _, _ = tls_server
    d, pin, _ = certs
    monkeypatch.delenv("VT_KEY_FILE", raising=False)
    with pytest.raises(P.AuthError):
        clients(spec, tls_pin=pin)


def test_tls_full_duplex_under_load(tls_server, certs, clients):
    """Many pipelined adds and reads at once over one TLS connection (its reader
    and writer threads share one TLS state), from several client threads."""
    spec, store, key = tls_server
    _, pin, _ = certs
    st = clients(spec, key=key, tls_pin=pin)
    blocks = [os.urandom(64 * 1024 + i) for i in range(160)]  # ~10 MB
    errors = []

    def work(part):
        try:
            hs = st.add_many(part)
            st.flush()
            for h, b in zip(hs, part, strict=True):
                assert st.get(h) == b
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(blocks[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(store) == len(blocks)
    fresh = clients(spec, key=key, tls_pin=pin)
    got = fresh.get_many([b_h for b_h in (st.hashclass.from_data(b) for b in blocks)])
    assert list(got) == blocks


def test_vt_serve_tls_end_to_end(tmp_path, certs, server_process, helpers):
    """vt serve --tls-cert/--tls-key; vt save/cat through a tls: spec with
    $VT_TLS_CA, and with $VT_TLS_PIN; a wrong pin is one line."""
    d, pin, other_pin = certs
    ring = tmp_path / "keys"
    key = Key.generate("k")
    KeyRing([key], path=str(ring)).save()
    save_key_file(str(tmp_path / "k.key"), key)
    srv = server_process(
        "memory:", "127.0.0.1:0", "--auth-keys", str(ring),
        "--tls-cert", str(d / "c.pem"), "--tls-key", str(d / "k.pem"),
    )  # fmt: skip
    spec = srv.start()
    assert spec.startswith("tls:")
    data = tmp_path / "data"
    data.write_bytes(os.urandom(2 << 20))
    env = dict(helpers.subprocess_env(), VT_KEY_FILE=str(tmp_path / "k.key"))
    r = subprocess.run(
        helpers.vt_command("-S", spec, "save", str(data)),
        env={**env, "VT_TLS_CA": str(d / "c.pem")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    ref = r.stdout.strip()
    r = subprocess.run(
        helpers.vt_command("-S", spec, "cat", ref),
        env={**env, "VT_TLS_PIN": pin},
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout == data.read_bytes()
    r = subprocess.run(
        helpers.vt_command("-S", spec, "cat", ref),
        env={**env, "VT_TLS_PIN": other_pin},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "not the pinned one" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert srv.terminate() == 0


def test_bad_tls_files_are_one_clear_error(tmp_path, certs):
    from vtstore.security.tls import TLSError

    d, _, _ = certs
    with pytest.raises(TLSError, match="no such file"):
        server_context(str(tmp_path / "nope.pem"), str(d / "k.pem"))
    with pytest.raises(TLSError):
        server_context(str(d / "c.pem"), str(d / "other-k.pem"))  # not its key
    assert isinstance(ssl.SSLContext, type)


def test_a_stalled_tls_handshake_does_not_block_others(tls_server, certs, clients):
    """The server runs each TLS handshake on the connection's own thread: clients
    that connect and say nothing (or send garbage) do not hold up the next one."""
    import socket

    spec, store, key = tls_server
    _, pin, _ = certs
    host, port = spec[4:].rsplit(":", 1)
    silent = [socket.create_connection((host, int(port))) for _ in range(5)]
    garbage = socket.create_connection((host, int(port)))
    garbage.sendall(b"\x16\x03\x01\x00\x05hello" + os.urandom(100))
    try:
        st = clients(spec, key=key, tls_pin=pin, connect_timeout=5)
        h = st.add(b"still served " * 100)
        st.flush()
        assert h in store
    finally:
        for s in [*silent, garbage]:
            s.close()
