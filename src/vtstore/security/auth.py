"""The challenge-response of the block protocol (docs/PROTOCOL.md §2a).

Both sides hold the same 32-octet secret; it never crosses the wire.  The client
names its key and sends a fresh nonce (AUTH step 1); the server answers its own
fresh nonce.  The transcript T is the two payloads as sent, so it binds the key
id and both nonces.  The client proves it holds the key with
``HMAC-SHA256(secret, "vtsp-auth client\\0" + T)`` (step 2) and the server answers
``HMAC-SHA256(secret, "vtsp-auth server\\0" + T)``, so the client knows the server
holds the key too.  The two labels differ, so one side's proof is never the
other's; the server's nonce is new on every connection, so a recorded exchange
replayed on another connection fails.  Proofs are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from vtstore.net import protocol as P
from vtstore.security.keys import Key, KeyRing

CLIENT_LABEL = b"vtsp-auth client\x00"
SERVER_LABEL = b"vtsp-auth server\x00"


def proof(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    """HMAC-SHA256 of `label + transcript` under `secret`."""
    return hmac.new(secret, label + transcript, hashlib.sha256).digest()


def new_nonce() -> bytes:
    """32 octets from the system's CSPRNG."""
    return secrets.token_bytes(P.AUTH_NONCE)


class AuthFailed(Exception):
    """The exchange failed; the message is what the peer is told (never why)."""


class ServerAuth:
    """One connection's side of the exchange, on a server that holds `ring`."""

    def __init__(self, ring: KeyRing | None):
        self.ring = ring
        self.step = 0
        self.key: Key | None = None  # the authenticated key, once done
        self._candidate: Key | None = None
        self._transcript = b""

    @property
    def done(self) -> bool:
        return self.key is not None

    def handle(self, payload) -> bytes:
        """Take one AUTH request payload; return the answer payload, or raise
        `AuthFailed` (the caller answers E_AUTH and closes) or `FormatError`."""
        step, key_id, value = P.decode_auth_request(payload)
        if step != self.step + 1 or self.step >= 2:
            raise AuthFailed("one authentication per connection, steps 1 then 2")
        if step == 1:
            self.step = 1
            if not self.ring:
                raise AuthFailed("this server has no keys: it cannot authenticate a key")
            # an unknown id still gets a nonce: it fails at step 2, like a wrong key
            self._candidate = self.ring.get(key_id)
            answer = P.encode_auth_answer(1, new_nonce())
            self._transcript = bytes(payload) + answer
            return answer
        self.step = 2
        key = self._candidate
        secret = key.secret if key is not None else new_nonce()  # same work either way
        expected = proof(secret, CLIENT_LABEL, self._transcript)
        if not hmac.compare_digest(expected, value) or key is None:
            raise AuthFailed("authentication failed: unknown key or wrong secret")
        self.key = key
        return P.encode_auth_answer(2, proof(secret, SERVER_LABEL, self._transcript))


class ClientAuth:
    """The client's side: `start()` gives step 1, `answer(nonce_answer)` step 2,
    `verify(server_proof_answer)` checks the server's proof."""

    def __init__(self, key: Key):
        self.key = key
        self._start = b""
        self._transcript = b""

    def start(self) -> bytes:
        self._start = P.encode_auth_start(self.key.id, new_nonce())
        return self._start

    def respond(self, answer_payload) -> bytes:
        P.decode_auth_answer(answer_payload, 1)
        self._transcript = self._start + bytes(answer_payload)
        return P.encode_auth_proof(proof(self.key.secret, CLIENT_LABEL, self._transcript))

    def verify(self, answer_payload) -> bool:
        got = P.decode_auth_answer(answer_payload, 2)
        return hmac.compare_digest(got, proof(self.key.secret, SERVER_LABEL, self._transcript))
