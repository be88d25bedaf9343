"""The block protocol codecs: committed vectors, docs/PROTOCOL.md, hostile input.

Regenerate the vectors after a deliberate format change with
`python tests/net/test_protocol.py --write` (and update docs/PROTOCOL.md).
"""

import hashlib
import hmac
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import IndirectBlock
from vtstore.errors import FormatError, VTError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1
from vtstore.net import protocol as P

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VECTORS_PATH = HERE / "protocol-vectors.json"

H_HELLO = Hash_BLAKE3.from_data(b"hello")
H_WORLD = Hash_BLAKE3.from_data(b"world!")

# The AUTH vectors' key and nonces (docs/PROTOCOL.md §2a)
AUTH_SECRET = bytes(range(32))
AUTH_CLIENT_NONCE = b"\x11" * 32
AUTH_SERVER_NONCE = b"\x22" * 32


def auth_transcript() -> bytes:
    """The AUTH step 1 request payload followed by its answer payload."""
    start = b"VTSA\x01" + bytes([6]) + b"laptop" + AUTH_CLIENT_NONCE
    return start + b"\x01" + AUTH_SERVER_NONCE


def auth_proof(label: bytes) -> bytes:
    """The spec's proof, computed here with hmac alone (not vtstore.security)."""
    return hmac.new(AUTH_SECRET, label + auth_transcript(), hashlib.sha256).digest()


def build_vectors() -> list[dict]:
    """Every vector: a name, what it is, and the whole framed packet in hex."""
    pk = P.encode_packet
    R = P.F_RESPONSE
    welcome = P.Welcome(1, Hash_BLAKE3, False, True, P.DEFAULT_MAX_PACKET, 64, "memory:")
    indirect = IndirectBlock(H_HELLO, 11)
    v = [
        (
            "hello",
            "HELLO on channel 0, tag 1: version 1, hash class blake3 (id 2), default export",
            pk(P.OP_HELLO, 0, 0, 1, P.encode_hello(1, Hash_BLAKE3, "")),
        ),
        (
            "hello_named_any_hashclass",
            "HELLO on channel 1, tag 9: version 1, any hash class, export 'backup'",
            pk(P.OP_HELLO, 0, 1, 9, P.encode_hello(1, None, "backup")),
        ),
        (
            "welcome",
            "HELLO answer: version 1, blake3, archives, max packet 16 MiB, 64 outstanding",
            pk(P.OP_HELLO, R, 0, 1, P.encode_welcome(welcome)),
        ),
        (
            "add",
            "ADD, tag 2: the blocks 'hello' and 'world!'",
            pk(P.OP_ADD, 0, 0, 2, P.encode_blocks([b"hello", b"world!"])),
        ),
        (
            "add_answer",
            "ADD answer, tag 2: their blake3 hashcodes",
            pk(P.OP_ADD, R, 0, 2, P.encode_hashcodes([H_HELLO, H_WORLD])),
        ),
        (
            "get",
            "GET, tag 3: two hashcodes",
            pk(P.OP_GET, 0, 0, 3, P.encode_hashcodes([H_HELLO, H_WORLD])),
        ),
        (
            "get_answer",
            "GET answer, tag 3: 'hello', then missing",
            pk(P.OP_GET, R, 0, 3, *P.encode_get_answer_parts([b"hello", None])),
        ),
        (
            "contains_answer",
            "CONTAINS answer, tag 4: present, absent, present",
            pk(P.OP_CONTAINS, R, 0, 4, P.encode_bitmap([True, False, True])),
        ),
        ("flush", "FLUSH, tag 5", pk(P.OP_FLUSH, 0, 0, 5)),
        ("flush_answer", "FLUSH answer, tag 5", pk(P.OP_FLUSH, R, 0, 5)),
        (
            "hashcodes",
            "HASHCODES, tag 6: after blake3('hello'), at most 100",
            pk(P.OP_HASHCODES, 0, 0, 6, P.encode_window(H_HELLO, True, 100)),
        ),
        (
            "hashcodes_answer",
            "HASHCODES answer, tag 6: one hashcode, end of the store",
            pk(P.OP_HASHCODES, R, 0, 6, P.encode_listing([H_WORLD], True)),
        ),
        (
            "hash_of_hashcodes",
            "HASH_OF_HASHCODES, tag 7: the whole store",
            pk(P.OP_HASH_OF_HASHCODES, 0, 0, 7, P.encode_window(None, False, None)),
        ),
        (
            "hash_of_hashcodes_answer",
            "HASH_OF_HASHCODES answer, tag 7: the hash, and the last hashcode",
            pk(P.OP_HASH_OF_HASHCODES, R, 0, 7, P.encode_hoh(H_WORLD, H_HELLO)),
        ),
        ("length", "LENGTH, tag 8", pk(P.OP_LENGTH, 0, 0, 8)),
        (
            "length_answer",
            "LENGTH answer, tag 8: 300",
            pk(P.OP_LENGTH, R, 0, 8, P.encode_count(300)),
        ),
        (
            "archive_last",
            "ARCHIVE_LAST, tag 10, JSON: archive 'home'",
            pk(P.OP_ARCHIVE_LAST, P.F_JSON, 0, 10, P.encode_json({"name": "home"})),
        ),
        (
            "archive_last_answer",
            "ARCHIVE_LAST answer, tag 10, JSON: no state yet",
            pk(
                P.OP_ARCHIVE_LAST,
                R | P.F_JSON,
                0,
                10,
                P.encode_json({"name": "home", "last": None}),
            ),
        ),
        (
            "archive_states",
            "ARCHIVE_STATES, tag 12, JSON: archive 'home' from its first state",
            pk(P.OP_ARCHIVE_STATES, P.F_JSON, 0, 12, P.encode_json({"name": "home", "start": 0})),
        ),
        (
            "archive_states_answer",
            "ARCHIVE_STATES answer, tag 12, JSON: no states, no next page",
            pk(
                P.OP_ARCHIVE_STATES,
                R | P.F_JSON,
                0,
                12,
                P.encode_json({"name": "home", "states": [], "next": None}),
            ),
        ),
        (
            "indirect_complete",
            "INDIRECT_COMPLETE, tag 11: an indirect block of span 11",
            pk(P.OP_INDIRECT_COMPLETE, 0, 0, 11, indirect.encode()),
        ),
        (
            "indirect_complete_answer",
            "INDIRECT_COMPLETE answer, tag 11: incomplete, 2 checked, one missing",
            pk(P.OP_INDIRECT_COMPLETE, R, 0, 11, P.encode_completeness(False, 2, [H_WORLD])),
        ),
        (
            "error_missing",
            "error answer to GET tag 3: code 8 (missing) with a JSON detail",
            pk(
                P.OP_GET,
                R | P.F_ERROR | P.F_JSON,
                0,
                3,
                P.encode_error(P.E_MISSING, "missing block", hashcode=str(H_WORLD)),
            ),
        ),
        (
            "auth_start",
            "AUTH step 1, tag 1: key 'laptop', client nonce 32 x 11",
            pk(P.OP_AUTH, 0, 0, 1, P.encode_auth_start("laptop", AUTH_CLIENT_NONCE)),
        ),
        (
            "auth_challenge",
            "AUTH answer to step 1, tag 1: server nonce 32 x 22",
            pk(P.OP_AUTH, R, 0, 1, P.encode_auth_answer(1, AUTH_SERVER_NONCE)),
        ),
        (
            "auth_proof",
            "AUTH step 2, tag 2: the client proof for secret 00 01 .. 1f",
            pk(P.OP_AUTH, 0, 0, 2, P.encode_auth_proof(auth_proof(b"vtsp-auth client\x00"))),
        ),
        (
            "auth_proof_answer",
            "AUTH answer to step 2, tag 2: the server proof",
            pk(P.OP_AUTH, R, 0, 2, P.encode_auth_answer(2, auth_proof(b"vtsp-auth server\x00"))),
        ),
        (
            "error_auth",
            "error answer to HELLO tag 1 without AUTH: code 16 (auth); the server then closes",
            pk(
                P.OP_HELLO,
                R | P.F_ERROR | P.F_JSON,
                0,
                1,
                P.encode_error(P.E_AUTH, "authentication required"),
            ),
        ),
        (
            "error_connection",
            "connection-level error (op 0, tag 0): code 3 (too large); the server then closes",
            pk(
                0,
                R | P.F_ERROR | P.F_JSON,
                0,
                0,
                P.encode_error(P.E_TOO_LARGE, "packet too large"),
            ),
        ),
    ]
    return [{"name": n, "what": w, "hex": b.hex()} for n, w, b in v]


VECTORS = json.loads(VECTORS_PATH.read_text()) if VECTORS_PATH.exists() else []


def test_code_produces_the_committed_vectors():
    assert build_vectors() == VECTORS


def test_doc_shows_every_vector():
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    for v in VECTORS:
        assert f"`{v['name']}`" in doc, v["name"]
        assert v["hex"] in doc, v["name"]


def test_auth_code_matches_the_auth_vectors(monkeypatch):
    """ClientAuth and ServerAuth, given the vectors' nonces, send exactly the
    vectors' payloads, and each accepts the other's proof."""
    from vtstore.security import auth as A
    from vtstore.security.keys import Key, KeyRing

    key = Key("laptop", AUTH_SECRET)
    nonces = iter([AUTH_CLIENT_NONCE, AUTH_SERVER_NONCE])
    monkeypatch.setattr(A, "new_nonce", lambda: next(nonces))
    client = A.ClientAuth(key)
    server = A.ServerAuth(KeyRing([key]))
    start = client.start()
    assert start == _packet("auth_start").payload
    challenge = server.handle(start)
    assert challenge == _packet("auth_challenge").payload
    proof = client.respond(challenge)
    assert proof == _packet("auth_proof").payload
    answer = server.handle(proof)
    assert answer == _packet("auth_proof_answer").payload
    assert client.verify(answer) and server.key is key
    assert P.decode_auth_request(start) == (1, "laptop", AUTH_CLIENT_NONCE)
    code, detail = P.decode_error(_packet("error_auth").payload)
    assert code == P.E_AUTH and isinstance(P.error_for(code, detail), P.AuthError)


def _packet(name: str) -> P.Packet:
    raw = bytes.fromhex(next(v["hex"] for v in VECTORS if v["name"] == name))
    length = P.decode_length(raw[:4])
    assert length == len(raw) - 4
    return P.decode_packet(raw[4:])


def test_vectors_decode():
    p = _packet("hello")
    assert (p.op, p.flags, p.channel, p.tag) == (P.OP_HELLO, 0, 0, 1)
    assert P.decode_hello(p.payload) == P.Hello(1, Hash_BLAKE3, "")
    p = _packet("hello_named_any_hashclass")
    assert p.channel == 1 and P.decode_hello(p.payload) == P.Hello(1, None, "backup")
    w = P.decode_welcome(_packet("welcome").payload)
    assert w.hashclass is Hash_BLAKE3 and w.archives and not w.readonly
    assert [bytes(b) for b in P.decode_blocks(_packet("add").payload)] == [b"hello", b"world!"]
    assert P.decode_hashcodes(_packet("add_answer").payload) == [H_HELLO, H_WORLD]
    assert [
        None if x is None else bytes(x) for x in P.decode_get_answer(_packet("get_answer").payload)
    ] == [b"hello", None]
    assert P.decode_bitmap(_packet("contains_answer").payload) == [True, False, True]
    assert P.decode_window(_packet("hashcodes").payload) == (H_HELLO, True, 100)
    assert P.decode_listing(_packet("hashcodes_answer").payload) == ([H_WORLD], True)
    assert P.decode_window(_packet("hash_of_hashcodes").payload) == (None, False, None)
    assert P.decode_hoh(_packet("hash_of_hashcodes_answer").payload) == (H_WORLD, H_HELLO)
    assert P.decode_count(_packet("length_answer").payload) == 300
    assert P.decode_json(_packet("archive_last").payload) == {"name": "home"}
    ic = _packet("indirect_complete_answer")
    assert P.decode_completeness(ic.payload) == (False, 2, [H_WORLD])
    e = _packet("error_missing")
    assert e.is_error and e.flags & P.F_JSON
    code, detail = P.decode_error(e.payload)
    assert code == P.E_MISSING and detail["hashcode"] == str(H_WORLD)
    assert isinstance(P.error_for(code, detail), KeyError)


def test_length_is_checked_before_the_body():
    with pytest.raises(P.PacketTooLarge):
        P.check_length(P.DEFAULT_MAX_PACKET + 1, P.DEFAULT_MAX_PACKET)
    with pytest.raises(FormatError):
        P.check_length(3, P.DEFAULT_MAX_PACKET)


def test_counts_that_cannot_fit_are_refused_before_allocating():
    # a count of 2**60 hashcodes in a 12-octet payload
    with pytest.raises(FormatError, match="does not fit"):
        P.decode_hashcodes(P.encode_varint(1 << 60) + b"\x02" * 10)
    with pytest.raises(FormatError):
        P.decode_blocks(P.encode_varint(1 << 40))
    with pytest.raises(FormatError):
        P.decode_get_answer(b"\x01\x7f")  # a 126-octet block in no octets


def test_hashclass_is_enforced():
    payload = P.encode_hashcodes([Hash_SHA1.from_data(b"x")])
    with pytest.raises(VTError):
        P.decode_hashcodes(payload, Hash_BLAKE3)


def test_bad_flags_and_trailing_octets():
    with pytest.raises(FormatError):
        P.decode_packet(bytes((P.OP_GET, 0x80, 0, 1)))
    with pytest.raises(FormatError):
        P.decode_bitmap(b"\x03\x05\x00")
    with pytest.raises(FormatError):
        P.decode_bitmap(b"\x03\x0f")  # bit 3 set past 3 items
    with pytest.raises(FormatError):
        P.decode_hello(b"NOPE\x01\x00\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoders_refuse_garbage_cleanly(data):
    decoders = [
        P.decode_packet,
        P.decode_hello,
        P.decode_welcome,
        P.decode_blocks,
        P.decode_hashcodes,
        P.decode_get_answer,
        P.decode_bitmap,
        P.decode_window,
        P.decode_listing,
        P.decode_hoh,
        P.decode_count,
        P.decode_completeness,
        P.decode_json,
        P.decode_error,
    ]
    for dec in decoders:
        try:
            dec(data)
        except VTError:
            pass


if __name__ == "__main__":
    if "--write" in sys.argv:
        VECTORS_PATH.write_text(json.dumps(build_vectors(), indent=1) + "\n")
