"""`vt crypt` and the tree commands over an encrypted datadir, as a user runs
them: real `vt` processes, a real datadir, passphrases from the environment,
a passphrase file, and a user who may not read the key."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vtstore.hashes import Hash_BLAKE3

PW = "a long and secret passphrase"


def run_vt(env, *args, check=True, cwd=None, prefix=()):
    r = subprocess.run(
        [*prefix, sys.executable, "-m", "vtstore.cli.main", "-q", *args],
        capture_output=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    return r


@pytest.fixture
def env(vt_env):
    return {**vt_env, "VT_PASSPHRASE": PW}


@pytest.fixture
def dd(tmp_path, env):
    d = tmp_path / "dd"
    r = run_vt(env, "crypt", "init", str(d), "--scrypt-log-n", "12")
    assert b"new key" in r.stdout and (d / "crypt.key").stat().st_mode & 0o777 == 0o600
    return d


def make_tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_bytes(b"the quarterly numbers are terrible\n" * 400)
    (root / "sub" / "photo.raw").write_bytes(os.urandom(3_000_000))
    (root / "sub" / "small").write_bytes(b"tiny secret")


def test_pack_cat_unpack_through_crypt(tmp_path, env, dd):
    src = tmp_path / "secret-project"
    make_tree(src)
    S = ["-S", f"crypt:{dd}"]
    ref = run_vt(env, *S, "pack", str(src), "-a", "[enc]home").stdout.decode().strip()
    assert run_vt(env, *S, "cat", "[enc]home/notes.txt").stdout == (src / "notes.txt").read_bytes()
    out = tmp_path / "out"
    run_vt(env, *S, "unpack", "[enc]home", str(out))
    assert (out / "sub" / "photo.raw").read_bytes() == (src / "sub" / "photo.raw").read_bytes()
    assert run_vt(env, *S, "log", "[enc]home").stdout.count(b"\n") == 1
    # what a thief of the datadir sees: no names, no contents, no plaintext hashes
    hashes = {m.encode() for m in re.findall(r"[0-9a-f]{64}", ref)}
    for f in (src / "notes.txt", src / "sub" / "small"):
        hashes.add(Hash_BLAKE3.from_data(f.read_bytes()).hex_digest.encode())
    assert hashes
    needles = [b"secret-project", b"notes.txt", b"photo.raw", b"quarterly numbers", b"tiny secret"]
    needles += [bytes.fromhex(h.decode()) for h in hashes] + list(hashes)
    needles.append((src / "sub" / "photo.raw").read_bytes()[1000:1064])
    for dirpath, _d, files in os.walk(dd):
        for name in files:
            content = open(os.path.join(dirpath, name), "rb").read()
            for n in needles:
                assert n not in content, (name, n[:40])
                assert n.decode(errors="replace") not in name
    # the datadir opened without its key: the archive says it is encrypted
    r = run_vt(env, "-S", str(dd), "ls", "[plain]home", check=False)
    assert r.returncode == 1 and r.stdout == b"" and b"archive has no states" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", str(dd), "ls", "[plain]home"],
        capture_output=True,
        env=env,
    )
    assert b"an encrypted line: read the archive through its crypt store" in r.stderr


def test_file_path_archive_through_crypt_is_encrypted(tmp_path, env, dd):
    """`vt pack DIR` through a crypt store writes DIR.vt beside DIR: its lines
    are encrypted too (they hold the top ref, a plaintext hash), and every
    command reading it through the store decrypts them."""
    src = tmp_path / "secret-project"
    make_tree(src)
    S = ["-S", f"crypt:{dd}"]
    ref = run_vt(env, *S, "pack", str(src)).stdout.decode().strip()
    run_vt(env, *S, "pack", str(src))
    archive = tmp_path / "secret-project.vt"
    raw = archive.read_bytes()
    assert raw.count(b"\n") == 2 and all(x.startswith(b"!") for x in raw.splitlines())
    for h in re.findall(r"[0-9a-f]{64}", ref):
        assert h.encode() not in raw and bytes.fromhex(h) not in raw
    assert b"secret-project" not in raw
    assert run_vt(env, *S, "cat", f"{archive}/notes.txt").stdout == (src / "notes.txt").read_bytes()
    assert run_vt(env, *S, "log", str(archive)).stdout.count(b"\n") == 2
    out = tmp_path / "out"
    run_vt(env, *S, "unpack", str(archive), str(out))
    assert (out / "sub" / "small").read_bytes() == b"tiny secret"


def test_wrong_or_missing_passphrase_is_one_line(tmp_path, env, dd):
    S = ["-S", f"crypt:{dd}"]
    f = tmp_path / "f"
    f.write_bytes(b"some data")
    ref = run_vt(env, *S, "save", str(f)).stdout.decode().strip()
    for bad in (
        {**env, "VT_PASSPHRASE": PW + " "},
        {k: v for k, v in env.items() if k != "VT_PASSPHRASE"},
    ):
        r = run_vt(bad, *S, "cat", ref, check=False)
        assert r.returncode in (1, 2) and r.stdout == b""
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and ("wrong passphrase" in lines[0] or "no passphrase" in lines[0])
    # a passphrase file named in a clause
    pf = tmp_path / "pass"
    pf.write_text(PW + "\n")
    rc = tmp_path / "vtrc"
    rc.write_text(f"[enc]\ntype = crypt\nstore = {dd}\npassphrase_file = {pf}\n")
    quiet = {k: v for k, v in env.items() if k != "VT_PASSPHRASE"}
    assert run_vt(quiet, "-c", str(rc), "-S", "[enc]", "cat", ref).stdout == b"some data"


def test_passwd_rewraps_without_touching_data(tmp_path, env, dd):
    f = tmp_path / "f"
    f.write_bytes(os.urandom(200_000))
    ref = run_vt(env, "-S", f"crypt:{dd}", "save", str(f)).stdout.decode().strip()
    data_files = sorted((dd / "data").glob("*.vtd"))
    before = [p.read_bytes() for p in data_files]
    r = run_vt({**env, "VT_NEW_PASSPHRASE": "another one"}, "crypt", "passwd", str(dd))
    assert b"wrapped with the new passphrase" in r.stdout
    assert [p.read_bytes() for p in data_files] == before
    r = run_vt(env, "-S", f"crypt:{dd}", "cat", ref, check=False)
    assert r.returncode == 1 and b"wrong passphrase" in r.stderr
    new = {**env, "VT_PASSPHRASE": "another one"}
    assert run_vt(new, "-S", f"crypt:{dd}", "cat", ref).stdout == f.read_bytes()
    # passwd with the wrong old passphrase changes nothing
    key = (dd / "crypt.key").read_bytes()
    r = run_vt({**env, "VT_NEW_PASSPHRASE": "x"}, "crypt", "passwd", str(dd), check=False)
    assert r.returncode == 1 and (dd / "crypt.key").read_bytes() == key


def test_info_reindex_and_init_twice_format1(tmp_path, env):
    """A crypt store over a datadir made before `vt crypt init` (as every crypt
    store before format 2): its crypt index can be lost and rebuilt."""
    from vtstore.stores.datadir import DataDir

    dd = tmp_path / "dd"
    with DataDir(dd) as d:
        d.create()
    run_vt(env, "crypt", "init", str(dd), "--scrypt-log-n", "12")
    f = tmp_path / "f"
    f.write_bytes(os.urandom(100_000))
    ref = run_vt(env, "-S", f"crypt:{dd}", "save", str(f)).stdout.decode().strip()
    info = run_vt(env, "crypt", "info", f"crypt:{dd}").stdout.decode()
    assert "kdf: scrypt n=2^12 r=8 p=1" in info and "index_bytes: " in info
    assert "format: 1" in info
    (dd / "crypt.idx").unlink()
    r = run_vt(env, "-S", f"crypt:{dd}", "cat", ref, check=False)
    assert r.returncode == 1 and b"missing block" in r.stderr
    r = run_vt(env, "crypt", "reindex", str(dd))
    assert re.search(rb": \d+ blocks indexed, 0 blocks of another key", r.stdout)
    assert run_vt(env, "-S", f"crypt:{dd}", "cat", ref).stdout == f.read_bytes()
    r = run_vt(env, "crypt", "init", str(dd), check=False)
    assert r.returncode == 1 and b"exists already" in r.stderr
    r = run_vt(env, "crypt", "info", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 1 and b"vt crypt init" in r.stderr


def test_format2_info_reindex_fsck_with_and_without_key(tmp_path, env, dd):
    """`vt crypt init` makes a format 2 store: no crypt index; the datadir's
    own index is rebuilt and checked without the key; `vt fsck crypt:` also
    decrypts every block and finds what only the key can see."""
    f = tmp_path / "f"
    f.write_bytes(os.urandom(300_000))
    ref = run_vt(env, "-S", f"crypt:{dd}", "save", str(f)).stdout.decode().strip()
    info = run_vt(env, "crypt", "info", f"crypt:{dd}").stdout.decode()
    assert "format: 2" in info and "\nindex" not in info
    assert not (dd / "crypt.idx").exists()
    got = json.loads(run_vt(env, "crypt", "info", str(dd), "--json").stdout)
    assert got["format"] == 2 and len(got["key_id"]) == 16 and "index" not in got
    got = json.loads(run_vt(env, "crypt", "reindex", str(dd), "--json").stdout)
    assert got["format"] == 2 and got["blocks"] > 5 and got["foreign"] == got["unreadable"] == 0
    r = run_vt(env, "crypt", "reindex", str(dd))
    assert re.search(
        rb": \d+ blocks decrypted and checked \(format 2: no crypt index\), 0 bl", r.stdout
    )
    nokey = {k: v for k, v in env.items() if k != "VT_PASSPHRASE"}
    shutil.rmtree(dd / "index")  # the datadir's index: rebuilt from the data files alone
    run_vt(nokey, "-S", str(dd), "reindex")
    assert run_vt(env, "-S", f"crypt:{dd}", "cat", ref).stdout == f.read_bytes()
    assert run_vt(nokey, "-S", str(dd), "fsck").returncode == 0
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-v", "-S", f"crypt:{dd}", "fsck"],
        capture_output=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and re.search(rb"note: \d+ blocks decrypted and checked", r.stdout)
    # a byte changed and the record's CRC made right again: only the key sees it
    (data,) = (dd / "data").glob("*.vtd")
    # in the middle of a stored block's ciphertext: a flip at a fixed offset
    # from the end sometimes hit a block's length or its crypt header, which
    # a check without the key sees (the random data moves the boundaries)
    from vtstore.stores.datadir import DataDir

    with DataDir(dd, readonly=True) as s:
        e = max((e for _, e in s._index.iter_items()), key=lambda e: e.data_length)
    fix_crc_after_flip(data, e.payload_offset + e.data_offset + e.data_length // 2)
    assert run_vt(nokey, "-S", str(dd), "fsck").returncode == 0
    r = run_vt(env, "-S", f"crypt:{dd}", "fsck", check=False)
    assert r.returncode == 1 and b"fail authentication" in r.stdout, r.stdout
    r = run_vt(env, "-S", f"crypt:{dd}", "cat", ref, check=False)
    assert r.returncode == 1 and b"authentication" in r.stderr and len(r.stderr.splitlines()) == 1


def fix_crc_after_flip(path, at: int) -> None:
    """Flip one bit at `at` in a data file and rewrite the CRC of the record
    holding it, as a tamperer who knows the format would."""
    from vtstore.stores.vtd import Record, scan_records
    from vtstore.stores.vtdio import crc32

    raw = bytearray(Path(path).read_bytes())
    (rec,) = [
        r
        for r in scan_records(bytes(raw), 0, len(raw))
        if isinstance(r, Record) and r.payload_offset <= at < r.payload_offset + r.payload_length
    ]
    raw[at] ^= 0x10
    head = bytes(raw[rec.offset : rec.payload_offset])
    end = rec.payload_offset + rec.payload_length
    crc = crc32(bytes(raw[rec.payload_offset : end]), crc32(head))
    raw[end : end + 4] = crc.to_bytes(4, "big")
    Path(path).write_bytes(bytes(raw))


def test_other_user_cannot_read_the_key(env):
    top = Path(tempfile.mkdtemp(prefix="vt-crypt-"))  # outside pytest's 0700 tree
    try:
        os.chmod(top, 0o755)
        dd = top / "dd"
        run_vt(env, "crypt", "init", str(dd), "--scrypt-log-n", "12")
        os.chmod(dd, 0o755)  # even with the directory and metadata opened up,
        os.chmod(dd / "datadir.json", 0o644)  # the key file stays 0600
        r = run_vt(
            env,
            "crypt",
            "passwd",
            str(dd),
            check=False,
            prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
            cwd="/",
        )
        assert r.returncode != 0 and b"crypt.key: Permission denied" in r.stderr
        assert len(r.stderr.decode().strip().splitlines()) == 1
    finally:
        shutil.rmtree(top)


def test_mount_an_encrypted_archive(tmp_path, env, dd):
    """FUSE: the mount daemon opens the crypt store and reads the encrypted
    archive and blocks."""
    src = tmp_path / "src"
    make_tree(src)
    S = ["-S", f"crypt:{dd}"]
    run_vt(env, *S, "pack", str(src), "-a", "[enc]home")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run_vt(env, *S, "mount", "[enc]home", str(mnt))
    try:
        assert sorted(os.listdir(mnt)) == ["notes.txt", "sub"]
        assert (mnt / "sub" / "photo.raw").read_bytes() == (src / "sub" / "photo.raw").read_bytes()
        assert (mnt / "notes.txt").read_bytes() == (src / "notes.txt").read_bytes()
    finally:
        run_vt(env, "umount", str(mnt))


def test_serving_a_format2_backend_is_refused_in_one_line(tmp_path, env, dd):
    """A block server of a format 2 datadir names a hash class no client knows
    (its names are tags): the client says so in one line, it does not hang."""
    f = tmp_path / "f"
    f.write_bytes(os.urandom(50_000))
    run_vt(env, "-S", f"crypt:{dd}", "save", str(f))
    sock, ready = tmp_path / "s.sock", tmp_path / "ready"
    server = subprocess.Popen(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(dd), "serve"]
        + [f"unix:{sock}", "--ready-file", str(ready)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.05)
        r = run_vt(env, "-S", f"unix:{sock}", "info", check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
        assert b"unknown hash class id 66" in r.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
