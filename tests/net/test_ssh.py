"""The stdio path through a real ssh (issue 13, item 1): the test starts Debian's
sshd on 127.0.0.1 with throwaway host and user keys, and a client store spec
`|ssh ... vt serve -` saves, reads and lists through it.  stdio trusts its
transport, so no vt key is involved: ssh authenticated the user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from vtstore.net import StreamStore
from vtstore.stores.datadir import DataDir

SSHD = "/usr/sbin/sshd"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")),
    reason="needs openssh-server and openssh-client (tools/install)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """sshd on 127.0.0.1:PORT, root logins by a throwaway key only; yields
    `ssh_command(key=the user key)`, the ssh command line that reaches it with
    that identity.  Stopped at the end."""
    if os.geteuid() != 0:
        pytest.skip("sshd for a root login needs root")
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nX11Forwarding no\n"
        "AllowTcpForwarding no\nPrintMotd no\nLogLevel ERROR\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    opts = (
        f"-p {port} -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no"
        " -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1"
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not start listening"
                time.sleep(0.1)
        yield lambda key=d / "user": f"ssh -i {key} {opts}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _remote_vt(helpers, store: str) -> str:
    """The command ssh runs: `vt serve -` of this checkout on `store`."""
    return f"PYTHONPATH={helpers.src} {sys.executable} -m vtstore.cli.main -q -S {store} serve -"


def test_ssh_stdio_path_end_to_end(sshd, tmp_path, helpers):
    """Blocks added through `|ssh ... vt serve -` land in the remote datadir, and a
    second connection reads them back; vt save/cat use the same spec."""
    dd = tmp_path / "remote-dd"
    spec = f"|{sshd()} '{_remote_vt(helpers, dd)}'"
    data = [os.urandom(n) for n in (100, 200_000, 3 << 20)]
    with StreamStore(spec) as st:
        hs = st.add_many(data)
        st.flush()
    with StreamStore(spec) as st:
        assert [st.get(h) for h in hs] == data
        assert len(st) >= 3
    with DataDir(dd) as local:
        assert [local.get(h) for h in hs] == data
    f = tmp_path / "file"
    f.write_bytes(os.urandom(1 << 20))
    env = helpers.subprocess_env()
    r = subprocess.run(
        helpers.vt_command("-S", spec, "save", str(f)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        helpers.vt_command("-S", spec, "cat", r.stdout.strip()),
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout == f.read_bytes()


def test_ssh_with_a_key_sshd_does_not_accept_is_one_line(sshd, tmp_path, helpers):
    """ssh refuses a key sshd does not know: the client store says it could not
    use the server, in one line (ssh's own message goes to stderr)."""
    other = tmp_path / "otherkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    spec = f"|{sshd(other)} '{_remote_vt(helpers, tmp_path / 'dd')}'"
    r = subprocess.run(
        helpers.vt_command("-S", spec, "cat", "I{hash:blake3:" + "0" * 64 + ",span:1}"),
        env=helpers.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    vt_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("vt ")]
    assert len(vt_lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "block server" in vt_lines[0] or "handshake" in vt_lines[0], vt_lines
