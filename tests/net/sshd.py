"""A throwaway sshd on 127.0.0.1 for tests and benchmarks: Debian's sshd with
its own host key and one user key, root logins by that key only, an sftp
subsystem (for restic's sftp: backend and rsync's peers), stopped on exit.

    with Sshd(workdir) as s:
        run(f"{s.command()} true")             # ssh ... root@127.0.0.1
        spec = f"|{s.command()} 'vt serve -'"  # a vt store spec

The same setup as the `sshd` fixture of tests/net/test_ssh.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def available() -> bool:
    """Whether sshd, ssh and ssh-keygen are installed and we may log in as root."""
    tools = shutil.which("ssh") and shutil.which("ssh-keygen")
    return bool(os.path.exists(SSHD) and tools and os.geteuid() == 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """sshd listening on 127.0.0.1:`port`, its files in `workdir/ssh`."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir) / "ssh"
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None

    def command(self, key: Path | None = None) -> str:
        """The ssh command line (without the remote command) that logs in."""
        return f"ssh -i {key or self.dir / 'user'} {self.options()} root@127.0.0.1"

    def options(self) -> str:
        """ssh's options for this server (port, no prompts, no known_hosts)."""
        return (
            f"-p {self.port} -o BatchMode=yes -o IdentitiesOnly=yes"
            " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        )

    def start(self, timeout: float = 20.0) -> Sshd:
        d = self.dir
        d.mkdir(mode=0o700, parents=True)
        for name in ("host", "user"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
            )
        (d / "authorized_keys").write_text((d / "user.pub").read_text())
        os.chmod(d / "authorized_keys", 0o600)
        config = d / "sshd_config"
        sftp = f"Subsystem sftp {SFTP_SERVER}\n" if os.path.exists(SFTP_SERVER) else ""
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nX11Forwarding no\n"
            f"AllowTcpForwarding no\nPrintMotd no\nLogLevel ERROR\n{sftp}"
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        self._log = open(d / "sshd.log", "wb")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not start listening") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
