"""The HTTP client store's streamed read (`vt -S http://... cat`): groups fetched
ahead (`vtstore.http.readahead`), each one buffer, read as slices; the server's
`b/get?joined&unchecked` (no hash check there, the client checks every block);
and a server that answers other bytes, which must never reach the output."""

from __future__ import annotations

import hashlib
import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from vtstore.blocks import IndirectBlock, block_for
from vtstore.errors import CorruptBlockError
from vtstore.http import readahead
from vtstore.http.auth import sign
from vtstore.http.client import HTTPStore
from vtstore.stores.datadir import DataDir
from vtstore.transcribe import transcribe

from .conftest import vt_cat

MIB = 1 << 20


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A datadir holding a 40 MiB random file whose tree has indirect blocks
    of indirect blocks (small blocks, so small fan-out), with a
    stretch of repeated 1 MiB pieces (the same leaves again: runs that do not
    come as one group)."""
    path = tmp_path_factory.mktemp("deep") / "dd"
    rnd = random.Random(17)
    piece = rnd.randbytes(MIB)
    data = rnd.randbytes(30 * MIB) + piece * 4 + rnd.randbytes(6 * MIB)
    with DataDir(path) as s:
        top = block_for(data, s, max_block_size=2048)
        kids = top.subblocks(s)
        assert len(kids) > 1 and all(type(k) is IndirectBlock for k in kids)
        assert all(type(k) is IndirectBlock for k in kids[0].subblocks(s))  # three levels
    return path, data, top


def test_a_deep_file_comes_back_whole_and_in_ranges(deep, httpd):
    path, data, top = deep
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        with HTTPStore(url, readonly=True) as c:
            assert c._joined and c._unchecked
            got = b"".join(top.chunks(c, joined=True))
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        rnd = random.Random(3)
        cuts = [(0, 1), (len(data) - 5, len(data)), (4095, 4097 + 5 * MIB)]
        cuts += [sorted(rnd.sample(range(len(data) + 1), 2)) for _ in range(6)]
        with HTTPStore(url, readonly=True) as c:
            for a, b in cuts:
                assert b"".join(top.chunks(c, a, b, joined=True)) == data[a:b], (a, b)


def test_a_small_budget_still_reads_everything_once(deep, httpd, monkeypatch):
    """With room for two groups ahead the stream still completes, in order,
    and no group is asked for twice (each request is counted)."""
    path, data, top = deep
    monkeypatch.setattr(readahead, "GROUP_BYTES", 256 << 10)
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        with HTTPStore(url, readonly=True) as c:
            c._ahead.budget = 512 << 10
            asked = []
            fetch = c._fetch_raw

            def counting(digests, n, expected=None):
                asked.extend(digests[k * 32 : (k + 1) * 32] for k in range(n))
                return fetch(digests, n, expected)

            c._ahead._fetch = c._fetch_raw = counting
            got = b"".join(top.chunks(c, joined=True))
            assert got == data
            leaves = [bytes(b.hashcode) for b in top.leaves(s)]
            # every distinct leaf asked for at most twice (a repeated leaf
            # taken once may be asked again when it comes back)
            assert len(asked) <= len(leaves) + len(set(leaves))
            assert set(leaves) <= set(asked)


# -- the unchecked route (a damaged block over it: test_large_file.py) -------------


def test_unchecked_is_refused_without_the_read_right(sample, httpd, client, keys):
    from vtstore.security.keys import KeyRing

    reader, _, _ = keys("reader", "read")
    writer, _, _ = keys("writer", "add")
    ring = KeyRing([reader, writer])
    url = httpd({"": sample.store}, keys=ring, read_key=True)
    c = client(url)
    h = sample.store.add(b"a private block")
    for target in ("/b/get?joined&unchecked", "/b/get?unchecked", "/b/get?joined"):
        for key, want in ((None, 401), (writer, 403), (reader, 200)):
            auth = {"Authorization": sign(key, "POST", target, bytes(h))} if key else {}
            st, _, body = c("POST", target, body=bytes(h), headers=auth)
            assert st == want, (target, key)
            assert body.endswith(b"a private block") == (want == 200), (target, key)


# -- a server that answers other bytes ----------------------------------------------


class Liar:
    """A proxy in front of a real vt httpd that flips one octet of the data in
    every block answer (`/b/get` and `/h/`) once `after` octets of block data
    have gone through: a malicious or broken server."""

    def __init__(self, upstream: str, after: int):
        up = urlsplit(upstream)
        self.after = after
        self.seen = 0
        self.lock = threading.Lock()
        liar = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                conn.request(self.command, self.path, body=body)
                r = conn.getresponse()
                data = bytearray(r.read())
                conn.close()
                if r.status == 200 and self.path.startswith(("/b/get", "/h/")):
                    head = 4 * (n // 32) if "joined" in self.path else 0
                    with liar.lock:
                        start, liar.seen = liar.seen, liar.seen + len(data) - head
                    if start + len(data) - head > liar.after:
                        at = head + max(0, liar.after - start) + 4
                        if at < len(data):
                            data[at] ^= 0x20
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_a_lying_server_never_gets_its_bytes_into_vt_cat(deep, tmp_path, httpd):
    """`vt cat` of a deep file comes whole from the server; through a server
    that flips an octet 20 MiB in: one line on stderr naming the block, a
    failing exit, and what came out is a true prefix of the file (nothing
    from the lie)."""
    path, data, top = deep
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        r = vt_cat(url, transcribe(top), tmp_path)
        assert r.returncode == 0, r.stderr
        assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()
        with Liar(url, after=20 * MIB) as liar:
            r = vt_cat(liar.url, transcribe(top), tmp_path)
            with HTTPStore(liar.url, readonly=True) as c, pytest.raises(CorruptBlockError):
                b"".join(top.chunks(c, joined=True))
    assert r.returncode == 1  # CorruptBlockError
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "sent other data" in err[0], err
    assert "Traceback" not in r.stderr.decode()
    assert len(r.stdout) < len(data) and data.startswith(r.stdout)


# -- the native leaf-ref split ------------------------------------------------------


def test_leaf_list_reads_what_leaf_refs_reads(deep):
    """`readahead.leaf_list` (native) against `blocks.leaf_refs` on a real
    indirect block, on refs with spans at the edges of a u64, and on 30,000
    mutations of them: the same digests and spans, or None for both."""
    from vtstore.blocks import HashCodeBlock, leaf_refs
    from vtstore.codec import encode_varint
    from vtstore.hashes import Hash_BLAKE3, Hash_SHA256

    def want(data):
        got = leaf_refs(data)
        if got is None or any(type(h) is not Hash_BLAKE3 for h in got[0]):
            return None
        return b"".join(got[0]), got[1]

    path, _, top = deep
    with DataDir(path, readonly=True) as s:
        node = s[top.subblocks(s)[0].subblocks(s)[0].hashcode]
    assert want(node) is not None and readahead.leaf_list(node, Hash_BLAKE3) == want(node)
    h = Hash_BLAKE3.from_data(b"x")
    seeds = [node[:400]]
    for span in (1, 127, 128, 2**57, 2**63, 2**64 - 1):
        seeds.append(HashCodeBlock(h, span).encode() * 2)
        assert readahead.leaf_list(seeds[-1], Hash_BLAKE3)[1] == [span, span]
    body = bytes([0]) + encode_varint(2**64) + bytes([Hash_BLAKE3.hashid]) + bytes(h)
    seeds.append(encode_varint(len(body)) + body)  # a span past a u64
    seeds.append(HashCodeBlock(Hash_SHA256.from_data(b"x"), 5).encode())  # another class
    rnd = random.Random(11)
    for k in range(30000):
        d = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(4)):
            if d:
                d[rnd.randrange(len(d))] = rnd.randrange(256)
        d = bytes(d[: rnd.randrange(len(d) + 1)] if k % 3 == 0 else d)
        assert readahead.leaf_list(d, Hash_BLAKE3) == want(d), d.hex()


def test_answer_buffers_are_used_again_only_when_free():
    from vtstore.http.client import Buffers

    pool = Buffers(most=2)
    a = pool.get(3 << 20)
    a[:4] = b"held"
    b = pool.get(100)
    assert a.obj is not b.obj  # a is still referred to
    part = a[1:3]
    del a
    c = pool.get(5)
    assert c.obj is not part.obj and bytes(part) == b"el"
    del part, b
    d = pool.get(2 << 20)  # the first one, free again (and large enough)
    assert len(d) == 2 << 20 and bytes(d[:4]) == b"held"
    del c
    e = pool.get(5 << 20)  # none large enough: a new one, not kept (most=2)
    assert len(e) == 5 << 20 and len(pool._all) == 2


def test_concurrent_readers_get_their_own_bytes(deep, httpd):
    """Four clients stream different ranges of a file at once through one
    server: the server's and the clients' answer buffers are used again
    only when free, so each gets exactly its bytes."""
    from concurrent.futures import ThreadPoolExecutor

    path, data, top = deep
    ranges = [(0, len(data)), (3 * MIB + 17, 29 * MIB), (MIB, 2 * MIB), (20 * MIB, len(data) - 3)]
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)

        def read(r):
            a, b = r
            h = hashlib.sha256()
            with HTTPStore(url, readonly=True) as c:
                for piece in top.chunks(c, a, b, joined=True):
                    h.update(piece)  # and drop it: its buffer is free again
            return h.digest()

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(read, ranges * 2))
    assert got == [hashlib.sha256(data[a:b]).digest() for a, b in ranges * 2]


def test_closing_mid_stream_leaves_nothing_running(deep, httpd):
    """A reader that stops after the first piece and closes the store: the
    read-ahead's fetches still running end, none is sent after (the autouse
    fixture checks that no thread is left running)."""
    path, data, top = deep
    with DataDir(path, readonly=True) as s:
        url = httpd({"": s}, readonly=True)
        for _ in range(3):
            with HTTPStore(url, readonly=True) as c:
                pieces = top.chunks(c, joined=True)
                first = bytes(next(pieces))
                assert first and data.startswith(first)
            pieces.close()
            assert c._exec is None and not c._ahead._held
            assert c._ahead._sending == 0  # none sent (or half sent) after close


class Claimer:
    """A server that claims a large Content-Length for every block answer
    (`claim`), sends 100 octets of it and hangs up."""

    def __init__(self, claim: int):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                body = (
                    b'{"hashclass": "blake3", "readonly": true, "joined": true, "unchecked": true}'
                )
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-length", str(claim))
                self.end_headers()
                self.wfile.write(bytes(100))
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.mark.parametrize("claim", [100 << 20, 3 << 30])
def test_a_claimed_length_allocates_nothing(claim):
    """A block answer claiming 100 MiB (within what 8 blocks may hold: read
    as it comes) or 3 GiB (more than asked for: refused) and cut short: one
    `StoreError`, and the client never holds more than a few MiB for it."""
    import tracemalloc

    from vtstore.errors import StoreError
    from vtstore.hashes import Hash_BLAKE3

    srv = Claimer(claim)
    hs = [Hash_BLAKE3.from_data(b"%d" % i) for i in range(8)]
    try:
        with HTTPStore(srv.url, readonly=True) as c:
            tracemalloc.start()
            try:
                with pytest.raises(StoreError):
                    c.get_many(hs)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        srv.close()
    assert peak < 8 << 20, peak
