"""One client connection of the block server: its reader and writer threads,
the handshake (AUTH, HELLO), admission under the server's memory budget, and
the dispatch of requests to the server's worker pool.

`vtstore.net.server.BlockServer` makes one `Connection` per accepted client;
see its module docstring for the threads, back-pressure and ordering rules.
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from vtstore.errors import FormatError, VTError
from vtstore.net import protocol as P
from vtstore.net.handlers import HANDLERS, Export, Reply, error_payload
from vtstore.net.limits import (
    E_BUSY,
    E_TIMEOUT,
    HANDSHAKE_OUTSTANDING,
    IO_STEP,
    PRESSURE_GRACE,
    REQUEST_RESERVE,
    request_need,
)
from vtstore.net.transport import FdTransport, SocketTransport, Transport
from vtstore.security.auth import AuthFailed, ServerAuth

if TYPE_CHECKING:
    from vtstore.net.server import BlockServer

log = logging.getLogger("vtstore.net")

#: Most channels open at once on one connection.
MAX_OPEN_CHANNELS = 16


class Connection:
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
