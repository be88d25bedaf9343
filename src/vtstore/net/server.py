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
import queue
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from vtstore.errors import FormatError, StoreError, VTError
from vtstore.net import protocol as P
from vtstore.net.handlers import HANDLERS, Export, Reply, error_payload
from vtstore.net.limits import (
    E_BUSY,
    E_TIMEOUT,
    HANDSHAKE_OUTSTANDING,
    IO_STEP,
    PRESSURE_GRACE,
    REQUEST_RESERVE,
    Limits,
    Warden,
    bound_malloc,
    request_need,
)
from vtstore.net.transport import FdTransport, SocketTransport, Transport, parse_hostport
from vtstore.security.auth import AuthFailed, ServerAuth
from vtstore.stores.base import Store

log = logging.getLogger("vtstore.net")

#: Most channels open at once on one connection.
MAX_OPEN_CHANNELS = 16


class NoKeysError(StoreError):
    """A TCP listener was asked for on a server that has no keys to check."""


# -- one connection ---------------------------------------------------------------------


class _Connection:
    """The reader, the writer and the budget of one client connection."""

    def __init__(self, server: BlockServer, transport: Transport, peer: str, daemon: bool):
        self.server = server
        self.t = transport
        self.peer = peer
        self.channels: dict[int, Export] = {}
        self.cond = server._cond  # one lock and condition for the whole budget
        self.outstanding = 0  # requests admitted whose answer is not yet sent
        self.running = 0  # requests handed to the worker pool, not yet answered
        self.buffered = 0  # octets of the budget charged to this connection
        self.stopping = False
        self.dead = False
        self.timed_out = False
        self.closed = False  # the writer is gone: the charges are given back
        self.born = self.last_activity = time.monotonic()
        self.rstate = "idle"  # the reader: idle (between packets), admit, body, dispatch
        self.rstep: float | None = None  # when the step of a body being read began
        self.wstep: float | None = None  # when the step of an answer being sent began
        self.reserve = 0  # charged with the request being read, for its answer
        self.done = threading.Event()
        self.wq: queue.SimpleQueue = queue.SimpleQueue()
        self.reader = threading.Thread(
            target=self._read_loop, name=f"vt-serve-read {peer}", daemon=daemon
        )
        self.writer = threading.Thread(
            target=self._write_loop, name=f"vt-serve-write {peer}", daemon=daemon
        )

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    # -- budget ---------------------------------------------------------

    def _blocker(self, charge: int) -> str | None:
        """What keeps a request of `charge` octets out: None, "own" (this
        connection's limits) or "budget" (the server's)."""
        s = self.server
        if not self.channels:
            # handshake packets are small and answered at once: never wait for them
            return None if self.outstanding < HANDSHAKE_OUTSTANDING else "own"
        if self.outstanding >= s.max_outstanding:
            return "own"
        if self.buffered and self.buffered + charge > s.limits.per_connection:
            return "own"
        return "budget" if s._used + charge > s.limits.memory else None

    def _admit(self, charge: int) -> bool:
        s = self.server
        waiting = False  # counted in s._waiting: the warden is stricter meanwhile
        with self.cond:
            self.rstate = "admit"
            try:
                while (why := self._blocker(charge)) is not None:
                    if self.dead or self.stopping:
                        return False
                    if (why == "budget") != waiting:
                        waiting = not waiting
                        s._waiting += 1 if waiting else -1
                        s._pressure_at = time.monotonic()
                    self.cond.wait()
            finally:
                if waiting:
                    s._waiting -= 1
            if self.dead:
                return False
            self.outstanding += 1
            self._charge(charge)
            return True

    def _charge(self, n: int) -> None:
        """Charge `n` octets to this connection and the server (`cond` held)."""
        self.buffered += n
        self.server._used += n

    def _uncharge(self, n: int) -> None:
        self.buffered -= n
        self.server._used -= n
        self.cond.notify_all()

    def _queue(self, data: bytes, charge: int, counted: bool = True) -> None:
        # the request is done with: its body and reserve give way to the answer
        with self.cond:
            if self.closed:
                return  # nobody sends it now; its charge went with the connection
            self._uncharge(charge)
            self._charge(len(data))
        self.wq.put((data, len(data), counted))

    def _answer(self, pkt: P.Packet, flags: int, parts, charge: int) -> None:
        data = P.encode_packet(pkt.op, P.F_RESPONSE | flags, pkt.channel, pkt.tag, *parts)
        self._queue(data, charge)

    def _answer_error(self, pkt: P.Packet, exc: BaseException, charge: int) -> None:
        self._answer(pkt, P.F_ERROR | P.F_JSON, [error_payload(exc)], charge)

    def _fatal(self, code: int, message: str) -> None:
        """A connection-level error (op 0, tag 0); the connection closes after it."""
        log.warning("%s: %s; closing the connection", self.peer, message)
        data = P.encode_packet(
            0, P.F_RESPONSE | P.F_ERROR | P.F_JSON, 0, 0, P.encode_error(code, message)
        )
        self._queue(data, 0, counted=False)

    # -- writer -----------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self.wq.get()
            if item is None:
                return
            data, charge, counted = item
            if not self.dead:
                try:
                    self._send(data)
                except (OSError, ValueError) as e:
                    log.info("%s: cannot send: %s", self.peer, e)
                    self.kill()
            with self.cond:
                self.wstep = None
                self.last_activity = time.monotonic()
                self._uncharge(charge)
                if counted:
                    self.outstanding -= 1

    def _send(self, data: bytes) -> None:
        """Send `data` a step at a time, each step within the io timeout."""
        if len(data) <= IO_STEP:
            self.wstep = time.monotonic()
            self.t.send(data)
            return
        mv = memoryview(data)
        for off in range(0, len(mv), IO_STEP):
            self.wstep = time.monotonic()
            self.t.send(mv[off : off + IO_STEP])

    # -- reader -------------------------------------------------------------

    def _read_loop(self) -> None:
        rfile = self.t.rfile
        try:
            while not self.stopping and not self.dead:
                self.rstate = "idle"
                prefix = rfile.read(4)
                if not prefix:
                    break
                if len(prefix) != 4:
                    raise P.TruncatedPacket("stream ended inside a length prefix")
                length = P.decode_length(prefix)
                limit = self.server.max_packet if self.channels else P.HANDSHAKE_MAX_PACKET
                try:
                    P.check_length(length, limit)
                except P.PacketTooLarge as e:
                    self._fatal(P.E_TOO_LARGE, str(e))
                    break
                except FormatError as e:
                    self._fatal(P.E_PROTOCOL, str(e))
                    break
                head = None
                if length > IO_STEP:
                    # the first step comes before the budget is charged: a client that
                    # announces a large packet and trickles it holds no budget
                    self.rstep = time.monotonic()
                    self.rstate = "body"
                    head = P.read_exact(rfile, IO_STEP)
                # after the handshake, a request is charged a reserve for its answer
                self.reserve = REQUEST_RESERVE if self.channels else 0
                charge = length + self.reserve
                if not self._admit(charge):
                    break
                try:
                    body = self._read_body(rfile, length, head)
                except BaseException:
                    self._release(charge)  # a truncated packet is never answered
                    raise
                self.rstate = "dispatch"
                self.last_activity = time.monotonic()
                try:
                    pkt = P.decode_packet(body)
                except FormatError as e:
                    self._release(charge)
                    self._fatal(P.E_PROTOCOL, f"bad packet header: {e}")
                    break
                if not self._dispatch(pkt, charge):
                    break
        except (P.TruncatedPacket, OSError, ValueError) as e:
            # ValueError: the transport was closed under us by a forced stop
            log.info("%s: connection dropped: %s", self.peer, e)
        except Exception:  # pragma: no cover - a bug; keep serving the others
            log.exception("%s: reader failed", self.peer)
        finally:
            self._finish()

    def _read_body(self, rfile, length: int, head: bytes | None):
        """Read a packet body of `length` octets (of which `head`, if any, was read
        already), a step at a time, each step within the io timeout (enforced by
        the warden)."""
        self.rstep = time.monotonic()
        self.rstate = "body"
        if head is None:
            return P.read_exact(rfile, length)
        buf = bytearray(length)
        buf[: len(head)] = head
        mv = memoryview(buf)
        got = len(head)
        while got < length:
            self.rstep = time.monotonic()
            n = rfile.readinto(mv[got : got + IO_STEP])
            if not n:
                raise P.TruncatedPacket(f"stream ended after {got} of {length} octets of a packet")
            got += n
        return mv.toreadonly()

    def _release(self, charge: int) -> None:
        with self.cond:
            self.outstanding -= 1
            self._uncharge(charge)

    def _dispatch(self, pkt: P.Packet, length: int) -> bool:
        """Handle one admitted request; False to close the connection."""
        if pkt.flags & P.F_RESPONSE:
            self._answer_error(pkt, Reply(P.E_PROTOCOL, "a client sends requests"), length)
            return True
        if pkt.op == P.OP_HELLO:
            return self._hello(pkt, length)
        if pkt.op == P.OP_AUTH:
            return self._auth(pkt, length)
        export = self.channels.get(pkt.channel)
        if export is None:
            self._answer_error(
                pkt, Reply(P.E_CHANNEL, f"channel {pkt.channel} is not open"), length
            )
            return bool(self.channels)
        if pkt.op == P.OP_FLUSH:
            self._flush(pkt, export, length)
            return True
        if pkt.op not in HANDLERS:
            self._answer_error(pkt, Reply(P.E_UNKNOWN_OP, f"unknown op {pkt.op}"), length)
            return True
        try:
            need = request_need(pkt)
        except (Reply, FormatError) as e:
            self._answer_error(pkt, e, length)
            return True
        if need < self.reserve:  # give back the part of the reserve it cannot use
            with self.cond:
                self._uncharge(self.reserve - need)
            length -= self.reserve - need
        with self.cond:
            self.running += 1
        try:
            self.server._pool.submit(self._execute, pkt, export, length)
        except RuntimeError:  # the pool is shut down: the server is stopping
            with self.cond:
                self.running -= 1
            self._answer_error(pkt, Reply(P.E_SHUTDOWN, "the server is stopping"), length)
        return True

    def _execute(self, pkt: P.Packet, export: Export, length: int) -> None:
        try:
            flags, parts = HANDLERS[pkt.op](export, pkt.payload)
        except (VTError, Reply) as e:
            self._answer_error(pkt, e, length)
        except Exception as e:  # a bug in a store or here: answer, log, keep serving
            log.exception("%s: %s request failed", self.peer, P.OP_NAMES.get(pkt.op))
            self._answer_error(pkt, Reply(P.E_INTERNAL, f"internal error: {e}"), length)
        else:
            self._answer(pkt, flags, parts, length)
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    # -- handshake: who the peer is (docs/PROTOCOL.md §2a) -------------------------

    def _peer_kind(self) -> str:
        """What kind of peer this is ("tcp", "unix" or "stdio"): trust depends on it."""
        sock = getattr(self.t, "sock", None)
        if sock is None:
            return "stdio"
        return "unix" if sock.family == socket.AF_UNIX else "tcp"

    def _auth_state(self) -> ServerAuth:
        state = getattr(self, "_auth_obj", None)
        if state is None:
            state = self._auth_obj = ServerAuth(self.server.keys)
        return state

    def _peer_uid_problem(self) -> str | None:
        """On a UNIX socket, why the peer's uid (SO_PEERCRED) is not let in, or None."""
        if self._peer_kind() != "unix":
            return None
        uid = getattr(self, "_peer_uid", None)
        if uid is None:
            try:
                creds = self.t.sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
                )
                _pid, uid, _gid = struct.unpack("3i", creds)
            except OSError as e:
                return f"cannot tell the peer's uid: {e}"
            self._peer_uid = uid
        if uid in self.server.allowed_uids:
            return None
        return f"uid {uid} may not use this socket (allowed: the server's owner, root, --allow-uid)"

    def _auth(self, pkt: P.Packet, length: int) -> bool:
        """An AUTH request: answer it, or answer E_AUTH and close."""
        try:
            why = self._peer_uid_problem()
            if why is not None:
                raise AuthFailed(why)
            if self.channels:
                raise AuthFailed("AUTH comes before the first HELLO")
            answer = self._auth_state().handle(pkt.payload)
        except (AuthFailed, FormatError) as e:
            log.warning("%s: authentication refused: %s", self.peer, e)
            self._answer_error(pkt, Reply(P.E_AUTH, str(e)), length)
            return False
        if self._auth_state().done:
            log.info("%s: authenticated as key %r", self.peer, self._auth_state().key.id)
        self._answer(pkt, 0, [answer], length)
        return True

    def _peer_rights(self, export: Export) -> Export:
        """The export as this peer may use it; raises `Reply` if it may not at all."""
        kind = self._peer_kind()
        why = self._peer_uid_problem()
        if why is not None:
            raise Reply(P.E_AUTH, why)
        state = self._auth_state()
        if state.step and not state.done:
            raise Reply(P.E_AUTH, "authentication is not finished")
        if state.done:
            key = state.key
            rights = key.rights_for(export.name)
            if not rights:
                raise Reply(
                    P.E_DENIED,
                    f"key {key.id!r} has no rights on export {export.name or '(default)'}",
                )
            return export.for_peer(rights, f"key {key.id!r}")
        if kind == "tcp" and not self.server.insecure_no_auth:
            raise Reply(P.E_AUTH, "authentication required: this server needs a key (AUTH)")
        return export

    def _hello(self, pkt: P.Packet, length: int) -> bool:
        try:
            hello = P.decode_hello(pkt.payload)
            if self.server.stopping:
                raise Reply(P.E_SHUTDOWN, "the server is stopping")
            if pkt.channel in self.channels:
                raise Reply(P.E_CHANNEL, f"channel {pkt.channel} is already open")
            if len(self.channels) >= MAX_OPEN_CHANNELS:
                raise Reply(P.E_CHANNEL, f"at most {MAX_OPEN_CHANNELS} channels")
            if hello.version < 1:
                raise Reply(P.E_VERSION, f"no common version with {hello.version}", supported=[1])
            export = self.server.exports.get(hello.export)
            if export is None:
                raise Reply(
                    P.E_NO_EXPORT,
                    f"no export {hello.export or '(default)'!r}",
                    exports=sorted(self.server.exports),
                )
            if hello.hashclass is not None and hello.hashclass is not export.hashclass:
                raise Reply(
                    P.E_HASHCLASS,
                    f"export holds {export.hashclass.hashname} blocks,"
                    f" not {hello.hashclass.hashname}",
                    hashclass=export.hashclass.hashid,
                )
            export = self._peer_rights(export)
        except (VTError, Reply) as e:
            self._answer_error(pkt, e, length)
            # a stranger that fails its first handshake gets no second try
            return bool(self.channels)
        self.channels[pkt.channel] = export
        welcome = P.Welcome(
            version=min(hello.version, P.VERSION),
            hashclass=export.hashclass,
            readonly=export.readonly or "add" not in export.rights,
            archives=bool(export.archives()),
            max_packet=self.server.max_packet,
            max_outstanding=self.server.max_outstanding,
            name=export.store.name,
        )
        self._answer(pkt, 0, [P.encode_welcome(welcome)], length)
        return True

    def _flush(self, pkt: P.Packet, export: Export, length: int) -> None:
        with self.cond:
            while self.running and not self.dead:
                self.cond.wait()
        try:
            if not export.readonly:
                with export.lock:
                    export.store.flush()
        except VTError as e:
            self._answer_error(pkt, e, length)
        except Exception as e:
            log.exception("%s: flush failed", self.peer)
            self._answer_error(pkt, Reply(P.E_INTERNAL, f"internal error: {e}"), length)
        else:
            self._answer(pkt, 0, [], length)

    # -- ending -----------------------------------------------------------------

    def _finish(self) -> None:
        with self.cond:
            while (self.running or self.outstanding) and not self.dead:
                self.cond.wait()
        self.wq.put(None)
        self.writer.join()
        with self.cond:
            # a killed connection may leave answers unsent: give back every octet
            self.closed = True
            if self.buffered:
                self._uncharge(self.buffered)
        self.t.shutdown()
        try:
            self.t.close()
        except OSError:
            pass
        self.server._forget(self)
        self.done.set()
        log.info("%s: closed", self.peer)

    def stop(self) -> None:
        """Stop reading new requests; those admitted are answered, then it closes."""
        self.stopping = True
        with self.cond:
            self.cond.notify_all()  # a reader waiting for the budget gives up
        if isinstance(self.t, SocketTransport):
            self.t.shutdown_read()

    def wait_quiet(self, timeout: float | None) -> bool:
        """Wait until every admitted request is answered."""
        with self.cond:
            return self.cond.wait_for(lambda: self.dead or not self.outstanding, timeout)

    def kill(self) -> None:
        """Drop the connection now (answers not yet sent are discarded)."""
        with self.cond:
            self.dead = True
            self.cond.notify_all()
        self.t.shutdown()

    # -- timeouts (called by the warden; see vtstore.net.limits) ---------------

    def check_deadlines(self, now: float, pressure: bool = False) -> None:
        """Close this connection if it is past one of its deadlines.  Under
        `pressure` (others wait for the memory budget) a step of a packet or
        an answer gets `PRESSURE_GRACE` seconds, not the io timeout: a stalled
        connection must not keep its memory from those that move."""
        if self.timed_out or self.dead or isinstance(self.t, FdTransport):
            return  # stdio: the transport is trusted, and its reader cannot be woken
        lim = self.server.limits
        step = min(lim.io_timeout, PRESSURE_GRACE) if pressure else lim.io_timeout
        when = f"in {step:g}s" + (" while others wait for memory" if pressure else "")
        wstep, rstep = self.wstep, self.rstep
        if wstep is not None and now - wstep > step:
            why = f"the client does not read its answers ({IO_STEP // 1024} KiB not taken"
            return self._time_out(f"{why} {when})", stuck=True)
        if not self.channels:
            if now - self.born > lim.handshake_timeout:
                self._time_out(f"no handshake within {lim.handshake_timeout:g}s")
        elif self.rstate == "body" and rstep is not None and now - rstep > step:
            self._time_out(f"a packet arrives too slowly (not {IO_STEP // 1024} KiB {when})")
        elif (
            self.rstate == "idle"
            and not self.outstanding
            and now - self.last_activity > lim.idle_timeout
        ):
            self._time_out(f"idle for {lim.idle_timeout:g}s")

    def evict(self, why: str) -> None:
        """Close a connection still in its handshake to make room (`E_BUSY`)."""
        self._time_out(why, code=E_BUSY)

    def _time_out(self, why: str, stuck: bool = False, code: int = E_TIMEOUT) -> None:
        """Tell the client why (unless its answers are stuck) and close."""
        with self.cond:
            if self.timed_out:
                return  # the warden and an eviction may both come
            self.timed_out = True
        if stuck:
            log.warning("%s: %s; dropping the connection", self.peer, why)
            self.kill()
            return
        self._fatal(code, why)
        # the reader sees the end of the stream; what was admitted is answered
        shutdown_read = getattr(self.t, "shutdown_read", None)
        if shutdown_read is None:
            self.kill()
        else:
            shutdown_read()


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
        self._conns: set[_Connection] = set()
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

    def connections(self) -> list[_Connection]:
        """The open client connections (a snapshot)."""
        with self._lock:
            return list(self._conns)

    # -- connections ----------------------------------------------------------------

    def serve_transport(self, transport: Transport, peer: str, daemon: bool = False):
        """Serve one connection on its own threads; returns its handle (with a
        `done` event)."""
        conn = _Connection(self, transport, peer, daemon)
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

    def _forget(self, conn: _Connection) -> None:
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
