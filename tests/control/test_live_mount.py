"""`vt ftp MOUNTPOINT` and `vt ctl` on a real FUSE mount: changes seen through
the mount at once and recorded in the archive at unmount."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from vtstore.control.live import socket_path

from ..fs.conftest import Mounted
from .conftest import VT, vt


@pytest.fixture
def mounted(tmp_path, env):
    t = str(tmp_path)
    os.makedirs(f"{t}/base/docs")
    with open(f"{t}/base/docs/readme.txt", "w") as f:
        f.write("read me\n")
    os.makedirs(f"{t}/local/sub")
    with open(f"{t}/local/big.bin", "wb") as f:
        f.write(os.urandom(2_000_000))
    with open(f"{t}/local/sub/s", "w") as f:
        f.write("s\n")
    with open(f"{t}/bound.txt", "w") as f:
        f.write("bound by ref\n")
    vt("-q", "-S", f"{t}/S", "init", env=env)
    vt("-q", "-S", f"{t}/S", "pack", f"{t}/base", env=env)
    bound = vt("-S", f"{t}/S", "save", "-F", f"{t}/bound.txt", env=env).stdout.decode().strip()
    other = vt("-S", f"{t}/S", "save", f"{t}/local", env=env).stdout.decode().strip()
    m = Mounted(f"{t}/S", f"{t}/base.vt", f"{t}/mnt")
    yield t, m, bound, other
    m.close()


def test_ftp_and_ctl_on_a_live_mount(mounted, env, terminal):
    t, m, bound, other = mounted
    mnt = m.mnt
    sock = socket_path(mnt)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    script = f"mkdir new; put local new; bind b.txt '{bound}'; clone new/local/big.bin big2"
    r = vt("-S", f"{t}/S", "ftp", mnt, "-c", script + "; link docs/readme.txt lnk", env=env, cwd=t)
    assert "the mount records them" in r.stderr.decode()
    # seen through the mount at once
    with open(f"{t}/local/big.bin", "rb") as f:
        big = f.read()
    assert open(f"{mnt}/new/local/big.bin", "rb").read() == big
    assert open(f"{mnt}/big2", "rb").read() == big
    assert open(f"{mnt}/b.txt").read() == "bound by ref\n"
    assert os.readlink(f"{mnt}/lnk") == "docs/readme.txt"
    # the shell on a terminal: ls -l and inspect go through the socket
    term = terminal([*VT, "ftp", mnt], env=env, cwd=t)
    term.expect(r"vt:/> ")
    term.line("cd new/local")
    term.expect(r"vt:/new/local> ")
    term.line("ls -l")
    term.expect(r"-rw-.* 2000000 .* big.bin")
    term.line("inspect big.bin")
    term.expect(r"leaves: \d+")
    term.line("crop big.bin 0 10")  # the mount's x-vt-control crop
    term.expect(r"vt:/new/local> ")
    term.line("quit")
    assert term.wait() == 0
    assert os.path.getsize(f"{mnt}/new/local/big.bin") == 10
    # vt ctl: stats, bind, merge, sync
    stats = json.loads(vt("ctl", mnt, "stats", "--json", env=env).stdout)
    assert stats["files"] >= 5
    vt("ctl", mnt, "bind", "/c.txt", bound, env=env)
    assert open(f"{mnt}/c.txt").read() == "bound by ref\n"
    vt("ctl", mnt, "merge", other, env=env)  # local's entries the top lacks: sub, big.bin
    assert open(f"{mnt}/sub/s").read() == "s\n"
    r = vt("ctl", mnt, "bind", "/c.txt", bound, env=env, check=False)
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1
    r = vt("ctl", mnt, "frobnicate", env=env, check=False)
    assert r.returncode == 1 and "unknown control 'frobnicate'" in r.stderr.decode()
    synced = json.loads(vt("ctl", mnt, "sync", "--json", env=env).stdout)
    assert synced["recorded"] is True
    vt("ctl", mnt, "bind", "/late.txt", bound, env=env)
    # recorded at unmount
    assert m.umount() == 0
    assert not os.path.exists(sock)
    out = f"{t}/out"
    vt("-q", "-S", f"{t}/S", "unpack", f"{t}/base.vt", out, env=env)
    assert sorted(os.listdir(out)) == sorted(
        ["docs", "new", "b.txt", "big2", "lnk", "c.txt", "sub", "big.bin", "late.txt"]
    )
    assert open(f"{out}/new/local/big.bin", "rb").read() == big[:10]
    assert open(f"{out}/big2", "rb").read() == big
    assert open(f"{out}/late.txt").read() == "bound by ref\n"


def test_socket_refuses_another_user(mounted):
    _, m, _, _ = mounted
    code = f"import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect({socket_path(m.mnt)!r})"
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "PermissionError" in r.stderr


def test_ctl_without_a_mount(tmp_path, env):
    r = vt("ctl", str(tmp_path), "stats", env=env, check=False)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        f"vt ctl: {tmp_path}: no vt mount answers there (No such file or directory)"
    ]


def test_hostile_requests_get_an_error_and_the_mount_goes_on(mounted, env):
    import socket

    _, m, _, _ = mounted
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(socket_path(m.mnt))
    f = s.makefile("rwb")
    bad = [
        b"not json\n",
        b"[1, 2]\n",
        b'{"op": 7}\n',
        b'{"args": []}\n',
        b'{"op": "ref", "args": ["../../.."]}\n',
    ]
    for line in bad:
        f.write(line)
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] is (line.startswith(b'{"op": "ref"')), (line, reply)
    f.write(b'{"op": "' + b"x" * 3_000_000 + b'"}\n')  # over the 1 MiB line limit
    f.flush()
    assert "over 1048576 octets" in json.loads(f.readline())["error"]
    f.write(b'{"op": "stats"}\n')  # and the connection goes on
    f.flush()
    assert json.loads(f.readline())["ok"] is True
    s.close()
    assert json.loads(vt("ctl", m.mnt, "stats", "--json", env=env).stdout)["dirs"] >= 2
    assert "Traceback" not in m.output()
