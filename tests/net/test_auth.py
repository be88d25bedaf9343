"""Authentication on the block protocol (issue 13, item 1; docs/PROTOCOL.md §2a).

Real servers on 127.0.0.1 and UNIX sockets; the refusals are checked byte by
byte with `RawClient` (so a client library cannot hide a server that answers),
and the store is checked afterwards to hold nothing a refused peer sent.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import textwrap
import threading

import pytest

from vtstore.errors import ReadOnlyError
from vtstore.hashes import Hash_BLAKE3
from vtstore.net import protocol as P
from vtstore.net.client import StreamStore
from vtstore.net.handlers import OP_RIGHTS
from vtstore.security.auth import ClientAuth
from vtstore.security.keys import ALL_RIGHTS, Key, KeyFileError, KeyRing, save_key_file
from vtstore.stores.memory import MemoryStore


class ArchiveStore(MemoryStore):
    """A memory store with one minimal archive, "home"."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []
        me = self

        class _Archive:
            def last(self):
                return me.lines[-1] if me.lines else None

            def update(self, text):
                me.lines.append(text)

        self.archives = {"home": _Archive()}

    @property
    def exports(self):
        return self.archives


BLOCK = os.urandom(1000)
HC = Hash_BLAKE3.from_data(BLOCK)

#: A well-formed request payload of every op (what it asks does not matter: it
#: must not be done).
PAYLOADS = {
    P.OP_ADD: P.encode_blocks([b"sneaked in " + os.urandom(100)]),
    P.OP_GET: P.encode_hashcodes([HC]),
    P.OP_CONTAINS: P.encode_hashcodes([HC]),
    P.OP_FLUSH: b"",
    P.OP_HASHCODES: P.encode_window(None, False, None),
    P.OP_HASH_OF_HASHCODES: P.encode_window(None, False, None),
    P.OP_LENGTH: b"",
    P.OP_ARCHIVE_LIST: b"",
    P.OP_ARCHIVE_LAST: P.encode_json({"name": "home"}),
    P.OP_ARCHIVE_UPDATE: P.encode_json({"name": "home", "text": "sneaked"}),
    P.OP_INDIRECT_COMPLETE: bytes.fromhex(
        "23010b02ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
    ),
}
JSON_OPS = {P.OP_ARCHIVE_LAST, P.OP_ARCHIVE_UPDATE}
ALL_OPS = sorted(PAYLOADS)


def _flags(op):
    return P.F_JSON if op in JSON_OPS else 0


@pytest.fixture
def keyed(serve):
    """A TCP server with keys: "rw" (everything), "ro" (read), "pub" (read, add
    on export "pub" only), "noarch" (read, add); its store holds BLOCK."""
    store = ArchiveStore()
    store.add(BLOCK)
    pub = MemoryStore()
    keys = {
        "rw": Key.generate("rw"),
        "ro": Key.generate("ro", {"*": frozenset({"read"})}),
        "pub": Key.generate("pub", {"pub": frozenset({"read", "add"})}),
        "noarch": Key.generate("noarch", {"*": frozenset({"read", "add"})}),
    }
    srv, spec = serve({"": store, "pub": pub}, keys=KeyRing(keys.values()))
    return srv, spec, store, keys


def _refused(c, code: int) -> bool:
    """Read until the server closes: every answer must be an error, and the error
    `code`, unless the connection was reset (the server closed with our pipelined
    requests unread, and the kernel's reset may overtake its error answer)."""
    errors = []
    reset = False
    while True:
        try:
            p = c.recv()
        except (ConnectionResetError, P.TruncatedPacket):
            reset = True
            break
        if p is None:
            break
        assert p.is_error, f"answered {P.OP_NAMES.get(p.op)} without authentication"
        errors.append(P.decode_error(p.payload)[0])
    return errors == [code] or (reset and not errors)


def _pipelined(c, *requests) -> None:
    """Send requests behind one the server will refuse; once it has refused and
    closed, a send fails (EPIPE, or a reset): what is not sent is not served."""
    try:
        for op, payload, tag, flags in requests:
            c.request(op, payload, tag=tag, flags=flags)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _store_untouched(store):
    assert list(store.hashcodes()) == [HC]
    assert store.lines == []


# -- no key, a wrong key --------------------------------------------------------------


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: P.OP_NAMES[op])
def test_unauthenticated_client_is_refused_for_every_request_type(keyed, raw, op):
    """HELLO then the request, pipelined, without AUTH: E_AUTH, closed, nothing done."""
    _, spec, store, _ = keyed
    c = raw(spec)
    _pipelined(
        c, (P.OP_HELLO, P.encode_hello(1, None, ""), 1, 0), (op, PAYLOADS[op], 2, _flags(op))
    )
    assert _refused(c, P.E_AUTH)
    assert c.at_eof()
    # the request alone (no HELLO): refused, and the stranger is closed
    c2 = raw(spec)
    c2.request(op, PAYLOADS[op], tag=2, flags=_flags(op))
    assert _refused(c2, P.E_CHANNEL)
    _store_untouched(store)


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: P.OP_NAMES[op])
def test_wrong_key_is_refused_for_every_request_type(keyed, raw, op):
    """The right key id with another secret: E_AUTH at the proof, closed, and the
    HELLO and request sent behind it are never served."""
    _, spec, store, keys = keyed
    wrong = Key("rw", os.urandom(32))
    c = raw(spec)
    a = ClientAuth(wrong)
    c.request(P.OP_AUTH, a.start(), tag=1)
    nonce = c.recv()
    assert not nonce.is_error
    c.request(P.OP_AUTH, a.respond(nonce.payload), tag=2)
    _pipelined(
        c, (P.OP_HELLO, P.encode_hello(1, None, ""), 3, 0), (op, PAYLOADS[op], 4, _flags(op))
    )
    assert _refused(c, P.E_AUTH)
    _store_untouched(store)


def test_unknown_key_and_wrong_key_fail_alike(keyed, raw):
    _, spec, _, _ = keyed
    messages = []
    for key in (Key("nobody", os.urandom(32)), Key("rw", os.urandom(32))):
        c = raw(spec)
        p = c.auth(key)
        assert p.is_error
        code, detail = P.decode_error(p.payload)
        assert code == P.E_AUTH
        messages.append(detail["message"])
        assert c.at_eof()
    assert messages[0] == messages[1]  # the answer does not tell which ids exist


def test_stream_store_with_no_key_or_a_wrong_key(keyed, clients, tmp_path, monkeypatch):
    _, spec, store, keys = keyed
    monkeypatch.delenv("VT_KEY_FILE", raising=False)
    with pytest.raises(P.AuthError, match="authentication required"):
        clients(spec)
    with pytest.raises(P.AuthError, match="authentication failed"):
        clients(spec, key=Key("rw", os.urandom(32)))
    st = clients(spec, key=keys["rw"])
    assert st.get(HC) == BLOCK
    # $VT_KEY_FILE names the key of a tcp: client
    kf = tmp_path / "rw.key"
    save_key_file(str(kf), keys["rw"])
    monkeypatch.setenv("VT_KEY_FILE", str(kf))
    assert clients(spec).get(HC) == BLOCK


def test_a_replayed_exchange_fails(keyed, raw):
    """Record a good client's AUTH packets and send them again on a new
    connection: the server's nonce is new, so the recorded proof is wrong."""
    _, spec, store, keys = keyed
    a = ClientAuth(keys["rw"])
    start = a.start()
    c = raw(spec)
    c.request(P.OP_AUTH, start, tag=1)
    nonce = c.recv()
    proof = a.respond(nonce.payload)
    c.request(P.OP_AUTH, proof, tag=2)
    assert not c.recv().is_error  # the original succeeds
    c2 = raw(spec)
    c2.request(P.OP_AUTH, start, tag=1)
    nonce2 = c2.recv()
    assert nonce2.payload != nonce.payload
    c2.request(P.OP_AUTH, proof, tag=2)
    _pipelined(
        c2, (P.OP_HELLO, P.encode_hello(1, None, ""), 3, 0), (P.OP_ADD, PAYLOADS[P.OP_ADD], 4, 0)
    )
    assert _refused(c2, P.E_AUTH)
    _store_untouched(store)


def test_one_attempt_per_connection(keyed, raw):
    _, spec, _, keys = keyed
    c = raw(spec)
    assert c.auth(Key("rw", os.urandom(32))).is_error
    assert c.at_eof()  # no second try on the same connection
    c = raw(spec)
    assert not c.auth(keys["rw"]).is_error
    again = ClientAuth(keys["rw"])
    c.request(P.OP_AUTH, again.start(), tag=9)
    assert _refused(c, P.E_AUTH)


def test_client_refuses_a_server_without_the_key(raw):
    """A fake server that answers AUTH with a nonce, then a proof it cannot have
    computed: the client says so and never sends HELLO."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    got_after = []

    def fake():
        s, _ = lsock.accept()
        with s, s.makefile("rb") as rf:
            p = P.read_packet(rf, 4096)
            s.sendall(P.encode_packet(p.op, P.F_RESPONSE, 0, p.tag, b"\x01" + os.urandom(32)))
            p = P.read_packet(rf, 4096)
            s.sendall(P.encode_packet(p.op, P.F_RESPONSE, 0, p.tag, b"\x02" + os.urandom(32)))
            s.settimeout(2)
            try:
                got_after.append(rf.read(1))
            except OSError:
                pass

    t = threading.Thread(target=fake)
    t.start()
    try:
        with pytest.raises(P.AuthError, match="does not hold key 'k'"):
            StreamStore(f"tcp:127.0.0.1:{port}", key=Key.generate("k"))
    finally:
        t.join(10)
        lsock.close()
    assert got_after in ([b""], [])  # nothing after the bad proof: no HELLO


# -- rights ----------------------------------------------------------------------------------


def _authed(raw, spec, key, export=""):
    c = raw(spec)
    assert not c.auth(key).is_error
    p = c.hello(export, tag=10)
    return c, p


def test_read_only_key_cannot_add_or_update_archives(keyed, raw, clients):
    _, spec, store, keys = keyed
    c, w = _authed(raw, spec, keys["ro"])
    assert not w.is_error and P.decode_welcome(w.payload).readonly
    for tag, op in enumerate(ALL_OPS, 20):
        c.request(op, PAYLOADS[op], tag=tag, flags=_flags(op))
        p = c.recv()
        if OP_RIGHTS.get(op) in (None, "read"):
            assert not p.is_error or P.decode_error(p.payload)[0] != P.E_DENIED, P.OP_NAMES[op]
        else:
            assert p.is_error and P.decode_error(p.payload)[0] == P.E_DENIED, P.OP_NAMES[op]
    _store_untouched(store)
    # the client store: reads work, writes are refused with one clear error
    st = clients(spec, key=keys["ro"])
    assert st.get(HC) == BLOCK and st.readonly
    with pytest.raises(ReadOnlyError):
        st.add(b"x" * 100)
    with pytest.raises((ReadOnlyError, P.AccessDenied)):
        st.archive_update("home", "x")
    _store_untouched(store)


def test_add_without_archive_right(keyed, clients):
    _, spec, store, keys = keyed
    st = clients(spec, key=keys["noarch"])
    h = st.add(b"allowed " * 50)
    st.flush()
    assert h in store
    with pytest.raises(P.AccessDenied, match="no archive right"):
        st.archive_update("home", "x")
    assert store.lines == []
    full = clients(spec, key=keys["rw"])
    full.archive_update("home", "by rw")
    assert store.lines == ["by rw"]


def test_rights_are_per_export(keyed, raw, clients):
    srv, spec, store, keys = keyed
    c = raw(spec)
    assert not c.auth(keys["pub"]).is_error
    p = c.hello("", tag=10)
    assert p.is_error and P.decode_error(p.payload)[0] == P.E_DENIED
    assert c.at_eof()
    st = clients(spec + "#pub", key=keys["pub"])
    h = st.add(b"public " * 40)
    st.flush()
    assert h in srv.exports["pub"].store and h not in store
    with pytest.raises(P.AccessDenied):
        clients(spec, key=keys["pub"])


def test_key_rights_on_a_unix_socket(serve, clients, tmp_path):
    """A key is optional on a UNIX socket, and when given its rights hold there too."""
    store = MemoryStore()
    ro = Key.generate("ro", {"*": frozenset({"read"})})
    _, spec = serve({"": store}, str(tmp_path / "k.sock"), keys=KeyRing([ro]))
    owner = clients(spec)  # the owner needs no key
    h = owner.add(b"owner " * 30)
    owner.flush()
    assert h in store
    st = clients(spec, key_file=None, key=ro)
    assert st.readonly


# -- key files -------------------------------------------------------------------------------


def test_key_files_readable_by_others_are_refused(tmp_path):
    from vtstore.security.keys import load_key_file

    kf = tmp_path / "k.key"
    save_key_file(str(kf), Key.generate("k"))
    assert stat.S_IMODE(os.stat(kf).st_mode) == 0o600
    assert load_key_file(str(kf)).id == "k"
    for mode in (0o640, 0o604, 0o660, 0o602):
        os.chmod(kf, mode)
        with pytest.raises(KeyFileError, match="too open"):
            load_key_file(str(kf))
    ring = tmp_path / "server-keys"
    KeyRing([Key.generate("a")], path=str(ring)).save()
    assert stat.S_IMODE(os.stat(ring).st_mode) == 0o600
    os.chmod(ring, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        KeyRing.load(str(ring))
    # a keyring over the size read is an error, never silently shortened
    os.chmod(ring, 0o600)
    with open(ring, "a") as f:
        f.write(("#" * 1023 + "\n") * 4097)
    with pytest.raises(KeyFileError, match="larger than 4 MiB"):
        KeyRing.load(str(ring))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"vt_key": 1}',
        '{"vt_key": 1, "id": "a", "secret": "00"}',
        '{"vt_key": 1, "id": "a b", "secret": "' + "00" * 32 + '"}',
        '{"vt_key": 1, "id": "a", "secret": "' + "zz" * 32 + '"}',
        '{"vt_key": 1, "id": "a", "secret": "' + "00" * 32 + '", "rights": {"*": "fly"}}',
        '{"vt_key": 1, "id": "a", "secret": "' + "00" * 32 + '", "rights": ["read"]}',
        '{"vt_key": 2, "id": "a", "secret": "' + "00" * 32 + '"}',
    ],
)
def test_bad_key_files_are_one_clear_error(tmp_path, text):
    from vtstore.security.keys import load_key_file

    kf = tmp_path / "bad.key"
    kf.write_text(text)
    os.chmod(kf, 0o600)
    with pytest.raises(KeyFileError):
        load_key_file(str(kf))


# -- vt serve -------------------------------------------------------------------------------


def test_vt_serve_tcp_needs_keys_and_says_so(helpers, tmp_path):
    env = dict(helpers.subprocess_env(), VT_DIR=str(tmp_path / "base"), HOME=str(tmp_path))
    r = subprocess.run(
        helpers.vt_command("-S", "memory:", "serve", "127.0.0.1:0"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "vt serve: TCP needs keys: run vt key new NAME, or --insecure-no-auth"
    )


def test_vt_serve_insecure_mode_is_loud(helpers, tmp_path):
    proc = subprocess.Popen(
        helpers.vt_command("-S", "memory:", "serve", "--insecure-no-auth", "127.0.0.1:0"),
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        line = proc.stderr.readline()
        assert "WARNING: --insecure-no-auth" in line and "anyone" in line
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def _env(tmp_path):
    from vtstore import __file__ as vt_file

    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(vt_file))
    env["PYTHONPATH"] = src
    env["VT_DIR"] = str(tmp_path / "base")
    env.pop("VT_STORE", None)
    return env


def test_vt_cli_end_to_end_with_keys(tmp_path, server_process, helpers):
    """vt key new, vt serve --auth-keys, vt save/cat with $VT_KEY_FILE; a read
    key cannot save, a missing key is one line."""
    env = _env(tmp_path)
    ring = tmp_path / "server-keys"
    run = lambda *a, **kw: subprocess.run(  # noqa: E731
        helpers.vt_command(*a), env={**env, **kw}, capture_output=True, text=True, timeout=120
    )
    r = run("key", "new", "w", "--auth-keys", str(ring), "--key-file", str(tmp_path / "w.key"))
    assert r.returncode == 0, r.stderr
    r = run("key", "new", "r", "--rights", "read", "--auth-keys", str(ring),
            "--key-file", str(tmp_path / "r.key"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    srv = server_process(str(tmp_path / "dd"), "127.0.0.1:0", "--auth-keys", str(ring))
    spec = srv.start()
    data = tmp_path / "data"
    data.write_bytes(os.urandom(3 << 20))
    r = run("-S", spec, "save", str(data), VT_KEY_FILE=str(tmp_path / "w.key"))
    assert r.returncode == 0, r.stderr
    ref = r.stdout.strip()
    r = subprocess.run(
        helpers.vt_command("-S", spec, "cat", ref),
        env={**env, "VT_KEY_FILE": str(tmp_path / "r.key")},
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout == data.read_bytes()
    other = tmp_path / "other"
    other.write_bytes(os.urandom(1 << 20))
    r = run("-S", spec, "save", str(other), VT_KEY_FILE=str(tmp_path / "r.key"))
    assert r.returncode != 0 and "read-only" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run("-S", spec, "cat", ref)
    assert r.returncode != 0 and "authentication required" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # the global option names the key as the issue has it: vt --key-file FILE
    r = run("--key-file", str(tmp_path / "w.key"), "-S", spec, "save", str(other))
    assert r.returncode == 0, r.stderr
    assert srv.terminate() == 0


# -- UNIX sockets: the peer's uid --------------------------------------------------------------

#: A bare protocol client for the system python3 (run as another uid, it cannot
#: use this checkout's interpreter under /root): HELLO, print the answer's code.
PEER_SCRIPT = textwrap.dedent(
    """
    import json, socket, struct, sys
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    body = bytes([1, 0, 0, 1]) + b"VTSP" + bytes([1, 0, 0])
    s.sendall(struct.pack(">I", len(body)) + body)
    f = s.makefile("rb")
    n = struct.unpack(">I", f.read(4))[0]
    p = f.read(n)
    if p[1] & 2:
        print("error", p[4], json.loads(p[5:])["message"])
    else:
        print("welcome")
    s.settimeout(2)
    try:
        print("closed" if f.read(1) == b"" else "data")
    except OSError:
        print("open")
    """
)


def _as_nobody(sock_path, tmp_path=None):
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
         "-c", PEER_SCRIPT, str(sock_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def open_dir():
    """A directory other users can enter (pytest's tmp dirs are not)."""
    import shutil
    import tempfile
    from pathlib import Path

    d = tempfile.mkdtemp(prefix="vt-auth-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_unix_socket_refuses_another_uid(serve, open_dir, tmp_path, clients):
    """Even with the socket opened up to everyone (0666), a client of another uid
    is refused by SO_PEERCRED; --allow-uid lets it in."""
    store = MemoryStore()
    path = open_dir / "vt.sock"
    _, spec = serve({"": store}, str(path))
    os.chmod(path, 0o666)
    r = _as_nobody(path, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"error {P.E_AUTH} uid 65534 may not use this socket"), lines
    assert lines[1] == "closed"
    st = clients(spec)
    h = st.add(b"root is let in " * 10)
    st.flush()
    assert h in store
    path2 = open_dir / "vt2.sock"
    _, spec2 = serve({"": store}, str(path2), allow_uids=[65534])
    os.chmod(path2, 0o666)
    r = _as_nobody(path2, tmp_path)
    assert r.stdout.splitlines() == ["welcome", "open"], r.stdout + r.stderr


def test_keys_do_not_cross_the_wire(keyed, raw):
    """The secret appears in no packet of a successful exchange."""
    _, spec, _, keys = keyed
    key = keys["rw"]
    a = ClientAuth(key)
    start = a.start()
    c = raw(spec)
    c.request(P.OP_AUTH, start, tag=1)
    nonce = c.recv()
    proof = a.respond(nonce.payload)
    c.request(P.OP_AUTH, proof, tag=2)
    answer = c.recv()
    for blob in (start, nonce.payload, proof, answer.payload):
        assert key.secret not in bytes(blob) and key.secret.hex().encode() not in bytes(blob)
    assert len(proof) == 4 + 1 + 32 and ALL_RIGHTS


def test_key_file_named_in_a_clause(keyed, tmp_path, monkeypatch):
    """A `[remote]` clause of type tcp says `key_file`; `$VT_KEY_FILE` is not needed."""
    from vtstore.config import load_config
    from vtstore.stores.spec import open_store_spec

    _, spec, store, keys = keyed
    monkeypatch.delenv("VT_KEY_FILE", raising=False)
    kf = tmp_path / "ro.key"
    save_key_file(str(kf), keys["ro"])
    host, port = spec[4:].rsplit(":", 1)
    rc = tmp_path / "vtrc"
    rc.write_text(
        f"[GLOBAL]\nbasedir = {tmp_path}\n[remote]\ntype = tcp\nhost = {host}\nport = {port}\n"
        f"key_file = {kf}\n[nokey]\ntype = tcp\nhost = {host}\nport = {port}\n"
    )
    config = load_config(str(rc))
    with open_store_spec("[remote]", config=config) as st:
        assert st.get(HC) == BLOCK and st.readonly
    with pytest.raises(P.AuthError):
        open_store_spec("[nokey]", config=config)
    os.chmod(kf, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        open_store_spec("[remote]", config=config)
