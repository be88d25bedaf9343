"""Keys on `vt httpd`: writes refused without a signed request from a key with
the right; replays, stale times, other paths or bodies refused; reading
key-protected or public per export."""

from __future__ import annotations

import json
import time

import pytest

from vtstore.http.auth import sign
from vtstore.security.keys import KeyRing


@pytest.fixture
def ring(keys):
    writer, _, _ = keys("writer", "all")
    reader, _, _ = keys("reader", "read")
    return KeyRing([writer, reader]), writer, reader


def test_writes_need_a_key_with_the_right(sample, httpd, client, ring):
    ring, writer, reader = ring
    c = client(httpd({"": sample.store}, keys=ring))
    data = b"a block to put"
    h = sample.store.hashclass.from_data(data)
    target = f"/h/{h}"
    st, hd, body = c("PUT", target, body=data)
    assert st == 401 and hd["www-authenticate"].startswith("VT-HMAC")
    assert "needs a key" in body.decode()
    st, _, body = c(
        "PUT", target, body=data, headers={"Authorization": sign(reader, "PUT", target, data)}
    )
    assert st == 403 and "no add right" in body.decode()
    assert h not in sample.store
    auth = sign(writer, "PUT", target, data)
    st, _, _ = c("PUT", target, body=data, headers={"Authorization": auth})
    assert st == 201
    assert c.get(target)[2] == data
    # the same signed request again: a replay
    st, _, body = c("PUT", target, body=data, headers={"Authorization": auth})
    assert st == 401 and "replayed" in body.decode()
    # a signature for another body, path, method or time
    other = b"another block"
    h2 = sample.store.hashclass.from_data(other)
    st, _, _ = c(
        "PUT", f"/h/{h2}", body=other, headers={"Authorization": sign(writer, "PUT", target, data)}
    )
    assert st == 401
    st, _, _ = c(
        "PUT",
        f"/h/{h2}",
        body=other,
        headers={"Authorization": sign(writer, "PUT", f"/h/{h2}", data)},
    )
    assert st == 401
    old = sign(writer, "PUT", f"/h/{h2}", other, when=time.time() - 3600)
    st, _, body = c("PUT", f"/h/{h2}", body=other, headers={"Authorization": old})
    assert st == 401 and "clock" in body.decode()
    for bad in (
        "Bearer xyz",
        "VT-HMAC key=writer",
        "VT-HMAC " + "x" * 2000,
        "VT-HMAC key=nobody, time=1, nonce=a, sig=b",
    ):
        assert c("PUT", f"/h/{h2}", body=other, headers={"Authorization": bad})[0] == 401
    # the block API and archive updates too
    assert c("POST", "/b/add", body=b"\0\0\0\1x")[0] == 401
    assert c("POST", "/b/flush")[0] == 401
    line = json.dumps({"text": "x"}).encode()
    assert c("POST", "/a/proj", body=line)[0] == 401


def test_put_must_match_its_hash(sample, httpd, client, ring):
    ring, writer, _ = ring
    c = client(httpd({"": sample.store}, keys=ring))
    h = sample.store.hashclass.from_data(b"right")
    st, _, body = c(
        "PUT",
        f"/h/{h}",
        body=b"wrong",
        headers={"Authorization": sign(writer, "PUT", f"/h/{h}", b"wrong")},
    )
    assert st == 400


def test_read_key_and_public_exports(sample, httpd, client, ring):
    from vtstore.stores.memory import MemoryStore

    ring, writer, reader = ring
    pub = MemoryStore()
    hp = pub.add(b"public block")
    c = client(httpd({"": sample.store, "pub": pub}, keys=ring, read_key=True, public=["pub"]))
    h = sample.store.add(b"private block")
    assert c.get(f"/h/{h}")[0] == 401
    assert c.get("/a/")[0] == 401
    assert c.get("/")[0] == 401
    st, _, body = c("GET", f"/h/{h}", headers={"Authorization": sign(reader, "GET", f"/h/{h}")})
    assert st == 200 and body == b"private block"
    assert c.get(f"/x/pub/h/{hp}")[2] == b"public block"
    # the front page of a public export lists only what the requester may read
    st, _, body = c.get("/x/pub/", accept="application/json")
    assert st == 200 and [x["name"] for x in json.loads(body)["exports"]] == ["pub"]
    st, _, body = c(
        "GET", "/x/pub/?json", headers={"Authorization": sign(reader, "GET", "/x/pub/?json")}
    )
    assert [x["name"] for x in json.loads(body)["exports"]] == ["", "pub"]
    assert json.loads(body)["exports"][0]["archives"] == ["proj"]
    assert c.get("/b/info")[0] == 200  # what a client needs to start talking


def test_client_store_signs(sample, httpd, ring):
    from vtstore.errors import StoreError
    from vtstore.http.client import HTTPStore

    ring, writer, reader = ring
    url = httpd({"": sample.store}, keys=ring)
    with HTTPStore(url, key=writer) as s:
        h = s.add(b"added over http with a key")
        assert s[h] == b"added over http with a key"
    with HTTPStore(url) as s, pytest.raises(StoreError, match="needs a key"):
        s.add(b"no key")
    with HTTPStore(url, key=reader) as s, pytest.raises(StoreError, match="no add right"):
        s.add(b"read key")


def test_other_methods_never_read_without_the_right(sample, httpd, client, ring):
    ring, writer, reader = ring
    c = client(httpd({"": sample.store}, keys=ring, read_key=True))
    from urllib.parse import quote

    for method in ("PUT", "POST", "DELETE", "PATCH", "OPTIONS"):
        for target in (
            "/a/proj/latest/a.txt",
            "/a/proj/",
            "/a/",
            f"/d/{quote(sample.ref, safe='')}/a.txt",
            "/i/x",
            "/",
        ):
            st, _, body = c(method, target, body=b"")
            assert st in (401, 405), (method, target, st)
            assert b"changed" not in body
    # and GET of the block API's write routes is refused as such
    assert c.get("/b/add")[0] in (401, 405)
