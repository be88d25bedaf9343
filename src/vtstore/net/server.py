"""The block server: serves named stores to many clients over any byte stream.

Threads, because the heavy work (hashing, compression, I/O) releases the GIL:

- per listener, an accept thread;
- per connection, a reader thread (reads packets, admits them under the
  connection's budget, answers HELLO and FLUSH itself) and a writer thread (sends
  the answers in the order they are ready);
- one worker pool shared by all connections runs every other request, so answers
  come back in any order and a slow GET does not hold up a CONTAINS.

Back-pressure instead of buffering: the reader reads a packet's length, checks it
against the limit, then waits until fewer than `max_outstanding` requests are
unanswered and the packet (with a reserve for its answer) fits both the server's
one memory budget and the connection's share of it, and only then reads
(allocates) the body.  A client that does not read its answers therefore stalls
itself, never the server; the connection limit, the timeouts and the budget are
in `vtstore.net.limits`.

Ordering: requests on a connection run concurrently, except FLUSH, a barrier that
waits for every request received before it and then flushes the export (so the
acknowledgements of those adds precede the FLUSH answer on the wire).

Stores are used from several worker threads; a store that is not marked
`threadsafe = True` is serialised by a lock per export.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from vtstore.errors import StoreError
from vtstore.net import protocol as P
from vtstore.net.connection import Connection
from vtstore.net.handlers import Export
from vtstore.net.limits import (
    Limits,
    Warden,
    bound_malloc,
)
from vtstore.net.transport import FdTransport, SocketTransport, Transport, parse_hostport
from vtstore.stores.base import Store

log = logging.getLogger("vtstore.net")


class NoKeysError(StoreError):
    """A TCP listener was asked for on a server that has no keys to check."""


# -- the server ------------------------------------------------------------------------------


class BlockServer:
    """Serves `exports` (name → store; the name "" is the default export).

    Use as a context manager, or call `shutdown()`: it stops listening, lets every
    admitted request finish and be answered, flushes the stores and joins every
    thread it started.  It does not close the stores; whoever opened them does.
    """

    def __init__(
        self,
        exports: Mapping[str, Store],
        *,
        readonly: bool = False,
        workers: int = 4,
        max_packet: int = P.DEFAULT_MAX_PACKET,
        max_outstanding: int = 64,
        max_buffered: int = 32 * 1024 * 1024,
        limits: Limits | None = None,
        keys=None,
        insecure_no_auth: bool = False,
        allow_uids=(),
        tls_context=None,
    ):
        """`keys` (a `vtstore.security.keys.KeyRing`) are the keys TCP clients
        authenticate with; TCP refuses to listen without them unless
        `insecure_no_auth`.  UNIX socket peers are let in by uid (SO_PEERCRED):
        this process's, root's and `allow_uids`.  `tls_context` (an
        `ssl.SSLContext` for the server side) wraps every TCP connection in TLS."""
        if max_packet < P.HANDSHAKE_MAX_PACKET:
            raise ValueError(f"max_packet must be at least {P.HANDSHAKE_MAX_PACKET}")
        self.keys = keys
        self.insecure_no_auth = insecure_no_auth
        self.allowed_uids = frozenset({os.geteuid(), 0, *allow_uids})
        self.tls_context = tls_context
        self.exports = {name: Export(name, st, readonly) for name, st in exports.items()}
        self.max_packet = max_packet
        self.max_outstanding = max_outstanding
        # `limits` (vtstore.net.limits): the memory budget, connections, timeouts;
        # `max_buffered` is the per-connection share of the budget
        lim = limits or Limits(per_connection=max_buffered)
        self.limits = lim.checked(max_packet)
        self.max_buffered = self.limits.per_connection
        self._cond = threading.Condition()  # guards the budget of every connection
        self._used = 0  # octets of the budget charged
        self._waiting = 0  # readers waiting for the budget (not their own limits)
        self._pressure_at = float("-inf")  # when one last began or ended such a wait
        self._warden: Warden | None = None
        bound_malloc()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vt-serve-work")
        self._lock = threading.Lock()
        self._conns: set[Connection] = set()
        self._listeners: list[tuple[socket.socket, threading.Thread, str | None, tuple]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self.stopping = False
        self._stopped = False
        self.addresses: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False

    @property
    def connection_count(self) -> int:
        """How many client connections are open."""
        with self._lock:
            return len(self._conns)

    # -- listening ---------------------------------------------------------------

    def listen(self, address: str) -> str:
        """Listen on `host:port` (host defaults to 127.0.0.1; port 0 picks one),
        `tcp:host:port`, `/path.sock` or `unix:/path.sock`; return the store spec a
        client uses to reach it (`tcp:127.0.0.1:PORT`, `unix:/path.sock`)."""
        if address.startswith("unix:"):
            return self.listen_unix(address[5:])
        if address.startswith(("tcp:", "tls:")):
            address = address[4:]
        if "/" in address or not address or address.startswith("."):
            return self.listen_unix(address)
        host, port = parse_hostport(address)
        return self.listen_tcp(host, port)

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on TCP; return `tcp:host:port` (`tls:host:port` with TLS) with the
        bound port.  Without keys, refused unless the server is `insecure_no_auth`."""
        if not self.keys and not self.insecure_no_auth:
            raise NoKeysError("TCP needs keys: run vt key new NAME, or --insecure-no-auth")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if self.tls_context is not None:
            from vtstore.security.tls import TLSListenSocket

            sock = TLSListenSocket(family, socket.SOCK_STREAM)
            sock.tls_context = self.tls_context
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            raise StoreError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        bound = sock.getsockname()[1]
        scheme = "tls" if self.tls_context is not None else "tcp"
        spec = (
            f"{scheme}:[{host}]:{bound}"
            if family == socket.AF_INET6
            else f"{scheme}:{host}:{bound}"
        )
        self._start_listener(sock, spec, None, ())
        return spec

    def listen_unix(self, path: str) -> str:
        """Listen on a UNIX socket (mode 0600); a stale socket file there is removed
        only if nothing answers on it.  Return `unix:PATH`."""
        path = os.path.abspath(os.path.expanduser(path))
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window where others could connect
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise StoreError(f"cannot listen on {path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        st = os.stat(path)
        spec = f"unix:{path}"
        self._start_listener(sock, spec, path, (st.st_dev, st.st_ino))
        return spec

    def _start_listener(self, sock, spec, path, ident) -> None:
        sock.setblocking(False)
        t = threading.Thread(
            target=self._accept_loop, args=(sock, spec), name=f"vt-serve-accept {spec}"
        )
        self._listeners.append((sock, t, path, ident))
        self.addresses.append(spec)
        t.start()
        log.info("listening on %s", spec)

    def _accept_loop(self, lsock: socket.socket, spec: str) -> None:
        n = 0
        while not self.stopping:
            try:
                ready, _, _ = select.select([lsock, self._wake_r], [], [])
            except OSError:
                return
            if self.stopping:
                return
            if lsock not in ready:
                continue
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as e:  # e.g. out of file descriptors: keep going
                log.warning("accept on %s failed: %s", spec, e)
                continue
            sock.setblocking(True)
            n += 1
            peer = f"{spec}#{n}" if sock.family == socket.AF_UNIX else f"{addr[0]}:{addr[1]}"
            why = self._refusal()
            if why is not None:
                self._start_warden().refuse(sock, peer, why)
                continue
            self.serve_transport(SocketTransport(sock, peer), peer)

    def _refusal(self) -> str | None:
        """Why a new connection cannot be taken now, or None."""
        lim = self.limits
        with self._lock:
            total = len(self._conns)
            if total >= lim.max_connections:
                return f"too many connections ({total}, the server's maximum); try again later"
            shaking = [c for c in self._conns if not c.channels and not c.timed_out]
        if len(shaking) >= lim.max_handshaking:
            # strangers must not lock everyone out: the oldest gives way to the new one
            oldest = min(shaking, key=lambda c: c.born)
            oldest.evict(
                f"too many connections in their handshake ({len(shaking)}, half the"
                f" server's maximum of {lim.max_connections}); this, the oldest, is closed"
            )
        return None

    def _start_warden(self) -> Warden:
        with self._lock:
            if self._warden is None:
                self._warden = Warden(self)
            return self._warden

    def connections(self) -> list[Connection]:
        """The open client connections (a snapshot)."""
        with self._lock:
            return list(self._conns)

    # -- connections ----------------------------------------------------------------

    def serve_transport(self, transport: Transport, peer: str, daemon: bool = False):
        """Serve one connection on its own threads; returns its handle (with a
        `done` event)."""
        conn = Connection(self, transport, peer, daemon)
        with self._lock:
            if self.stopping:
                transport.shutdown()
                transport.close()
                return conn
            self._conns.add(conn)
        log.info("%s: connected", peer)
        self._start_warden()
        conn.start()
        return conn

    def serve_stdio(self):
        """Serve the one connection on this process's stdin/stdout (`vt serve -`).

        The protocol gets private copies of file descriptors 0 and 1, and fd 1 is
        pointed at stderr, so a stray print cannot corrupt the stream.
        """
        rfd = os.dup(0)
        wfd = os.dup(1)
        os.dup2(2, 1)
        return self.serve_transport(FdTransport(rfd, wfd), "stdio", daemon=True)

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- stopping ----------------------------------------------------------------------

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop gracefully; see the class docstring.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping = True
        self._wake_w.send(b"x")
        for sock, t, path, ident in self._listeners:
            t.join()
            sock.close()
            if path:
                _unlink_if_ours(path, ident)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.stop()
        deadline = _deadline(timeout)
        for c in conns:
            if isinstance(c.t, FdTransport):
                # its reader cannot be woken; wait for its answers, then let it go
                c.wait_quiet(_remaining(deadline))
                c.kill()
                c.wq.put(None)
                continue
            if not c.done.wait(_remaining(deadline)):
                log.warning("%s: still busy at shutdown; dropping it", c.peer)
                c.kill()
                c.done.wait(5)
        for ex in self.exports.values():
            if not ex.readonly:
                try:
                    with ex.lock:
                        ex.store.flush()
                except Exception as e:
                    log.error("flushing export %r at shutdown failed: %s", ex.name, e)
        self._pool.shutdown(wait=True)
        for c in conns:
            if not c.reader.daemon:
                c.reader.join(5)
                c.writer.join(5)
        if self._warden is not None:
            self._warden.stop()
        self._wake_r.close()
        self._wake_w.close()


def _deadline(timeout: float | None):
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file at `path` that nothing listens on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StoreError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing stale socket %s", path)
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreError(f"cannot tell whether {path} is in use: {e}") from None
    finally:
        probe.close()
    raise StoreError(f"cannot listen on {path}: another server is listening there")


def _unlink_if_ours(path: str, ident: tuple) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass
