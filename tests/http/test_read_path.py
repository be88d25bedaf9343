"""vt httpd's read path: corked small answers stay whole and in order over a
pipelined keep-alive connection, whatever their size around the cork limit,
and a file streamed from a datadir (batched reads, one piece read ahead)
arrives byte for byte."""

from __future__ import annotations

import random
from urllib.parse import quote

from vtstore.blocks import block_for
from vtstore.http.server import CORK_MAX
from vtstore.stores.datadir import DataDir
from vtstore.transcribe import transcribe


def _responses(raw: bytes) -> list[tuple[bytes, dict, bytes]]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        hdrs = dict(line.lower().split(b": ", 1) for line in lines[1:])
        n = int(hdrs[b"content-length"])
        out.append((lines[0], hdrs, rest[:n]))
        raw = rest[n:]
    return out


def test_pipelined_small_and_cork_sized_answers(tmp_path, httpd, client):
    rnd = random.Random(4)
    sizes = [40, 100, 8000, CORK_MAX - 200, CORK_MAX - 1, CORK_MAX, CORK_MAX + 5, 200_000]
    blocks = [rnd.randbytes(n) for n in sizes * 3]
    rnd.shuffle(blocks)
    with DataDir(tmp_path / "dd") as s:
        hs = s.add_many(blocks)
        url = httpd({"": s}, readonly=True)
        c = client(url)
        reqs = b"".join(b"GET /h/%s HTTP/1.1\r\nHost: x\r\n\r\n" % str(h).encode() for h in hs)
        last = b"GET /h/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % str(hs[0]).encode()
        got = _responses(c.raw(reqs + last, timeout=30))
    assert len(got) == len(hs) + 1
    for (status, _hdrs, body), want in zip(got, blocks + blocks[:1], strict=True):
        assert status == b"HTTP/1.1 200 OK"
        assert body == want


def test_a_file_streams_byte_for_byte(tmp_path, httpd, client):
    rnd = random.Random(5)
    data = b"".join(
        rnd.randbytes(5000) + (b"%08d compressible line\n" % i) * 200 for i in range(1500)
    )
    with DataDir(tmp_path / "dd") as s:
        top = block_for(data, s, max_block_size=8192)
        s.flush()
        url = httpd({"": s}, readonly=True)
        c = client(url)
        target = "/i/" + quote(transcribe(top), safe="")
        status, _, body = c.get(target)
        assert status == 200 and body == data
        status, _, body = c.get(target, range="bytes=123456-3456789")
        assert status == 206 and body == data[123456:3456790]
