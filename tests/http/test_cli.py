"""`vt` over HTTP as a user runs it: a child `vt httpd`, then `vt -S http://...
cat/ls/unpack/push`, `x-vt://HOST:PORT/...` URIs, `vt publish --server`, and
a FUSE mount of an `x-vt://` URI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

ENV: dict = {}


@pytest.fixture(autouse=True)
def _env(vt_env):
    ENV.clear()
    ENV.update(vt_env)


def vt(tmp_path, *args, check=True, key_file=None, timeout=120):
    env = dict(ENV)
    if key_file:
        env["VT_KEY_FILE"] = str(key_file)
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)}: {r.returncode}\n{r.stderr.decode()}")
    return r


@pytest.fixture
def served(sample, httpd_process, keys, tmp_path):
    """The sample datadir behind a child `vt httpd` with a writer key."""
    sample.store.close()
    key, key_file, ring = keys("w", "all")
    p = httpd_process(str(tmp_path / "dd"), "--auth-keys", str(ring))
    return p.url, key_file


def test_cat_ls_unpack_over_http(sample, served, tmp_path):
    url, _ = served
    ref = sample.ref
    assert vt(tmp_path, "-S", url, "cat", f"{ref}/big.bin").stdout == sample.big
    out = vt(tmp_path, "-S", url, "ls", f"{ref}").stdout.decode()
    assert "big.bin" in out and "sub" in out
    # the server's named archives, through -S (the clause name gives way to -S)
    assert vt(tmp_path, "-S", url, "cat", "[x]proj/a.txt").stdout == b"changed\n"
    assert vt(tmp_path, "-S", url, "cat", "[x]proj@0/a.txt").stdout == b"hello world\n" * 100
    dest = tmp_path / "out"
    vt(tmp_path, "-S", url, "unpack", ref, str(dest))
    assert (dest / "big.bin").read_bytes() == sample.big
    assert (dest / "sub" / "s.txt").read_text() == "in sub\n"
    assert os.readlink(dest / "link") == "a.txt"


def test_x_vt_uri_with_host(sample, served, tmp_path):
    url, _ = served
    host = url.split("//", 1)[1].rstrip("/")
    uri = f"x-vt://{host}/{sample.ref}/sub/s.txt"
    assert vt(tmp_path, "cat", uri).stdout == b"in sub\n"
    out = vt(tmp_path, "ls", f"x-vt://{host}/{sample.ref}/sub").stdout.decode()
    assert "s.txt" in out
    dest = tmp_path / "u"
    vt(tmp_path, "unpack", f"x-vt://{host}/{sample.ref}/sub", str(dest))
    assert (dest / "s.txt").read_text() == "in sub\n"
    # a ref percent-encoded, as a browser's address bar gives it
    from urllib.parse import quote

    enc = f"x-vt://{host}/{quote(sample.ref, safe='')}/a.txt"
    assert vt(tmp_path, "cat", enc).stdout == b"changed\n"
    r = vt(tmp_path, "cat", "x-vt:///D{", check=False)
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    r = vt(tmp_path, "cat", f"x-vt://127.0.0.1:1/{sample.ref}/a.txt", check=False)
    assert r.returncode != 0 and len(r.stderr.decode().strip().splitlines()) == 1


def test_push_and_publish_to_server(sample, served, tmp_path):
    url, key_file = served
    src = tmp_path / "topush"
    src.mkdir()
    (src / "f.txt").write_text("pushed over http\n")
    (src / "r.bin").write_bytes(os.urandom(200_000))
    local = tmp_path / "local"
    vt(tmp_path, "-S", str(local), "pack", str(src))
    arch = str(tmp_path / "topush.vt")
    r = vt(tmp_path, "-S", str(local), "push", "-", url, arch, check=False)
    assert r.returncode != 0 and b"key" in r.stderr  # no key: refused
    vt(tmp_path, "-S", str(local), "push", "-", url, arch, key_file=key_file)
    with urllib.request.urlopen(url + "a/topush/latest/f.txt") as resp:
        assert resp.read() == b"pushed over http\n"
    # vt publish --server: stored on the server, a URI and a URL back
    f = tmp_path / "note.txt"
    f.write_text("published over http\n")
    out = vt(tmp_path, "publish", "--server", url, "--json", str(f), key_file=key_file)
    links = json.loads(out.stdout)
    assert links["uri"].startswith("x-vt:/D{") and links["host_uri"].startswith("x-vt://127.0.0.1:")
    with urllib.request.urlopen(links["url"]) as resp:
        assert resp.read() == b"published over http\n"
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert vt(tmp_path, "cat", links["host_uri"]).stdout == b"published over http\n"
    out = vt(tmp_path, "publish", "--server", url, str(src), key_file=key_file).stdout.decode()
    uri, host_uri, page = out.split()
    with urllib.request.urlopen(page) as resp:
        assert b"f.txt" in resp.read()


@pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None, reason="no FUSE"
)
def test_mount_x_vt_uri(sample, served, tmp_path):
    url, _ = served
    host = url.split("//", 1)[1].rstrip("/")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = vt(tmp_path, "mount", f"x-vt://{host}/{sample.ref}", str(mnt), check=False, timeout=60)
    if r.returncode != 0:
        pytest.fail(r.stderr.decode())
    try:
        assert (mnt / "big.bin").read_bytes() == sample.big
        assert (mnt / "sub" / "s.txt").read_text() == "in sub\n"
    finally:
        vt(tmp_path, "umount", str(mnt), check=False)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_httpd_process_stops_cleanly_and_bad_options(tmp_path, httpd_process):
    p = httpd_process(str(tmp_path / "dd"))
    with urllib.request.urlopen(p.url + "b/info") as resp:
        assert json.loads(resp.read())["hashclass"] == "blake3"
    assert p.stop() == 0
    for args, needle in (
        (["httpd", "--memory", "1MiB", "--max-body", "2MiB"], "--memory"),
        (["httpd", "--max-body", "lots"], "not a size"),
        (["httpd", "--tls-cert", "x.pem"], "TLS needs both"),
        (["httpd", "999.1.1.1:80"], "cannot listen"),
        (["httpd", "127.0.0.1:0", "bad-export"], "NAME:STORESPEC"),
    ):
        r = vt(tmp_path, "-S", str(tmp_path / "dd"), *args, check=False, timeout=30)
        err = r.stderr.decode().strip()
        assert r.returncode == 2 and len(err.splitlines()) == 1 and needle in err, (args, err)
