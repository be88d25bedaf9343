"""`vt key new|list|remove|tls-cert`: real `vt` processes on a base directory in tmp."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import vtstore
from vtstore.security.keys import KeyRing, load_key_file

SRC = str(Path(vtstore.__file__).resolve().parents[1])


@pytest.fixture
def vt(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC, VT_DIR=str(tmp_path / "base"), HOME=str(tmp_path))
    env.pop("VT_STORE", None)
    env.pop("VT_CONFIG", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vtstore.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_new_list_remove(vt, tmp_path):
    base = tmp_path / "base"
    r = vt("key", "new", "laptop")
    assert r.returncode == 0, r.stderr
    kf = Path(r.stdout.strip())
    assert kf == base / "keys" / "laptop.key"
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert stat.S_IMODE((base / "server-keys").stat().st_mode) == 0o600
    key = load_key_file(str(kf))
    ring = KeyRing.load(str(base / "server-keys"))
    assert ring.get("laptop").secret == key.secret and len(key.secret) == 32
    r = vt("key", "new", "reader", "--rights", "read", "--export", "-", "--export", "pub")
    assert r.returncode == 0, r.stderr
    r = vt("key", "list")
    assert r.stdout.splitlines() == [
        "laptop\t*=read,add,archive",
        "reader\t-=read pub=read",
    ]
    r = vt("key", "remove", "laptop")
    assert r.returncode == 0 and not kf.exists()
    assert vt("key", "list").stdout.splitlines() == ["reader\t-=read pub=read"]
    # the secret is nowhere in what vt printed
    assert key.secret.hex() not in r.stdout + r.stderr


def test_refusals_are_one_line(vt, tmp_path):
    assert vt("key", "new", "a").returncode == 0
    for args, text in [
        (("key", "new", "a"), "exists already"),
        (("key", "new", "bad name"), "bad key name"),
        (("key", "new", "b", "--rights", "fly"), "unknown right"),
        (("key", "remove", "nobody"), "no key named"),
    ]:
        r = vt(*args)
        assert r.returncode != 0 and text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    ring = tmp_path / "base" / "server-keys"
    assert [k.id for k in KeyRing.load(str(ring))] == ["a"]
    assert not (tmp_path / "base" / "keys" / "b.key").exists()
    os.chmod(ring, 0o644)
    r = vt("key", "list")
    assert r.returncode != 0 and "too open" in r.stderr


def test_key_file_option_and_auth_keys_option(vt, tmp_path):
    ring = tmp_path / "ring"
    kf = tmp_path / "elsewhere" / "k.key"
    r = vt("key", "new", "k", "--key-file", str(kf), "--auth-keys", str(ring))
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == kf
    obj = json.loads(kf.read_text())
    assert obj["id"] == "k" and obj["rights"] == {"*": "read,add,archive"}
    assert [k.id for k in KeyRing.load(str(ring))] == ["k"]
    r = vt("key", "new", "k2", "--key-file", str(kf), "--auth-keys", str(ring))
    assert r.returncode != 0 and "exists already" in r.stderr
    assert [k.id for k in KeyRing.load(str(ring))] == ["k"]  # nothing half-done


def test_tls_cert(vt, tmp_path):
    from vtstore.security.tls import cert_fingerprint

    r = vt("key", "tls-cert", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "sha256:" + cert_fingerprint(str(tmp_path / "c.pem"))
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
