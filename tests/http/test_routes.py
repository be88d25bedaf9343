"""Every route of `vt httpd` against a real server on 127.0.0.1: blocks, indirect
data, trees, archives; ETag/304, Cache-Control, ranges, HEAD, content types."""

from __future__ import annotations

import io
import json
import re
import tarfile
from urllib.parse import quote

import pytest

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def srv(sample, httpd, client):
    url = httpd({"": sample.store})
    return client(url)


def d(sample, path=""):
    return f"/d/{quote(sample.ref, safe='')}/{path}"


def file_dirent(sample, name):
    from vtstore.tree.dir import resolve

    return resolve(sample.top, name, sample.store)


# -- /h/ -------------------------------------------------------------------------------


def test_block_both_forms_etag_cache_304_head(sample, srv):
    data = b"one block of data" * 100
    h = sample.store.add(data)
    sample.store.flush()
    for target in (f"/h/{h}", f"/h/{h.hex_digest}.{h.hashname}"):
        st, hd, body = srv.get(target)
        assert st == 200 and body == data
        assert hd["etag"] == f'"{h}"'
        assert hd["cache-control"] == IMMUTABLE
        assert hd["content-type"] == "application/octet-stream"
        st, hd2, body = srv.get(target, if_none_match=f'"{h}"')
        assert st == 304 and body == b""
        st, hd3, body = srv.get(target, if_none_match='"blake3:00", W/"' + str(h) + '"')
        assert st == 304
        st, hd4, body = srv("HEAD", target)
        assert st == 200 and body == b"" and hd4["content-length"] == str(len(data))


def test_block_missing_bogus_and_other_hashclass(sample, srv):
    from vtstore.hashes import Hash_SHA1

    missing = sample.store.hashclass.from_data(b"never stored")
    assert srv.get(f"/h/{missing}")[0] == 404
    for bogus in ("/h/blake3:zz", "/h/blake3:abcd", "/h/nohash:00", "/h/xyz", "/h/" + "a" * 5000):
        st, _, body = srv.get(bogus)
        assert st == 400, (bogus, st, body)
    assert srv.get(f"/h/{Hash_SHA1.from_data(b'x')}")[0] == 404
    assert srv.get("/h/")[0] == 400
    assert srv.get("/h/a/b")[0] == 404


# -- ranges ----------------------------------------------------------------------------


def test_ranges_single_suffix_open_multi_and_unsatisfiable(sample, srv):
    big = sample.big
    target = d(sample, "big.bin")
    st, hd, body = srv.get(target, range="bytes=10-19")
    assert st == 206 and body == big[10:20]
    assert hd["content-range"] == f"bytes 10-19/{len(big)}"
    st, hd, body = srv.get(target, range="bytes=-100")
    assert st == 206 and body == big[-100:]
    st, hd, body = srv.get(target, range=f"bytes={len(big) - 5}-")
    assert st == 206 and body == big[-5:]
    st, hd, body = srv.get(target, range="bytes=0-99999999999")
    assert st == 206 and body == big
    # several ranges: multipart/byteranges, overlapping ones merged
    st, hd, body = srv.get(target, range="bytes=0-9, 1000000-1000009, 5-14, 2999990-")
    assert st == 206
    m = re.match(r"multipart/byteranges; boundary=(\S+)", hd["content-type"])
    assert m and int(hd["content-length"]) == len(body)
    parts = body.split(b"--" + m.group(1).encode())
    got = []
    for p in parts[1:-1]:
        head, _, data = p.partition(b"\r\n\r\n")
        cr = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head)
        s, e = int(cr.group(1)), int(cr.group(2))
        assert data[:-2] == big[s : e + 1]
        got.append((s, e))
    assert got == [(0, 14), (1000000, 1000009), (2999990, 2999999)]
    assert parts[-1].startswith(b"--")
    # out of range, huge numbers, too many ranges: 416 with the length
    for bad in (
        f"bytes={len(big)}-",
        "bytes=99999999999999999999999999999-",
        "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(100)),
    ):
        st, hd, body = srv.get(target, range=bad)
        assert st == 416, bad
        assert hd["content-range"] == f"bytes */{len(big)}"
    # a Range we do not understand is ignored: the whole content
    st, hd, body = srv.get(target, range="lines=1-2")
    assert st == 200 and body == big
    # If-Range with another ETag: the whole content
    st, hd, body = srv.get(target, range="bytes=0-1", if_range='"blake3:00"')
    assert st == 200 and len(body) == len(big)


def test_head_of_range_and_block(sample, srv):
    st, hd, body = srv("HEAD", d(sample, "big.bin"), headers={"Range": "bytes=0-9"})
    assert st == 206 and body == b"" and hd["content-length"] == "10"


# -- /i/ -------------------------------------------------------------------------------


def test_indirect_by_hashcode_and_transcription(sample, srv):
    f = file_dirent(sample, "big.bin")
    assert f.block.indirect
    for target in (f"/i/{f.block.hashcode}", "/i/" + quote(str(f.block), safe="")):
        st, hd, body = srv.get(target)
        assert st == 200 and body == sample.big
        assert hd["etag"] == f'"{f.block.hashcode}"' and hd["cache-control"] == IMMUTABLE
        st, hd, body = srv.get(target, range="bytes=2000000-2000099")
        assert st == 206 and body == sample.big[2000000:2000100]
    leaf = next(iter(f.block.leaves(sample.store)))
    assert srv.get(f"/i/{leaf.hashcode}")[0] in (400, 502)  # a leaf is no list of refs


# -- /d/ -------------------------------------------------------------------------------


def test_directory_html_and_json(sample, srv):
    st, hd, body = srv.get(d(sample), accept="text/html")
    assert st == 200 and hd["content-type"].startswith("text/html")
    html = body.decode()
    for name in ("a.txt", "big.bin", "sub/", "dot.png", "new.txt"):
        assert name in html
    assert "<script>" not in html  # names and text are escaped
    st, hd, body = srv.get(d(sample), accept="application/json")
    assert st == 200 and hd["content-type"] == "application/json" and hd["vary"] == "Accept"
    listing = json.loads(body)
    by_name = {e["name"]: e for e in listing["entries"]}
    assert by_name["big.bin"]["size"] == len(sample.big)
    assert by_name["sub"]["type"] == "dir" and by_name["link"]["target"] == "a.txt"
    assert "mtime" in by_name["a.txt"]
    st, _, body = srv.get(d(sample, "sub/"), accept="application/json")
    assert [e["name"] for e in json.loads(body)["entries"]] == ["s.txt"]
    st, hd, _ = srv.get(d(sample, "sub"))
    assert st == 301 and hd["location"].endswith("/sub/")


def test_file_content_types_and_disposition(sample, srv):
    st, hd, body = srv.get(d(sample, "a.txt"))
    assert st == 200 and body == b"changed\n"
    assert hd["content-type"] == "text/plain; charset=utf-8"
    assert hd["content-disposition"].startswith("inline")
    assert hd["cache-control"] == IMMUTABLE
    st, hd, body = srv.get(d(sample, "dot.png"))
    assert hd["content-type"] == "image/png" and body == sample.png
    st, hd, body = srv.get(d(sample, "page.html"))
    assert hd["content-type"] == "text/plain; charset=utf-8"  # never run as our page
    assert hd["x-content-type-options"] == "nosniff"
    st, hd, body = srv.get(d(sample, "big.bin") + "?download")
    assert st == 200 and body == sample.big
    assert hd["content-disposition"] == "attachment; filename=\"big.bin\"; filename*=UTF-8''big.bin"
    assert hd["content-type"] == "application/octet-stream"
    name = "we ird%2F#?.txt"
    st, hd, body = srv.get(d(sample, quote(name, safe="")))
    assert st == 200 and body == b"odd name\n"
    assert "filename*=UTF-8''we%20ird%252F%23%3F.txt" in hd["content-disposition"]
    etag = hd["etag"]
    assert srv.get(d(sample, quote(name, safe="")), if_none_match=etag)[0] == 304


def test_preview_and_symlink(sample, srv):
    st, hd, body = srv.get(d(sample, "page.html") + "?view")
    assert st == 200 and b"&lt;script&gt;" in body and b"<script>" not in body
    st, hd, body = srv.get(d(sample, "dot.png") + "?view")
    assert b"<img" in body
    st, hd, body = srv.get(d(sample, "link"), accept="application/json")
    assert st == 200 and json.loads(body)["target"] == "a.txt"


def test_tar_of_directory(sample, srv):
    st, hd, body = srv.get(d(sample) + "?tar")
    assert st == 200 and hd["content-type"] == "application/x-tar"
    assert "attachment" in hd["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(body)) as tf:
        names = {m.name.lstrip("./") for m in tf.getmembers()}
        assert {"a.txt", "big.bin", "sub/s.txt", "link", "new.txt"} <= names
        member = next(m for m in tf.getmembers() if m.name.endswith("big.bin"))
        assert tf.extractfile(member).read() == sample.big
    st, hd, body = srv.get(d(sample, "sub/") + "?tar")
    with tarfile.open(fileobj=io.BytesIO(body)) as tf:
        assert [m.name.lstrip("./") for m in tf.getmembers() if m.isfile()] == ["s.txt"]


# -- /a/ -------------------------------------------------------------------------------


def test_archives_history_states_and_diff(sample, srv):
    st, hd, body = srv.get("/a/?json")
    assert json.loads(body)["archives"] == [
        {"name": "proj", "states": 2, "latest": 1_700_000_100.0}
    ]
    st, hd, body = srv.get("/a/proj/", accept="application/json")
    states = json.loads(body)["states"]
    assert [s["comment"] for s in states] == ["second", "first"]
    assert states[0]["bytes"] > len(sample.big) and states[0]["files"] >= 6
    st, hd, body = srv.get("/a/proj/latest/a.txt")
    assert st == 200 and body == b"changed\n"
    assert "immutable" not in hd.get("cache-control", "")
    st, hd, body = srv.get("/a/proj/0/a.txt")
    assert body == b"hello world\n" * 100
    first_id = states[1]["id"]
    st, hd, body = srv.get(f"/a/proj/{first_id}/a.txt")
    assert body == b"hello world\n" * 100
    st, hd, body = srv.get(f"/a/proj/{states[1]['full_id']}/a.txt")
    assert hd["cache-control"] == IMMUTABLE
    st, hd, body = srv.get(f"/a/proj/diff?from={first_id}&to=latest&json")
    changes = {c["path"]: c["change"] for c in json.loads(body)["changes"]}
    assert changes == {"a.txt": "changed", "new.txt": "added"}
    st, hd, body = srv.get("/a/proj/diff", accept="text/html")
    assert st == 200 and b"new.txt" in body
    st, _, body = srv.get("/a/proj/", accept="text/html")
    assert b"changes" in body and b"second" in body
    assert srv.get("/a/nope/")[0] == 404
    assert srv.get("/a/proj/ffffffff/")[0] == 404
    assert srv.get("/a/proj")[0] == 301


def test_index_and_named_exports(sample, httpd, client, tmp_path):
    from vtstore.stores.memory import MemoryStore

    other = MemoryStore()
    h = other.add(b"in the other export")
    c = client(httpd({"": sample.store, "other": other}))
    st, hd, body = c.get("/", accept="application/json")
    info = {x["name"]: x for x in json.loads(body)["exports"]}
    assert info[""]["archives"] == ["proj"] and info["other"]["blocks"] == 1
    assert c.get(f"/x/other/h/{h}")[2] == b"in the other export"
    assert c.get(f"/h/{h}")[0] == 404
    assert c.get("/x/none/h/" + str(h))[0] == 404
    st, hd, body = c.get("/", accept="text/html")
    assert b"proj" in body and b"/x/other/" in body


def test_redirect_blocks(sample, httpd, client):
    h = sample.store.add(b"somewhere else too")
    c = client(httpd({"": sample.store}, redirect_blocks="https://cdn.example/blocks/"))
    st, hd, _ = c.get(f"/h/{h}")
    assert st == 302 and hd["location"] == f"https://cdn.example/blocks/{h.hex_digest}.blake3"
    assert c.get(f"/h/{h}?raw")[2] == b"somewhere else too"


def test_https_with_the_client_store(sample, tmp_path):
    from vtstore.http.app import HTTPApp
    from vtstore.http.client import HTTPStore
    from vtstore.http.server import BackgroundServer
    from vtstore.security.tls import make_self_signed

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    make_self_signed(str(cert), str(key))
    app = HTTPApp({"": sample.store}, insecure_no_auth=True)
    with BackgroundServer(app, tls_cert=str(cert), tls_key=str(key)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with HTTPStore(srv.url, tls_ca=str(cert), readonly=True) as s:
            f = file_dirent(sample, "big.bin")
            assert f.block.data(s) == sample.big
        from vtstore.errors import StoreError

        with pytest.raises(StoreError):  # an unknown certificate is refused
            HTTPStore(srv.url)


def test_unix_socket_listener(sample, tmp_path):
    import http.client
    import socket

    from vtstore.http.app import HTTPApp
    from vtstore.http.server import BackgroundServer

    path = tmp_path / "h.sock"
    with BackgroundServer(HTTPApp({"": sample.store}), address=str(path)) as srv:
        assert srv.url == f"http+unix://{path}"
        assert oct(path.stat().st_mode & 0o777) == "0o600"

        class UnixConn(http.client.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))

        c = UnixConn("localhost")
        c.request("GET", d(sample, "a.txt"))
        assert c.getresponse().read() == b"changed\n"
        c.close()


def test_history_sizes_reuse_unchanged_directories_within_a_budget(
    tmp_path, httpd, client, monkeypatch
):
    """40 states of a 2,000-file tree, each changing one file: the history's
    sizes read each unchanged directory once (its totals are remembered by
    block), and a page stops reading at its entry budget (older states: no size)."""
    from vtstore.archive import Archive
    from vtstore.blocks import LiteralBlock
    from vtstore.http import views
    from vtstore.stores.datadir import DataDir
    from vtstore.tree.dir import make_dir
    from vtstore.tree.dirent import FileDirent

    store = DataDir(tmp_path / "dd")
    subs = [
        make_dir(
            [FileDirent(f"f{j:03d}", LiteralBlock(b"x" * 10)) for j in range(100)],
            store,
            name=f"d{i:02d}",
        )
        for i in range(20)
    ]
    arch = Archive(str(store.archive_path("big")))
    for k in range(40):
        i = k % 20
        files = [
            FileDirent(f"f{j:03d}", LiteralBlock(b"x" * (10 + (k if j == 0 else 0))))
            for j in range(100)
        ]
        subs[i] = make_dir(files, store, name=f"d{i:02d}")
        arch.update(make_dir(subs, store), when=1_700_000_000.0 + k)
    store.flush()
    c = client(httpd({"": store}))
    states = json.loads(c.get("/a/big/?json")[2])["states"]
    assert len(states) == 40
    # newest state: f000 of directory i last grew by 20 + i octets
    assert states[0]["files"] == 2000 and states[0]["bytes"] == 2000 * 10 + sum(range(20, 40))
    # a budget a little over one whole tree: the newest state whole, then only
    # the changed directory of each older one
    monkeypatch.setattr(views, "SIZE_WALK_MAX", 2020 + 5 * 120)
    c2 = client(httpd({"": store}))  # a fresh server: nothing remembered
    states = json.loads(c2.get("/a/big/?json")[2])["states"]
    known = [s["files"] for s in states]
    assert known[:5] == [2000] * 5 and known[-1] is None
    store.close()
