"""Fuzz the authentication decoders: AUTH requests and answers (the server's and
the client's side of docs/PROTOCOL.md §2a, run through `ServerAuth` with a real
key ring) and key files / authorized-keys lines (`Key.from_json`)."""

from __future__ import annotations

import json
import os

from vtstore.errors import FormatError
from vtstore.net import protocol as P
from vtstore.security.auth import AuthFailed, ClientAuth, ServerAuth
from vtstore.security.keys import Key, KeyFileError, KeyRing

KEY = Key("fuzz", bytes(range(32)), {"*": frozenset({"read"}), "pub": frozenset({"add"})})


def _auth_seeds() -> list[bytes]:
    a = ClientAuth(KEY)
    start = a.start()
    return [
        start,
        P.encode_auth_start("x" * 64, os.urandom(32)),
        a.respond(b"\x01" + os.urandom(32)),
        P.encode_auth_proof(bytes(32)),
    ]


def test_fuzz_server_auth(fuzz):
    ring = KeyRing([KEY])

    def decode(data: bytes):
        s = ServerAuth(ring)
        answer = s.handle(data)  # a step 1 (anything else is refused)
        assert len(answer) == 33 and answer[0] == 1
        s.handle(P.encode_auth_proof(bytes(32)))  # a wrong proof: AuthFailed

    res = fuzz(decode, _auth_seeds(), expected=(FormatError, AuthFailed))
    assert res.failures == [], res.summary()


def test_fuzz_client_auth_answers(fuzz):
    def decode(data: bytes):
        a = ClientAuth(KEY)
        a.start()
        a.respond(data)
        assert not a.verify(data[:1].replace(b"\x01", b"\x02") + data[1:])

    seeds = [b"\x01" + bytes(32), b"\x02" + os.urandom(32)]
    res = fuzz(decode, seeds, expected=(FormatError,))
    assert res.failures == [], res.summary()


def test_fuzz_key_objects(fuzz):
    def decode(data: bytes):
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        k = Key.from_json(obj, "fuzz")
        assert len(k.secret) == 32 and all(isinstance(r, frozenset) for r in k.rights.values())

    seeds = [json.dumps(KEY.to_json()).encode(), json.dumps(Key.generate("a").to_json()).encode()]
    res = fuzz(decode, seeds, n=20000, expected=(KeyFileError,))
    assert res.failures == [], res.summary()
