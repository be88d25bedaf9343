"""Fuzz the decoders of `vt httpd`'s requests: the Range header
(`vtstore.http.ranges.parse_range`), the VT-HMAC Authorization header
(`vtstore.http.auth.Verifier.check`), request paths (`split_path`), and the
block records of `/b/add` and `/b/get` (`unpack_lengths`)."""

from __future__ import annotations

from vtstore.errors import FormatError
from vtstore.http import ranges as R
from vtstore.http.auth import AuthRefused, Verifier, sign
from vtstore.http.blockapi import unpack_lengths
from vtstore.http.request import HTTPError, split_path
from vtstore.security.keys import Key, KeyRing

KEY = Key("fuzz", bytes(range(32)), {"*": frozenset({"read", "add"})})
LENGTH = 3_000_000


def test_fuzz_range_header(fuzz):
    seeds = [
        b"bytes=0-9",
        b"bytes=-100",
        b"bytes=2999990-",
        b"bytes=0-9, 1000000-1000009, 5-14, 2999990-",
        b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10 + 1) for i in range(70)),
        b"bytes=99999999999999999999999-",
    ]

    def decode(data: bytes):
        got = R.parse_range(data.decode("latin-1"), LENGTH)
        if got is not None:
            assert 1 <= len(got) <= R.MAX_RANGES
            for (s, e), nxt in zip(got, [*got[1:], None], strict=True):
                assert 0 <= s < e <= LENGTH
                assert nxt is None or e < nxt[0]  # sorted, merged

    res = fuzz(decode, seeds, expected=(R.Unsatisfiable,))
    assert res.failures == [], res.summary()


def test_fuzz_authorization_header(fuzz):
    v = Verifier(KeyRing([KEY]))
    good = sign(KEY, "PUT", "/h/x", b"body").encode()
    seeds = [good, good.replace(b"fuzz", b"nobody"), b"VT-HMAC key=a, time=1, nonce=b, sig=c"]

    def decode(data: bytes):
        v.check(data.decode("latin-1"), "PUT", "/h/x", b"body")

    res = fuzz(decode, seeds, n=20_000, expected=(AuthRefused,))
    assert res.failures == [], res.summary()


def test_fuzz_request_path(fuzz):
    seeds = [b"/d/D%7Bblock%3AB%7B%7D%7D/a/b.txt", b"/h/blake3:00", b"/x/name/a/%2F%00/..", b"/"]

    def decode(data: bytes):
        for seg in split_path(data):
            assert "\0" not in seg

    res = fuzz(decode, seeds, expected=(HTTPError,))
    assert res.failures == [], res.summary()


def test_fuzz_block_records(fuzz):
    seeds = [b"\0\0\0\3abc\0\0\0\0", b"\xff\xff\xff\xff\0\0\0\1x", b"\0\0\x10\0" + b"y" * 4096]

    def decode(data: bytes):
        total = 0
        for d in unpack_lengths(data):
            total += 4 + (len(d) if d is not None else 0)
        assert total == len(data)

    res = fuzz(decode, seeds, expected=(FormatError,))
    assert res.failures == [], res.summary()
