"""Garbage, truncated and oversized packets: the server answers with an error or
drops that connection, never crashes, and never allocates what a length claims."""

from __future__ import annotations

import logging
import os
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtstore.hashes import Hash_SHA1
from vtstore.net import protocol as P
from vtstore.stores.memory import MemoryStore


@pytest.fixture
def server(serve, caplog):
    """A server on 127.0.0.1 whose log must show no bug (ERROR) at the end."""
    caplog.set_level(logging.WARNING, logger="vtstore.net")
    store = MemoryStore()
    store.add(b"some block")
    srv, spec = serve({"": store}, max_packet=1 << 20)
    yield srv, spec
    bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bugs, bugs[0].getMessage()


def _still_serves(raw, spec):
    c = raw(spec)
    assert not c.hello().is_error
    c.request(P.OP_LENGTH, tag=2)
    assert P.decode_count(c.recv().payload) == 1


def _connection_error(c) -> int:
    p = c.recv()
    assert p is not None and p.op == 0 and p.tag == 0 and p.is_error
    code, detail = P.decode_error(p.payload)
    assert detail["message"]
    assert c.at_eof()
    return code


def test_oversized_before_handshake_is_refused_unread(server, raw):
    srv, spec = server
    c = raw(spec)
    tracemalloc.start()
    try:
        c.send(struct.pack(">I", 0xFFFFFFF0) + b"x" * 100)
        assert _connection_error(c) == P.E_TOO_LARGE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nowhere near the 4 GiB claimed
    _still_serves(raw, spec)


def test_oversized_after_handshake(server, raw):
    srv, spec = server
    c = raw(spec)
    c.hello()
    tracemalloc.start()
    try:
        c.send(struct.pack(">I", srv.max_packet + 1))
        assert _connection_error(c) == P.E_TOO_LARGE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < srv.max_packet // 2
    _still_serves(raw, spec)


def test_a_handshake_packet_is_small(server, raw):
    _, spec = server
    c = raw(spec)
    c.send(struct.pack(">I", P.HANDSHAKE_MAX_PACKET + 1))
    assert _connection_error(c) == P.E_TOO_LARGE


def test_http_request_to_the_block_port(server, raw):
    _, spec = server
    c = raw(spec)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _connection_error(c) == P.E_TOO_LARGE  # "GET " read as a length
    _still_serves(raw, spec)


@pytest.mark.parametrize(
    "body",
    [
        b"\x02",  # shorter than a header
        bytes((P.OP_GET, 0x80, 0, 1)),  # reserved flag
        bytes((P.OP_GET, 0, 0xFF, 0xFF, 0xFF, 0x7F, 1)),  # channel too large
        bytes((P.OP_GET, 0, 0, 0x80, 0)),  # non-canonical varint tag
    ],
)
def test_bad_headers_close_the_connection(server, raw, body):
    _, spec = server
    c = raw(spec)
    c.hello()
    c.send(struct.pack(">I", len(body)) + body)
    assert _connection_error(c) == P.E_PROTOCOL
    _still_serves(raw, spec)


@pytest.mark.parametrize(
    "prefix",
    [b"\x00\x00", struct.pack(">I", 1000) + b"partial"],
)
def test_truncated_packets_drop_only_that_connection(server, raw, prefix):
    srv, spec = server
    c = raw(spec)
    c.hello()
    c.send(prefix)
    c.sock.shutdown(2)
    c.close()
    _still_serves(raw, spec)


def test_bad_payloads_get_error_answers_and_the_connection_lives(server, raw):
    _, spec = server
    c = raw(spec)
    c.hello()
    cases = [
        (P.OP_ADD, P.encode_varint(1 << 40)),  # more blocks than octets
        (P.OP_GET, b"\x01\x09" + b"\x00" * 32),  # unknown hash class id 9
        (P.OP_GET, P.encode_hashcodes([Hash_SHA1.from_data(b"")])),
        (P.OP_CONTAINS, b"\x01"),  # a count and no hashcode
        (P.OP_HASHCODES, b"\x08"),  # unknown window flag
        (P.OP_LENGTH, b"extra"),
        (P.OP_ARCHIVE_LAST, b"{not json"),
        (P.OP_ARCHIVE_UPDATE, P.encode_json({"name": 5})),
        (P.OP_INDIRECT_COMPLETE, b"\x05\x00"),  # a blockref cut short
        (0x55, b""),  # unknown op
    ]
    for tag, (op, payload) in enumerate(cases, 10):
        c.request(op, payload, tag=tag)
    codes = {}
    for _ in cases:
        p = c.recv()
        assert p.is_error
        codes[p.tag] = P.decode_error(p.payload)[0]
    assert codes[19] == P.E_UNKNOWN_OP
    assert codes[12] == P.E_HASHCLASS
    assert all(v in (P.E_PROTOCOL, P.E_HASHCLASS, P.E_UNKNOWN_OP) for v in codes.values())
    c.request(P.OP_LENGTH, tag=99)
    assert P.decode_count(c.recv().payload) == 1
    c.request(P.OP_LENGTH, flags=P.F_RESPONSE, tag=100)  # clients do not answer
    assert P.decode_error(c.recv().payload)[0] == P.E_PROTOCOL


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda op, flags, body: (
                P.encode_packet(op, 0, 0, 7, body)[:4] + bytes((op, flags)) + body
            ),
            st.integers(0, 255),
            st.integers(0, 7),
            st.binary(max_size=200),
        ),
    )
)
def test_fuzzed_streams_never_crash_the_server(server, raw, data):
    _, spec = server
    c = raw(spec)
    c.hello()
    c.send(data)
    c.sock.shutdown(1)  # end of what we send; read what comes back
    while True:
        try:
            p = c.recv()
        except (P.TruncatedPacket, OSError):
            break
        if p is None:
            break
        assert p.flags & P.F_RESPONSE
    c.close()
    _still_serves(raw, spec)


def test_random_garbage_before_hello(server, raw):
    _, spec = server
    for _ in range(20):
        c = raw(spec)
        c.send(os.urandom(64))
        c.sock.shutdown(1)
        while True:
            try:
                if c.recv() is None:
                    break
            except (P.TruncatedPacket, OSError):
                break
        c.close()
    _still_serves(raw, spec)
