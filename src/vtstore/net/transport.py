"""Byte streams the block protocol runs over: TCP, UNIX sockets, a command's stdio.

A transport is a buffered reader (`rfile`), a `send(data)` that writes all of
`data`, `shutdown()` that wakes a reader blocked in `rfile` (so its thread can be
joined), and `close()`.  The client opens one per connection attempt; the server
wraps each accepted socket, or its own stdin/stdout, the same way.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess

from vtstore.errors import ConfigError

#: Read buffer for every transport: large enough that a burst of small answers
#: costs one system call, small enough to be a fixed cost per connection.
READ_BUFFER = 256 * 1024

_HOSTPORT_RE = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>\d+)\Z")


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse `host:port`, `[v6addr]:port` or `:port` (the host defaulting to loopback)."""
    m = _HOSTPORT_RE.match(text)
    if not m:
        raise ConfigError(f"not host:port: {text!r}")
    host = m.group("v6") if m.group("v6") is not None else m.group("host")
    port = int(m.group("port"))
    if port > 65535:
        raise ConfigError(f"port {port} out of range in {text!r}")
    return host or default_host, port


def is_hostport(text: str) -> bool:
    """True if `text` looks like `host:port` (the port all digits)."""
    return _HOSTPORT_RE.match(text) is not None


class Transport:
    """Base of the transports; see the module docstring."""

    rfile: io.BufferedIOBase
    description = "stream"

    def send(self, data) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def shutdown(self) -> None:
        """Wake any reader and refuse further sends; idempotent."""

    def close(self) -> None:
        """Release everything; call after the reader thread has stopped."""


class SocketTransport(Transport):
    """A connected stream socket (TCP or UNIX), in TLS when `tls` (a
    `vtstore.security.tls.TLSEngine`) is given or the socket was accepted by a
    TLS listener (the server's handshake then runs on the first read)."""

    def __init__(self, sock: socket.socket, description: str, tls=None):
        self.sock = sock
        self.description = description
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # small answers must not wait for Nagle's timer
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = getattr(sock, "tls_server_context", None)
        if tls is None and ctx is not None:
            from vtstore.security.tls import TLSEngine

            tls = TLSEngine(sock, ctx, server_side=True)
        self.tls = tls
        if tls is not None:
            from vtstore.security.tls import tls_reader

            self.rfile = tls_reader(tls, READ_BUFFER)
            self.send = tls.send
        else:
            self.rfile = sock.makefile("rb", buffering=READ_BUFFER)

    def send(self, data) -> None:
        self.sock.sendall(data)

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def shutdown_read(self) -> None:
        """Stop reading (a blocked reader sees end of stream) but keep sending."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()


def connect_tcp(host: str, port: int, timeout: float = 10.0) -> SocketTransport:
    """Connect to a block server over TCP."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    return SocketTransport(sock, f"tcp:{host}:{port}")


def connect_tls(
    host: str, port: int, ca: str | None = None, pin: str | None = None, timeout: float = 10.0
) -> SocketTransport:
    """Connect to a block server over TCP in TLS, verifying its certificate against
    `ca` (or the system's CAs), or accepting only the certificate pinned by `pin`."""
    from vtstore.security.tls import TLSEngine, client_context

    ctx = client_context(ca=ca, pin=pin)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        engine = TLSEngine(
            sock, ctx, server_side=False, server_hostname=host if pin is None else None, pin=pin
        )
        engine.handshake()
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return SocketTransport(sock, f"tls:{host}:{port}", tls=engine)


def connect_unix(path: str, timeout: float = 10.0) -> SocketTransport:
    """Connect to a block server on a UNIX socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return SocketTransport(sock, f"unix:{path}")


class CommandTransport(Transport):
    """A shell command whose stdin/stdout carry the protocol (`|ssh host vt serve -`).

    The command runs in its own session so that `shutdown` can end the whole
    process group (the shell and what it started), not just the shell.  Its
    stderr is left alone: ssh prompts and server errors reach the user.
    """

    def __init__(self, command: str):
        self.command = command
        self.description = f"|{command}"
        self.proc = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        self.rfile = io.BufferedReader(self.proc.stdout, READ_BUFFER)
        self._stdin = self.proc.stdin

    def send(self, data) -> None:
        stdin = self._stdin
        if stdin is None:
            raise BrokenPipeError("command stdin is closed")
        mv = memoryview(data)
        while mv:
            n = stdin.write(mv)
            mv = mv[n:]

    def _close_stdin(self) -> None:
        stdin, self._stdin = self._stdin, None
        if stdin is not None:
            try:
                stdin.close()
            except OSError:
                pass

    def end_input(self, timeout: float = 5.0) -> None:
        """Close the command's stdin and give it `timeout` seconds to exit."""
        self._close_stdin()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.shutdown()

    def shutdown(self) -> None:
        self._close_stdin()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        self._close_stdin()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.shutdown()
            self.proc.wait()
        self.rfile.close()


class FdTransport(Transport):
    """A pair of file descriptors (the server's stdin/stdout for `vt serve -`)."""

    def __init__(self, rfd: int, wfd: int, description: str = "stdio"):
        self.description = description
        self.rfd = rfd
        self.wfd = wfd
        self.rfile = io.BufferedReader(io.FileIO(rfd, "rb", closefd=False), READ_BUFFER)

    def send(self, data) -> None:
        mv = memoryview(data)
        while mv:
            n = os.write(self.wfd, mv)
            mv = mv[n:]

    def shutdown(self) -> None:
        # a read blocked on a pipe cannot be woken from another thread; the
        # server treats this connection's reader as a daemon instead
        pass


def client_transport_factory(spec: str, tls_ca: str | None = None, tls_pin: str | None = None):
    """For a client store spec, a function that opens one new connection.

    `tcp:host:port`, `tls:host:port` (verified against `tls_ca` or the system's
    CAs, or pinned by `tls_pin`), `unix:/path.sock` or `|command`.
    """
    if spec.startswith("|"):
        command = spec[1:].strip()
        if not command:
            raise ConfigError("store spec '|' needs a command")
        return lambda: CommandTransport(command)
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "tcp":
        host, port = parse_hostport(rest)
        return lambda: connect_tcp(host, port)
    if sep and scheme == "tls":
        host, port = parse_hostport(rest)
        if tls_pin is not None:
            from vtstore.security.tls import normalize_pin

            normalize_pin(tls_pin)  # a bad pin is a setting error, found before connecting
        return lambda: connect_tls(host, port, ca=tls_ca, pin=tls_pin)
    if sep and scheme == "unix":
        if not rest:
            raise ConfigError("store spec unix: needs a socket path")
        path = os.path.expanduser(rest)
        return lambda: connect_unix(path)
    raise ConfigError(f"not a block server spec (tcp:, tls:, unix:, |command): {spec!r}")
