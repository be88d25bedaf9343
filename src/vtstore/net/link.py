"""One client connection to a block server: the handshake, the reader thread that
matches answers to requests by tag, and the window of requests in flight.

`StreamStore` (vtstore.net.client) owns one `Link` at a time and replaces it when
it dies.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from vtstore.errors import FormatError, StoreError, VTError
from vtstore.net import protocol as P
from vtstore.net.transport import CommandTransport, Transport

#: Most requests one connection has in flight (also bounded by the server's limit).
MAX_WINDOW = 32


class LinkLost(Exception):
    """The connection died; a request on it may or may not have been done."""


class Link:
    """One connection: its transport, its reader thread, the requests in flight."""

    def __init__(self, transport: Transport):
        self.t = transport
        self.futures: dict[int, Future] = {}
        self.flock = threading.Lock()
        self.send_lock = threading.Lock()
        self.next_tag = 1
        self.dead: BaseException | None = None
        self.closing = False
        self.welcome: P.Welcome | None = None
        self.window = threading.Semaphore(1)
        self.max_packet = P.DEFAULT_MAX_PACKET
        self.reader: threading.Thread | None = None

    def _exchange(self, op: int, tag: int, payload: bytes) -> P.Packet:
        """One request and its answer, before the reader thread runs."""
        try:
            self.t.send(P.encode_packet(op, 0, 0, tag, payload))
            pkt = P.read_packet(self.t.rfile, P.DEFAULT_MAX_PACKET)
        except OSError as e:
            raise ConnectionError(f"{self.t.description}: lost during the handshake: {e}") from None
        if pkt is None:
            raise ConnectionError(f"{self.t.description}: closed during the handshake")
        if pkt.is_error:
            raise P.error_for(*P.decode_error(pkt.payload))
        if pkt.op != op or pkt.tag != tag:
            raise FormatError(f"{self.t.description}: unexpected answer to the handshake")
        return pkt

    def authenticate(self, key) -> None:
        """The AUTH exchange (docs/PROTOCOL.md §2a) with `key`; raises `AuthError`
        if the server refuses us or cannot prove it holds the key too."""
        from vtstore.security.auth import ClientAuth

        auth = ClientAuth(key)
        nonce = self._exchange(P.OP_AUTH, 1, auth.start())
        answer = self._exchange(P.OP_AUTH, 2, auth.respond(nonce.payload))
        if not auth.verify(answer.payload):
            raise P.AuthError(
                P.E_AUTH,
                {"message": f"{self.t.description} does not hold key {key.id!r}: not the server"},
            )

    def handshake(self, hashclass, export: str, timeout: float, key=None) -> P.Welcome:
        """Authenticate with `key` (if given), then send HELLO on channel 0 and
        read the answer, before the reader starts."""
        sock = getattr(self.t, "sock", None)
        if sock is not None:
            sock.settimeout(timeout)
        if key is not None:
            self.authenticate(key)
        pkt = self._exchange(P.OP_HELLO, 3, P.encode_hello(P.VERSION, hashclass, export))
        self.next_tag = 4
        w = P.decode_welcome(pkt.payload)
        if sock is not None:
            sock.settimeout(None)
        self.welcome = w
        self.max_packet = w.max_packet
        self.window = threading.Semaphore(min(w.max_outstanding, MAX_WINDOW))
        self.reader = threading.Thread(
            target=self._read_loop, name=f"vt-client-read {self.t.description}", daemon=True
        )
        self.reader.start()
        return w

    def submit(self, op: int, parts, flags: int = 0) -> Future:
        """Send one request; its answer (a `Packet`) or error arrives in the future."""
        while not self.window.acquire(timeout=0.2):
            if self.dead is not None:
                raise LinkLost(self.dead)
        data = None
        fut: Future = Future()
        with self.flock:
            if self.dead is not None:
                self.window.release()
                raise LinkLost(self.dead)
            tag = self.next_tag
            self.next_tag += 1
            data = P.encode_packet(op, flags, 0, tag, *parts)
            if len(data) - 4 > self.max_packet:
                self.window.release()
                raise StoreError(
                    f"{self.t.description}: a {P.OP_NAMES.get(op, op)} request of"
                    f" {len(data) - 4} octets exceeds the server's limit of {self.max_packet}"
                )
            self.futures[tag] = fut
        try:
            with self.send_lock:
                self.t.send(data)
        except (OSError, ValueError) as e:
            self.fail(ConnectionError(f"{self.t.description}: send failed: {e}"))
        return fut

    def _read_loop(self) -> None:
        limit = max(self.max_packet, P.DEFAULT_MAX_PACKET)
        try:
            while True:
                pkt = P.read_packet(self.t.rfile, limit)
                if pkt is None:
                    raise ConnectionError(f"{self.t.description}: the server closed the connection")
                if pkt.tag == 0 and pkt.is_error:
                    raise P.RemoteError(*P.decode_error(pkt.payload))
                with self.flock:
                    fut = self.futures.pop(pkt.tag, None)
                if fut is None:
                    raise FormatError(f"{self.t.description}: answer to unknown tag {pkt.tag}")
                self.window.release()
                if pkt.is_error:
                    fut.set_exception(P.error_for(*P.decode_error(pkt.payload)))
                else:
                    fut.set_result(pkt)
        except BaseException as e:  # noqa: BLE001 - any failure ends this link
            if isinstance(e, OSError | ValueError) and not isinstance(e, VTError):
                e = ConnectionError(f"{self.t.description}: connection lost: {e}")
            self.fail(e)

    def fail(self, exc: BaseException) -> None:
        """Mark the link dead and fail every request in flight with `LinkLost`."""
        with self.flock:
            if self.dead is None:
                self.dead = exc
            futs = list(self.futures.values())
            self.futures.clear()
        for f in futs:
            if not f.done():
                f.set_exception(LinkLost(self.dead))
        if not self.closing:
            self.t.shutdown()

    def close(self) -> None:
        """End the connection politely (a command gets EOF and may exit on its own)."""
        self.closing = True
        if isinstance(self.t, CommandTransport):
            self.t.end_input()
        self.t.shutdown()
        self._reap()

    def abandon(self) -> None:
        """Drop a connection that has failed or is no longer wanted."""
        self.closing = True
        self.t.shutdown()
        self._reap()

    def _reap(self) -> None:
        if self.reader is not None and self.reader is not threading.current_thread():
            self.reader.join(10)
        try:
            self.t.close()
        except OSError:
            pass
        self.fail(ConnectionError(f"{self.t.description}: closed"))
