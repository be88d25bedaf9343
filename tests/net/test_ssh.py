"""The stdio path through a real ssh (issue 13, item 1): the test starts Debian's
sshd on 127.0.0.1 with throwaway host and user keys, and a client store spec
`|ssh ... vt serve -` saves, reads and lists through it.  stdio trusts its
transport, so no vt key is involved: ssh authenticated the user.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vtstore.net import StreamStore
from vtstore.stores.datadir import DataDir

from .sshd import Sshd, available

pytestmark = pytest.mark.skipif(
    not available(), reason="needs openssh-server and openssh-client (tools/install), as root"
)


@pytest.fixture
def sshd(tmp_path):
    """sshd on 127.0.0.1:PORT, root logins by a throwaway key only (tests/net/sshd.py);
    yields `ssh_command(key=the user key)`, the ssh command line that reaches it
    with that identity.  Stopped at the end."""
    with Sshd(tmp_path) as s:
        yield lambda key=None: s.command(key)


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
