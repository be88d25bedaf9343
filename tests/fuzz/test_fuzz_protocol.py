"""Fuzz the block protocol's decoders (vtstore.net.protocol) and the server's
request handlers, and feed a live server mutated packets.

A mutated byte stream is read as packets (the length prefix checked against the
limit before anything is read), and every packet's payload is decoded as what its
op and flags say it is: a request (as the server does: the handlers run over a
real memory store), an answer (as the client does), or an error answer (turned
into the exception it stands for).  Seeds: every packet of
tests/net/protocol-vectors.json and real packets of every kind encoded here.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from pathlib import Path

import pytest

from vtstore.blocks import block_for
from vtstore.errors import FormatError, HashClassMismatchError, ReadOnlyError, VTError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1
from vtstore.net import protocol as P
from vtstore.net.handlers import HANDLERS, Export, Reply
from vtstore.stores.memory import MemoryStore

VECTORS = Path(__file__).parents[1] / "net" / "protocol-vectors.json"
LIMIT = 1 << 20
# what a peer's bad bytes may legitimately make a decoder raise
EXPECTED = (FormatError, HashClassMismatchError)


def _store() -> MemoryStore:
    st = MemoryStore(hashclass=Hash_BLAKE3)
    st.add_many([b"hello", b"world!", bytes(range(256)) * 4])
    return st


def _seeds() -> list[bytes]:
    seeds = [bytes.fromhex(v["hex"]) for v in json.loads(VECTORS.read_text())]
    st = _store()
    hs = list(st.hashcodes())
    h1 = Hash_SHA1.from_data(b"x")
    ind = block_for(bytes(range(256)) * 400, st, max_block_size=4096)
    assert ind.indirect
    w = P.Welcome(1, Hash_BLAKE3, True, True, P.DEFAULT_MAX_PACKET, 64, "memory:")
    req, rsp, err = 0, P.F_RESPONSE, P.F_RESPONSE | P.F_ERROR

    def pkt(op, flags, *parts, ch=1, tag=5):
        return P.encode_packet(op, flags, ch, tag, *parts)

    seeds += [
        pkt(P.OP_HELLO, req, P.encode_hello(1, Hash_BLAKE3, "backup"), ch=0),
        pkt(P.OP_HELLO, req, P.encode_hello(1, None, ""), ch=2),
        pkt(P.OP_HELLO, rsp, P.encode_welcome(w)),
        pkt(P.OP_ADD, req, P.encode_blocks([b"a", b"", b"bc" * 40])),
        pkt(P.OP_ADD, rsp, P.encode_hashcodes(hs)),
        pkt(P.OP_GET, req, P.encode_hashcodes(hs + [h1])),
        pkt(P.OP_GET, rsp, *P.encode_get_answer_parts([b"hello", None, b"world!"])),
        pkt(P.OP_CONTAINS, req, P.encode_hashcodes(hs[:2])),
        pkt(P.OP_CONTAINS, rsp, P.encode_bitmap([True, False, True] * 5)),
        pkt(P.OP_HASHCODES, req, P.encode_window(hs[0], True, 10)),
        pkt(P.OP_HASHCODES, rsp, P.encode_listing(hs, True)),
        pkt(P.OP_HASH_OF_HASHCODES, req, P.encode_window(None, False, None)),
        pkt(P.OP_HASH_OF_HASHCODES, rsp, P.encode_hoh(hs[0], hs[2])),
        pkt(P.OP_LENGTH, req),
        pkt(P.OP_LENGTH, rsp, P.encode_count(123456)),
        pkt(P.OP_ARCHIVE_LIST, rsp | P.F_JSON, P.encode_json({"archives": ["a", "b"]})),
        pkt(P.OP_ARCHIVE_LAST, req | P.F_JSON, P.encode_json({"name": "home"})),
        pkt(P.OP_ARCHIVE_UPDATE, req | P.F_JSON, P.encode_json({"name": "x", "text": "1 D{}"})),
        pkt(P.OP_INDIRECT_COMPLETE, req, ind.encode()),
        pkt(P.OP_INDIRECT_COMPLETE, rsp, P.encode_completeness(False, 3, [hs[1]])),
        pkt(P.OP_GET, err, P.encode_error(P.E_MISSING, "no", hashcode=str(hs[0]), store="s")),
        pkt(P.OP_ADD, err, P.encode_error(P.E_CORRUPT, "bad", hashcode=str(hs[1]))),
        pkt(0, err, P.encode_error(P.E_TOO_LARGE, "too big", limit=4096), ch=0, tag=0),
    ]
    # a stream of several packets, as a connection carries them
    seeds.append(b"".join(seeds[-12:-4]))
    return seeds


_REQUEST = {
    P.OP_HELLO: P.decode_hello,
    P.OP_ADD: P.decode_blocks,
    P.OP_GET: P.decode_hashcodes,
    P.OP_CONTAINS: P.decode_hashcodes,
    P.OP_HASHCODES: P.decode_window,
    P.OP_HASH_OF_HASHCODES: P.decode_window,
    P.OP_ARCHIVE_LAST: P.decode_json,
    P.OP_ARCHIVE_UPDATE: P.decode_json,
}
_ANSWER = {
    P.OP_HELLO: P.decode_welcome,
    P.OP_ADD: P.decode_hashcodes,
    P.OP_GET: P.decode_get_answer,
    P.OP_CONTAINS: P.decode_bitmap,
    P.OP_HASHCODES: P.decode_listing,
    P.OP_HASH_OF_HASHCODES: P.decode_hoh,
    P.OP_LENGTH: P.decode_count,
    P.OP_ARCHIVE_LIST: P.decode_json,
    P.OP_ARCHIVE_LAST: P.decode_json,
    P.OP_ARCHIVE_UPDATE: P.decode_json,
    P.OP_INDIRECT_COMPLETE: P.decode_completeness,
}


def _client_side(data: bytes) -> None:
    """Read `data` as a client reads a server's packets, decoding each payload."""
    rfile = io.BufferedReader(io.BytesIO(data))
    while (pkt := P.read_packet(rfile, LIMIT)) is not None:
        if pkt.is_error:
            code, detail = P.decode_error(pkt.payload)
            exc = P.error_for(code, detail)
            assert isinstance(exc, VTError)
            str(exc)  # the one line the CLI prints
        elif pkt.flags & P.F_RESPONSE and pkt.op in _ANSWER:
            _ANSWER[pkt.op](pkt.payload)
        elif pkt.op in _REQUEST:
            _REQUEST[pkt.op](pkt.payload)


def test_fuzz_protocol_packets(fuzz):
    t0 = time.perf_counter()
    res = fuzz(_client_side, _seeds(), expected=EXPECTED)
    assert res.failures == [], res.summary() + "\n" + "\n".join(map(repr, res.failures[:10]))
    # the seeds are valid: a good share of the mutations must still decode
    assert res.accepted > res.tried // 20, res.summary()
    print(res.summary(), f"{time.perf_counter() - t0:.1f} s")


def test_fuzz_server_handlers(fuzz):
    """Each packet's payload goes to the handler of its op, over a real store (the
    server answers any VTError or Reply with an error packet; anything else would
    be an internal error)."""
    exports = [Export("", _store()), Export("ro", _store(), readonly=True)]

    def handle(data: bytes) -> None:
        rfile = io.BufferedReader(io.BytesIO(data))
        while (pkt := P.read_packet(rfile, LIMIT)) is not None:
            handler = HANDLERS.get(pkt.op)
            if handler is not None:
                flags, parts = handler(exports[pkt.channel & 1], pkt.payload)
                assert b"".join(bytes(p) for p in parts) is not None

    res = fuzz(handle, _seeds(), expected=(VTError, Reply))
    assert res.failures == [], res.summary() + "\n" + "\n".join(map(repr, res.failures[:10]))
    print(res.summary())


def test_deep_json_is_a_format_error():
    """A JSON payload nested past the interpreter's recursion limit is refused."""
    for payload in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(FormatError):
            P.decode_json(payload)
    with pytest.raises(FormatError):
        P.decode_error(b"\x01" + b"[" * 100_000)


@pytest.mark.parametrize(
    "detail",
    [{"hashcode": 5}, {"hashcode": ["x"]}, {"hashcode": {}}, {"message": None}, {"store": 1}],
)
def test_error_for_odd_details(detail):
    for code in (P.E_MISSING, P.E_CORRUPT, P.E_READONLY, P.E_HASHCLASS, 99, 10**30):
        exc = P.error_for(code, detail)
        assert isinstance(exc, VTError)
        str(exc)


# -- a live server fed mutated packets --------------------------------------------


def _recv_all(sock: socket.socket) -> bytes:
    out = []
    while True:
        try:
            b = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not b:
            break
        out.append(b)
    return b"".join(out)


def test_live_server_survives_mutated_packets(fuzz, monkeypatch, caplog):
    """2,000 connections, each a good HELLO then a mutated packet stream: every
    answer is a response packet, the server logs no bug, and a good client is
    served afterwards."""
    from vtstore.net.client import StreamStore
    from vtstore.net.server import BlockServer

    monkeypatch.delenv("VT_FUZZ_N", raising=False)  # a connection each: keep it bounded
    caplog.set_level(logging.WARNING, logger="vtstore.net")
    store = _store()
    # past the handshake is what this fuzzes: a server that lets anyone in
    server = BlockServer({"": store, "ro": _store()}, max_packet=LIMIT, insecure_no_auth=True)
    spec = server.listen("127.0.0.1:0")
    host, port = spec[4:].rsplit(":", 1)
    hello = P.encode_packet(P.OP_HELLO, 0, 1, 1, P.encode_hello(1, Hash_BLAKE3, ""))
    try:

        def send(data: bytes) -> None:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(hello + data)
                s.shutdown(socket.SHUT_WR)
                answers = io.BufferedReader(io.BytesIO(_recv_all(s)))
                while True:
                    try:
                        p = P.read_packet(answers, LIMIT * 2)
                    except P.TruncatedPacket:
                        break
                    if p is None:
                        break
                    assert p.flags & P.F_RESPONSE

        res = fuzz(send, _seeds(), n=2000, expected=(FormatError,), slow=5.0)
        assert res.failures == [], res.summary() + "\n" + "\n".join(map(repr, res.failures[:5]))
        with StreamStore(spec) as c:
            h = c.add(b"after the storm")
            c.flush()
            assert c[h] == b"after the storm" and len(c) == len(store)
    finally:
        server.shutdown()
    bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bugs, bugs[0].getMessage()


def test_handlers_refuse_adds_on_a_read_only_export():
    ro = Export("ro", _store(), readonly=True)
    with pytest.raises(ReadOnlyError):
        HANDLERS[P.OP_ADD](ro, P.encode_blocks([b"x"]))
