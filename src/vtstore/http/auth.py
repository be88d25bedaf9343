"""Request signing for `vt httpd`: the keys of the block protocol, over HTTP.

A client proves it holds a key (`vtstore.security.keys`) without sending it:
each request that needs a right carries ::

    Authorization: VT-HMAC key=ID, time=UNIX, nonce=HEX, sig=HEX

where `sig` is ``HMAC-SHA256(secret, "vt-http v1\\0" METHOD "\\0" TARGET "\\0"
TIME "\\0" NONCE "\\0" SHA256-HEX(BODY))``, TARGET being the request target
as sent (path and query, still percent-encoded).  The server accepts a
signature only within `SKEW` seconds of its clock and only once (it remembers
the nonces of that window), so a recorded request cannot be replayed, moved to
another path, or given another body.  The rights are the key's rights on the
export the request is for (`read`, `add`, `archive`).  Like the block protocol,
this proves who asks but hides nothing: put TLS in front (or use `https://`)
where the network is not trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict

from vtstore.security.keys import Key, KeyRing

LABEL = b"vt-http v1\x00"
SCHEME = "VT-HMAC"
#: How far a request's time may be from the server's clock, in seconds.
SKEW = 300
#: Most nonces remembered (a client signing faster than this per window is refused).
MAX_NONCES = 1 << 20
_FIELD = re.compile(r"\s*([a-z]+)=([A-Za-z0-9._@+-]{1,128})\s*(?:,|\Z)")


def body_digest(body) -> str:
    """The SHA-256 of a request body, in hex (of b"" for none)."""
    return hashlib.sha256(body or b"").hexdigest()


def signature(secret: bytes, method: str, target: str, when: int, nonce: str, digest: str) -> str:
    """The `sig` of one request."""
    msg = LABEL + "\x00".join((method.upper(), target, str(when), nonce, digest)).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def sign(key: Key, method: str, target: str, body=b"", when: float | None = None) -> str:
    """The Authorization header value for a request by `key`."""
    t = int(time.time() if when is None else when)
    nonce = secrets.token_hex(16)
    sig = signature(key.secret, method, target, t, nonce, body_digest(body))
    return f"{SCHEME} key={key.id}, time={t}, nonce={nonce}, sig={sig}"


class AuthRefused(Exception):
    """A signature that is missing, malformed, stale, replayed or wrong; the
    message is what the client is told."""


class Verifier:
    """The server's side: checks signatures against a `KeyRing`."""

    def __init__(self, ring: KeyRing | None):
        self.ring = ring
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, header: str | None, method: str, target: str, body=b"") -> Key:
        """The key that signed this request, or `AuthRefused`."""
        if not header:
            raise AuthRefused("this needs a key: sign the request (Authorization: VT-HMAC)")
        scheme, _, rest = header.partition(" ")
        if scheme != SCHEME or len(rest) > 512:
            raise AuthRefused(f"unknown authorization scheme (say {SCHEME})")
        fields = dict(_FIELD.findall(rest))
        try:
            key_id, t, nonce, sig = (
                fields["key"],
                int(fields["time"]),
                fields["nonce"],
                fields["sig"],
            )
        except (KeyError, ValueError):
            raise AuthRefused("a VT-HMAC authorization needs key, time, nonce and sig") from None
        now = time.time()
        if abs(now - t) > SKEW:
            raise AuthRefused(f"the request's time is more than {SKEW} s from the server's clock")
        key = self.ring.get(key_id) if self.ring else None
        secret = key.secret if key is not None else b"\0" * 32  # same work either way
        expected = signature(secret, method, target, t, nonce, body_digest(body))
        if not hmac.compare_digest(expected, sig) or key is None:
            raise AuthRefused("authentication failed: unknown key or wrong signature")
        self._remember(f"{key_id} {nonce}", now)
        return key

    def _remember(self, token: str, now: float) -> None:
        seen = self._seen
        while seen:  # forget what is out of the window
            oldest, t = next(iter(seen.items()))
            if now - t <= 2 * SKEW and len(seen) < MAX_NONCES:
                break
            seen.popitem(last=False)
        if token in seen:
            raise AuthRefused("a replayed request (this nonce was used already)")
        seen[token] = now
