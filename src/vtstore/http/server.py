"""Running `HTTPApp` under Uvicorn: in the foreground (`vt httpd`) or in a
thread of its own (tests, benchmarks), on a TCP port or a UNIX socket.

Uvicorn uses httptools and uvloop when they are installed (they roughly double
the small-request rate over h11 and asyncio's loop; docs/PERFORMANCE.md).  The
limits of `HTTPLimits` map to Uvicorn's: `max_connections` to
`limit_concurrency` (more get 503), `idle_timeout` to the keep-alive timeout,
`max_header` to h11's incomplete-event limit; body size, the memory budget and
the io timeout for request bodies are the app's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import threading

from vtstore.errors import ConfigError
from vtstore.http.app import HTTPApp
from vtstore.http.request import DIRECT


def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def bind(address: str) -> tuple[socket.socket, str]:
    """A listening socket for `HOST:PORT` (port 0: a free one), `[V6]:PORT` or
    `/path.sock` (mode 0600), and the base URL clients use (`http://...` or
    `http+unix://...`)."""
    if address.startswith(("/", "./", "unix:")):
        path = address.removeprefix("unix:")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        s.listen(1024)
        return s, f"http+unix://{path}"
    from vtstore.net.transport import parse_hostport

    try:
        host, port = parse_hostport(address, default_host="127.0.0.1")
    except Exception:
        raise ConfigError(f"not an address: {address!r} (say HOST:PORT or /path.sock)") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise ConfigError(f"cannot listen on {address}: {e.strerror}") from None
    s.listen(1024)
    port = s.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return s, f"http://{shown}:{port}/"


#: Writes up to this size wait for the end of the loop callback to go out
#: together (see `_Corked`); larger ones go out at once.
CORK_MAX = 64 * 1024


class _Corked:
    """A transport whose small writes made in one event-loop callback go out in
    one `write`: Uvicorn writes a response's status and headers and then its
    body separately, two `send` system calls (and two TCP segments) for every
    small block; corked they are one (docs/PERFORMANCE.md, "HTTP").  Closing
    sends what is held first; everything else is the transport's own."""

    __slots__ = ("_t", "_loop", "_buf", "_size")

    def __init__(self, transport, loop):
        self._t = transport
        self._loop = loop
        self._buf: list | None = None
        self._size = 0

    def write(self, data) -> None:
        if self._buf is None:
            if len(data) >= CORK_MAX:
                self._t.write(data)
                return
            self._buf = [data]
            self._size = len(data)
            self._loop.call_soon(self._flush)
            return
        self._buf.append(data)
        self._size += len(data)
        if self._size >= CORK_MAX:
            self._flush()

    def _flush(self) -> None:
        buf, self._buf = self._buf, None
        if buf and not self._t.is_closing():
            self._t.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def close(self) -> None:
        self._flush()
        self._t.close()

    def __getattr__(self, name):
        return getattr(self._t, name)


class DirectSend:
    """A response body written to the connection's socket by the app itself,
    bypassing the transport: the `DIRECT` scope extension of a plain (not TLS)
    HTTP/1.1 connection.

    Why: uvloop's transport writes a large body in its own `send` call made
    while holding the GIL, so the thread reading the next piece of a file waits
    for every send; a Python socket's `send` releases it, and the read and the
    send of a large file overlap on the two cores (docs/PERFORMANCE.md, "HTTP").

    `begin()` flushes what the transport holds (the status line and headers),
    pauses reading (a pipelined request waits, as Uvicorn makes it wait anyway)
    and returns a non-blocking socket on a duplicate of the connection's
    descriptor; `sendall()` sends on it from the event loop (`loop.sock_sendall`:
    the copy into the kernel runs without the GIL; a slow client is waited for
    without a thread, at most `timeout` seconds a piece) and counts what went
    out against the response's Content-Length; `end()` gives the connection back
    to the transport; `abort()` closes the connection (the client sees a cut
    body), for a body that cannot be finished.
    """

    def __init__(self, protocol, cycle, timeout: float):
        self._proto = protocol
        self._cycle = cycle
        self._timeout = timeout
        self._sock: socket.socket | None = None

    async def begin(self) -> bool:
        """Take the connection over; False if it is closing (nothing to send to)."""
        if self._sock is not None:
            return True
        t = self._proto.transport
        if t.is_closing() or self._cycle.disconnected:
            return False
        if isinstance(t, _Corked):
            t._flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while t.get_write_buffer_size():  # the headers, rarely held back
            if t.is_closing():
                return False
            if loop.time() > deadline:
                self.abort()
                raise ConnectionError("the client stopped reading")
            await asyncio.sleep(0.001)
        t.pause_reading()
        raw = t.get_extra_info("socket")
        s = socket.socket(fileno=os.dup(raw.fileno()))
        s.setblocking(False)
        self._sock = s
        return True

    async def sendall(self, data) -> None:
        """Send `data` (a part of the body) on the socket taken over."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_sendall(self._sock, data), self._timeout)
        except TimeoutError:
            self.abort()
            raise ConnectionError("the client stopped reading") from None
        except OSError:
            self.abort()
            raise
        self._cycle.expected_content_length -= len(data)

    def end(self) -> None:
        """Give the connection back to the transport."""
        s, self._sock = self._sock, None
        if s is None:
            return
        s.close()
        t = self._proto.transport
        if not t.is_closing() and not self._proto.flow.read_paused:
            t.resume_reading()

    def abort(self) -> None:
        """Close the connection now: what was sent stays a cut body."""
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
        self._cycle.disconnected = True
        self._proto.transport.close()


def _http_protocol(io_timeout: float = 30.0):
    """httptools (corked writes: `_Corked`; bodies written by the app:
    `DirectSend`) when installed, else h11."""
    if not _have("httptools"):
        return _plain_http()
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class CorkedHttpTools(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(_Corked(transport, self.loop))
            self._direct = transport.get_extra_info("sslcontext") is None and (
                transport.get_extra_info("socket") is not None
            )

        def on_headers_complete(self) -> None:
            scope = self.scope
            super().on_headers_complete()
            cycle = self.cycle
            if self._direct and cycle is not None and cycle.scope is scope:
                ext = scope.setdefault("extensions", {})
                ext[DIRECT] = DirectSend(self, cycle, io_timeout)

    return CorkedHttpTools


def _plain_http() -> str:
    return "httptools" if _have("httptools") else "h11"


def uvicorn_config(app: HTTPApp, tls_cert: str | None = None, tls_key: str | None = None):
    """The Uvicorn configuration for `app` and its limits."""
    import uvicorn

    lim = app.limits
    return uvicorn.Config(
        app,
        loop="uvloop" if _have("uvloop") else "asyncio",
        # VT_HTTPD_CORK=0: Uvicorn's own protocol (to measure what corking gives)
        http=_http_protocol(lim.io_timeout)
        if os.environ.get("VT_HTTPD_CORK") != "0"
        else _plain_http(),
        lifespan="off",
        log_level="warning",
        access_log=False,
        limit_concurrency=lim.max_connections,
        timeout_keep_alive=max(1, int(lim.idle_timeout)),
        h11_max_incomplete_event_size=lim.max_header,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        server_header=False,
        date_header=True,
    )


class BackgroundServer:
    """`HTTPApp` served in a thread; `start()` returns the base URL, `stop()` ends it."""

    def __init__(self, app: HTTPApp, address: str = "127.0.0.1:0", **tls):
        self.app = app
        self.address = address
        self.tls = tls
        self.url: str | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> str:
        import uvicorn

        sock, url = bind(self.address)
        if self.tls.get("tls_cert"):
            url = url.replace("http://", "https://")
        self.url = url
        self._server = uvicorn.Server(uvicorn_config(self.app, **self.tls))

        def run():
            if _have("uvloop"):
                import uvloop

                uvloop.run(self._server.serve(sockets=[sock]))
            else:
                asyncio.run(self._server.serve(sockets=[sock]))
            sock.close()

        self._thread = threading.Thread(target=run, name="vt-httpd", daemon=True)
        self._thread.start()
        ready = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self._server.started or not self._thread.is_alive():
                ready.set()
                break
            ready.wait(0.01)
        if not self._server.started:
            raise RuntimeError("vt httpd did not start")
        return url

    def stop(self) -> None:
        """Stop serving (answers in progress finish) and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
        self.app.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def serve_foreground(app: HTTPApp, sock: socket.socket, **tls) -> None:
    """Serve until SIGINT or SIGTERM: answers in progress finish, then return."""
    import signal

    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, **tls))
    # Uvicorn shuts down gracefully on a signal and then raises it again for the
    # handlers it found: ours do nothing, so a stop by signal exits 0 (as vt serve)
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        app.close()
