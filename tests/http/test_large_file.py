"""A large file over HTTP: `DataDir.read_joined` (a run of plain blocks read
into one buffer, checked), the stream that sends it on the socket itself
(`DirectSend`), the client store's joined batches (`POST /b/get?joined`), and
damage: a flipped byte is never delivered as content, a cut body says so."""

from __future__ import annotations

import hashlib
import random
import socket
from urllib.parse import quote, urlsplit

import pytest
from tests.stores.test_corruption import flip
from tests.stores.test_get_many import where

from vtstore.blocks import block_for
from vtstore.errors import CorruptBlockError, MissingBlockError, VTError
from vtstore.hashes import Hash_BLAKE3
from vtstore.http.client import HTTPStore
from vtstore.stores.datadir import DataDir
from vtstore.transcribe import transcribe

from .conftest import vt_cat

MIB = 1 << 20


def mixed_data(n_mib: int, seed: int = 7) -> bytes:
    """Random stretches (plain records) between text (zstd frames)."""
    rnd = random.Random(seed)
    parts = []
    for i in range(n_mib):
        if i % 4 == 3:
            parts.append(b"".join(b"%08d some compressible text\n" % j for j in range(32768))[:MIB])
        else:
            parts.append(rnd.randbytes(MIB))
    return b"".join(parts)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A datadir holding a 24 MiB file, three quarters plain records."""
    path = tmp_path_factory.mktemp("big") / "dd"
    data = mixed_data(24)
    with DataDir(path) as s:
        top = block_for(data, s, max_block_size=16384)
    return path, data, top


def raw_get(url: str, target: str, extra: str = "") -> tuple[bytes, dict, bytes]:
    """One GET on its own connection, read until the server closes it:
    `(status line, headers, body as received)`; a cut body stays cut."""
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
        chunks = []
        while True:
            try:
                c = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    hdrs = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return lines[0], hdrs, body


# -- the datadir ---------------------------------------------------------------------


def test_read_joined_is_get_many_joined(big):
    path, data, top = big
    with DataDir(path, readonly=True) as s:
        leaves = [b.hashcode for b in top.leaves(s)]
        kinds = {e.flags & 3 for e in s._index.get_many(leaves)}
        assert kinds == {0, 1}  # plain and zstd records both
        rnd = random.Random(3)
        for _ in range(20):
            a = rnd.randrange(len(leaves))
            run = leaves[a : a + rnd.randrange(1, 700)]
            want = b"".join(s.get_many(run))
            assert s.read_joined(run) == want
            got, lengths = s.read_joined(run, lengths=True)
            assert got == want and lengths == [len(d) for d in s.get_many(run)]
        assert s.read_joined(leaves[:3] + leaves[:3]) == b"".join(s.get_many(leaves[:3]) * 2)


def test_read_joined_names_a_flipped_byte_and_a_missing_block(tmp_path):
    rnd = random.Random(2)
    blocks = [rnd.randbytes(rnd.randrange(1000, 20000)) for _ in range(600)]
    with DataDir(tmp_path / "dd") as s:
        hs = s.add_many(blocks)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        e, file = where(s, hs[300])
        assert e.flags & 3 == 0
    flip(file, e.payload_offset + e.data_offset + e.data_length // 2)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        assert s.read_joined(hs[:300]) == b"".join(blocks[:300])
        with pytest.raises(CorruptBlockError) as ei:
            s.read_joined(hs[200:400])
        assert ei.value.hashcode == hs[300]
        with pytest.raises(MissingBlockError):
            s.read_joined([*hs[:10], Hash_BLAKE3.from_data(b"not stored")])


# -- vt httpd ------------------------------------------------------------------------


def test_a_large_file_whole_and_in_ranges(big, httpd, client):
    path, data, top = big
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        target = "/i/" + quote(transcribe(top), safe="")
        c = client(url)
        status, hdrs, body = c.get(target)
        assert status == 200 and len(body) == len(data)
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        n = len(data)
        for a, b in [
            (0, 1),
            (5, 3 * MIB + 17),  # inside plain records
            (3 * MIB - 100, 4 * MIB + 100),  # plain into compressed and out again
            (7 * MIB + 1, 9 * MIB - 1),
            (n - 12345, n),
            (1, n - 1),
        ]:
            status, hdrs, body = c.get(target, range=f"bytes={a}-{b - 1}")
            assert status == 206, (a, b)
            assert body == data[a:b], (a, b)
        status, hdrs, body = c("HEAD", target)
        assert status == 200 and body == b"" and hdrs["content-length"] == str(n)


def test_keep_alive_after_a_large_answer(big, httpd):
    """A large body sent on the socket itself hands the connection back: the
    next answers (large, small, pipelined behind it) arrive whole and in order."""
    path, data, top = big
    target = "/i/" + quote(transcribe(top), safe="")
    with DataDir(path, readonly=True) as s:
        leaf = next(iter(top.leaves(s))).hashcode
        small = s[leaf]
        url = httpd({"": s}, readonly=True)
        u = urlsplit(url)
        ts = (target, f"/h/{leaf}", target, f"/h/{leaf}")
        reqs = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % t.encode() for t in ts)
        last = b"GET /h/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % str(leaf).encode()
        with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
            sock.sendall(reqs + last)
            f = sock.makefile("rb")
            bodies = []
            for _ in range(5):
                status = f.readline()
                assert status.startswith(b"HTTP/1.1 200"), status
                length = None
                while (line := f.readline()) != b"\r\n":
                    k, _, v = line.partition(b":")
                    if k.lower() == b"content-length":
                        length = int(v)
                bodies.append(f.read(length))
    assert bodies == [data, small, data, small, small]


def test_a_flipped_byte_cuts_the_body_before_it(tmp_path, httpd):
    """The block holding a flipped byte is never sent: the answer stops (the
    connection closes short of its Content-Length) after the good data before
    it, and a range over it gets no more than a cut body either."""
    rnd = random.Random(9)
    data = rnd.randbytes(12 * MIB)
    with DataDir(tmp_path / "dd") as s:
        top = block_for(data, s, max_block_size=16384)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        leaves = list(top.leaves(s))
        victim = leaves[len(leaves) * 2 // 3]
        offset = sum(b.span for b in leaves[: leaves.index(victim)])
        e, file = where(s, victim.hashcode)
        assert e.flags & 3 == 0
    flip(file, e.payload_offset + e.data_offset + 10)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        target = "/i/" + quote(transcribe(top), safe="")
        status, hdrs, body = raw_get(url, target)
        assert status == b"HTTP/1.1 200 OK"
        assert int(hdrs[b"content-length"]) == len(data)
        assert len(body) <= offset  # nothing from the bad block on
        assert body == data[: len(body)]
        # a range that begins in the bad block: headers perhaps, no content
        status, hdrs, body = raw_get(url, target, f"Range: bytes={offset + 5}-{offset + 99999}\r\n")
        assert body == b"" or status.startswith(b"HTTP/1.1 502")
        # a range before it is whole
        status, hdrs, body = raw_get(url, target, f"Range: bytes=100-{offset - 1}\r\n")
        assert status == b"HTTP/1.1 206 Partial Content" and body == data[100:offset]


# -- the client store ----------------------------------------------------------------


def test_client_reads_joined_batches(big, httpd):
    path, data, top = big
    with DataDir(path, readonly=True) as s:
        leaves = [b.hashcode for b in top.leaves(s)]
        want = s.get_many(leaves[:900])
        url = httpd({"": s}, readonly=True)
        with HTTPStore(url, readonly=True) as c:
            assert c._joined
            assert c.get_many(leaves[:900]) == want
            assert top.read(c, 0, len(data)) == data
            gone = Hash_BLAKE3.from_data(b"never stored")
            assert c.get(gone) is None
            with pytest.raises(MissingBlockError):
                c.get_many([leaves[0], gone, leaves[1]])
            # a missing one in a batch: the others still come (the read-ahead's way)
            assert c._fetch([leaves[0], gone, leaves[1]]) == [want[0], None, want[1]]


def test_client_refuses_a_damaged_block(tmp_path, httpd, client):
    """A byte flipped on disk: the checked `b/get?joined` never sends it (the
    server reads the slow way and names the block), the unchecked one (the
    client checks) sends it as stored, and the client refuses it either way."""
    rnd = random.Random(4)
    blocks = [rnd.randbytes(9000) for _ in range(300)]
    with DataDir(tmp_path / "dd") as s:
        hs = s.add_many(blocks)
    with DataDir(tmp_path / "dd", readonly=True) as s:
        e, file = where(s, hs[150])
    flip(file, e.payload_offset + e.data_offset + 3)
    body = b"".join(hs[140:160])
    with DataDir(tmp_path / "dd", readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        c = client(url)
        st, _, answer = c("POST", "/b/get?joined&unchecked", body=body)
        sent = answer[4 * 20 :]
        assert st == 200 and len(sent) == 20 * 9000 and sent != b"".join(blocks[140:160])
        st, _, answer = c("POST", "/b/get?joined", body=body)
        assert st != 200 or answer[4 * 20 :] != sent  # never the flipped byte
        with HTTPStore(url, readonly=True) as c:
            assert c._unchecked
            assert c.get_many(hs[:150]) == blocks[:150]
            with pytest.raises(VTError):
                c.get_many(hs[100:200])
            with pytest.raises(CorruptBlockError, match="sent other data"):
                c.read_joined(hs[140:160])
            assert c.read_joined(hs[:140]) == b"".join(blocks[:140])


def test_vt_cat_over_http_is_byte_exact(big, tmp_path, httpd):
    path, data, top = big
    with DataDir(path, readonly=True) as s:
        r = vt_cat(httpd({"": s}, readonly=True), transcribe(top), tmp_path)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()


def test_tls_streams_through_the_transport(big, tmp_path):
    """Over TLS the body must go through the TLS transport (no socket of its
    own): a large file still arrives whole and right."""
    import http.client
    import ssl

    from vtstore.http.app import HTTPApp
    from vtstore.http.server import BackgroundServer
    from vtstore.security.tls import make_self_signed

    path, data, top = big
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    make_self_signed(str(cert), str(key))
    with DataDir(path, readonly=True) as s:
        app = HTTPApp({"": s}, insecure_no_auth=True)
        with BackgroundServer(app, tls_cert=str(cert), tls_key=str(key)) as srv:
            u = urlsplit(srv.url)
            ctx = ssl.create_default_context(cafile=str(cert))
            conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)
            try:
                conn.request("GET", "/i/" + quote(transcribe(top), safe=""))
                r = conn.getresponse()
                body = r.read()
            finally:
                conn.close()
    assert r.status == 200 and body == data


def test_a_client_that_goes_away_mid_file(big, httpd, client):
    """Clients that close the connection after a little of a large body
    leave the server well: the next requests are answered whole."""
    path, data, top = big
    target = "/i/" + quote(transcribe(top), safe="")
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        u = urlsplit(url)
        for _ in range(4):
            with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        status, _, body = client(url).get(target, range="bytes=1000-2000999")
        assert status == 206 and body == data[1000:2001000]
