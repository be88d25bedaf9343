"""Fixtures for the control tests: `vt` as a process and a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

VT = [sys.executable, "-m", "vtstore.cli.main"]


def vt(*args, input=None, check=True, env=None, cwd=None):
    """Run `vt ARGS...`; fail on a traceback, and on an error when `check`."""
    r = subprocess.run([*VT, *args], capture_output=True, input=input, env=env, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    return r


class Terminal:
    """A process on a real pseudo-terminal, driven as a person types.

    `expect(pattern)` waits for a regex in what the terminal shows (echo and
    output, as one stream) and returns the match; the text before and up to
    the match is consumed."""

    def __init__(self, argv, env=None, cwd=None, rows=40, cols=200):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec the program on the terminal
            try:
                if cwd:
                    os.chdir(cwd)
                # a terminal session starts with Ctrl-C's signal at its default,
                # whatever this test process inherited (a shell's background job,
                # `cmd &`, ignores SIGINT, and an ignored signal stays ignored
                # across exec)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execvpe(argv[0], argv, env or os.environ)
            finally:
                os._exit(127)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.buf = ""
        self.seen = ""
        self.status = None

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            raise EOFError(self.buf)
        text = data.decode("utf-8", "replace")
        self.buf += text
        self.seen += text
        return True

    def expect(self, pattern: str, timeout: float = 20.0):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end() :]
                return m
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out waiting for {pattern!r}; screen:\n{self.seen[-3000:]!r}"
                )
            try:
                self._read(min(left, 1.0))
            except EOFError:
                raise AssertionError(
                    f"terminal closed waiting for {pattern!r}; screen:\n{self.buf}"
                ) from None

    def wait(self, timeout: float = 60.0) -> int:
        """Read to the end, reap the child, return its exit status."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self._read(0.2)
            except EOFError:
                break
        for _ in range(int(timeout * 10)):
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the process did not end; screen:\n{self.seen[-2000:]}")
        os.close(self.fd)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.status = -9


@pytest.fixture
def terminal():
    """`terminal(argv, env=..., cwd=...)` starts a Terminal; all are killed at the end."""
    started = []

    def start(argv, **kw):
        t = Terminal(argv, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


@pytest.fixture
def env(tmp_path):
    """An environment with a throwaway HOME (history, config) and a fresh datadir."""
    e = dict(os.environ)
    e["HOME"] = str(tmp_path / "home")
    e.pop("VT_STORE", None)
    e.pop("XDG_STATE_HOME", None)
    e["TERM"] = "xterm"
    e["INPUTRC"] = "/dev/null"
    os.makedirs(e["HOME"])
    return e
