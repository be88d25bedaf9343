"""The block server's resource limits: one memory budget for the whole server, a
maximum number of connections, and the timeouts that drop idle, slow and stuck
clients (docs/SECURITY.md, "Bounded resources").

Memory.  Every octet a connection makes the server hold is charged to one budget
shared by all connections (`Limits.memory`): a request's body from the moment
its length is admitted until its answer is made, plus a reserve for what the
request makes while it runs (decoded objects, the answer); then the answer
itself until it is sent.  A reader that cannot be charged stops reading (the
client's sends block: back-pressure).  One connection holds at most
`per_connection` of it, so it cannot take the whole budget; the reserve is
reduced to what the request needs once its header is read, and requests whose
item counts would need more than the reserve are refused (`request_need`).

Time.  `Warden`, one thread per server, checks every connection about four times
per shortest timeout: a connection must finish its handshake within
`handshake_timeout` of connecting; after it, one idle longer than
`idle_timeout` (no request in progress, no complete packet) is closed; a packet
being received, or an answer being sent, must move `IO_STEP` octets (or reach
its end) every `io_timeout` seconds, or every `PRESSURE_GRACE` seconds while
others wait for the budget, so a slowloris client cannot hold its share for long
and one that does not read its answers is dropped.  Connections over
the limits get an error packet (`E_BUSY`) and are closed by the accept loop
without a thread of their own; the warden drains them briefly, so that closing
does not reset the connection before the client has read why.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import socket
import threading
import time
from dataclasses import dataclass

from vtstore.net import protocol as P
from vtstore.net.handlers import GET_ANSWER_BYTES, LIST_MAX, Reply

log = logging.getLogger("vtstore.net")

MIB = 1024 * 1024

#: Defaults (`vt serve --max-connections/--memory/--idle-timeout/...`).
DEFAULT_MAX_CONNECTIONS = 128
DEFAULT_MEMORY = 128 * MIB
DEFAULT_PER_CONNECTION = 32 * MIB
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IO_TIMEOUT = 30.0

#: A packet being read, or an answer being written, must move this many octets
#: (or reach its end) within each `io_timeout`.
IO_STEP = 64 * 1024
#: While readers wait for the budget, a step of a packet or an answer that has
#: not moved for this long (instead of `io_timeout`) drops its connection.
PRESSURE_GRACE = 2.0
#: Requests a connection may have unanswered before its handshake is done.
HANDSHAKE_OUTSTANDING = 4
#: Error codes of the limits (numbers chosen clear of protocol.py's; protocol.py
#: should adopt them).
E_BUSY = P.E_BUSY  # too many connections; try again later
E_TIMEOUT = P.E_TIMEOUT  # idle, too slow, or no handshake in time

#: Most items one request may carry, and the octets each one costs the server
#: while it runs (decoded objects and its part of the answer; measured: a
#: memoryview 192, a hashcode 96, an answer entry 33).
MAX_ADD_BLOCKS = 4096
MAX_GET_HASHCODES = 4096
MAX_CONTAINS_HASHCODES = 8192
ADD_ITEM_COST = 384
HASHCODE_COST = 160
#: What any other request may make (archive lines, a completeness answer).
SMALL_NEED = 64 * 1024
_NEEDS = {
    P.OP_ADD: MAX_ADD_BLOCKS * ADD_ITEM_COST,
    P.OP_GET: GET_ANSWER_BYTES + IO_STEP + MAX_GET_HASHCODES * HASHCODE_COST,
    P.OP_CONTAINS: MAX_CONTAINS_HASHCODES * HASHCODE_COST,
    P.OP_HASHCODES: (LIST_MAX + 1) * HASHCODE_COST,
}
#: Charged for every request after the handshake, on top of its body, until its
#: header shows how much of it the request needs.
REQUEST_RESERVE = max(SMALL_NEED, *_NEEDS.values())

#: How long a refused connection is drained before it is closed.
REFUSE_LINGER = 2.0
#: Most refused connections drained at once (beyond, they are closed at once).
MAX_LINGERING = 256


@dataclass(frozen=True)
class Limits:
    """The resource limits of one server; see the module docstring."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    memory: int = DEFAULT_MEMORY
    per_connection: int = DEFAULT_PER_CONNECTION
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    io_timeout: float = DEFAULT_IO_TIMEOUT

    @property
    def max_handshaking(self) -> int:
        """Most connections still in their handshake: half the connections, so
        strangers cannot take every place from clients that have a key."""
        return max(1, self.max_connections // 2)

    def checked(self, max_packet: int) -> Limits:
        """These limits, validated for packets of up to `max_packet` octets, with
        the per-connection share fitted between one request and the budget;
        `ValueError` says what is wrong."""
        largest = max_packet + REQUEST_RESERVE
        if self.max_connections < 1:
            raise ValueError("the maximum number of connections must be at least 1")
        if self.memory < 2 * largest:
            raise ValueError(
                f"the memory budget must be at least {_mib(2 * largest)}"
                f" (two requests of the largest packet, {_mib(max_packet)}, with their answers)"
            )
        for name in ("idle_timeout", "handshake_timeout", "io_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', ' ')} must be more than 0 seconds")
        share = min(max(self.per_connection, largest), self.memory)
        return Limits(
            self.max_connections,
            self.memory,
            share,
            self.idle_timeout,
            self.handshake_timeout,
            self.io_timeout,
        )


#: Allocations from this size up get their own mapping, given back when freed.
MMAP_THRESHOLD = 256 * 1024
_malloc_bounded = False


def bound_malloc() -> None:
    """Make glibc give large freed blocks back to the system at once.

    By default glibc raises its mmap threshold to the size of a freed mapping
    (up to 32 MiB), after which packet bodies of up to 16 MiB come from the heap
    arenas of the threads and stay in the RSS once freed: under a churn of
    stalled connections the server grew to 500 MB with a 128 MiB budget.  A
    fixed threshold keeps every body its own mapping.  Process-wide; done once."""
    global _malloc_bounded
    if _malloc_bounded or platform.libc_ver()[0] != "glibc":
        return
    _malloc_bounded = True
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc after all
        pass


def _mib(n: int) -> str:
    return f"{-(-n // MIB)} MiB"  # rounded up: a budget of that size is enough


def request_need(pkt: P.Packet) -> int:
    """The octets a request may make the server hold while it runs (at most
    `REQUEST_RESERVE`); `Reply(E_TOO_LARGE)` for a request with too many items,
    `FormatError` if its count is unreadable."""
    op = pkt.op
    if op == P.OP_ADD:
        return _counted(pkt, MAX_ADD_BLOCKS, "blocks", ADD_ITEM_COST, 1)
    if op == P.OP_GET:
        base = GET_ANSWER_BYTES + IO_STEP
        return base + _counted(pkt, MAX_GET_HASHCODES, "hashcodes", HASHCODE_COST, 21)
    if op == P.OP_CONTAINS:
        return _counted(pkt, MAX_CONTAINS_HASHCODES, "hashcodes", HASHCODE_COST, 21)
    return _NEEDS.get(op, SMALL_NEED)


def _counted(pkt: P.Packet, most: int, what: str, cost: int, min_size: int) -> int:
    from vtstore.codec import Reader

    r = Reader(pkt.payload)
    count = r.varint()
    if count > r.remaining // min_size:
        return 0  # more items than the payload can hold: the handler says it is malformed
    if count > most:
        name = P.OP_NAMES.get(pkt.op, pkt.op)
        raise Reply(P.E_TOO_LARGE, f"at most {most} {what} in one {name} request, not {count}")
    return count * cost


def refusal(message: str) -> bytes:
    """The connection-level error packet (op 0, tag 0) that refuses a connection."""
    flags = P.F_RESPONSE | P.F_ERROR | P.F_JSON
    return P.encode_packet(0, flags, 0, 0, P.encode_error(E_BUSY, message))


class Warden:
    """The thread that enforces the timeouts and drains refused connections."""

    def __init__(self, server):
        self.server = server
        lim = server.limits
        shortest = min(lim.idle_timeout, lim.handshake_timeout, lim.io_timeout)
        self.tick = max(0.02, min(0.5, shortest / 4))
        self.lock = threading.Lock()
        self.refused: dict[socket.socket, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vt-serve-warden", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        with self.lock:
            for s in self.refused:
                s.close()
            self.refused.clear()

    def refuse(self, sock: socket.socket, peer: str, message: str) -> None:
        """Send `message` as an `E_BUSY` error and close `sock` (after a drain)."""
        log.warning("%s: refused: %s", peer, message)
        if getattr(sock, "tls_server_context", None) is not None:
            sock.close()  # a TLS client could not read a plain error packet
            return
        try:
            sock.setblocking(False)
            sock.send(refusal(message))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        with self.lock:
            if len(self.refused) >= MAX_LINGERING:
                sock.close()
                return
            self.refused[sock] = time.monotonic() + REFUSE_LINGER

    def _run(self) -> None:
        while not self.stopping.wait(self.tick):
            now = time.monotonic()
            # pressure: a reader waits for the budget, or did a moment ago (a busy
            # client's waits are short but many)
            srv = self.server
            pressure = srv._waiting > 0 or now - srv._pressure_at < PRESSURE_GRACE
            for conn in self.server.connections():
                try:
                    conn.check_deadlines(now, pressure)
                except Exception:  # pragma: no cover - a bug; keep watching the others
                    log.exception("%s: checking its deadlines failed", conn.peer)
            self._drain(now)

    def _drain(self, now: float) -> None:
        with self.lock:
            items = list(self.refused.items())
        for sock, deadline in items:
            done = now > deadline
            try:
                while not done:
                    if not sock.recv(65536):
                        done = True
            except BlockingIOError:
                pass
            except OSError:
                done = True
            if done:
                with self.lock:
                    self.refused.pop(sock, None)
                sock.close()


def limits_from_options(args, max_packet: int = P.DEFAULT_MAX_PACKET) -> Limits:
    """The `Limits` that `vt serve --max-connections/--memory/--idle-timeout/
    --handshake-timeout/--io-timeout` ask for (None: the default); `ConfigError`
    if they cannot work."""
    from vtstore.errors import ConfigError
    from vtstore.stores.spec import parse_size

    try:
        memory = DEFAULT_MEMORY if args.memory is None else parse_size(args.memory)
        lim = Limits(
            max_connections=_given(args.max_connections, DEFAULT_MAX_CONNECTIONS),
            memory=memory,
            per_connection=max(DEFAULT_PER_CONNECTION, memory // 4),
            idle_timeout=_given(args.idle_timeout, DEFAULT_IDLE_TIMEOUT),
            handshake_timeout=_given(args.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT),
            io_timeout=_given(args.io_timeout, DEFAULT_IO_TIMEOUT),
        )
        return lim.checked(max_packet)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _given(value, default):
    return default if value is None else value
