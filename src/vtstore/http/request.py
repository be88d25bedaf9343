"""One HTTP request of `vt httpd`, over ASGI: its path split safely, its
headers, its body read within the server's limits, and the ways to answer.

The path is split on `/` *before* percent-decoding (ASGI's `path` decodes
`%2F` into a slash), each segment is decoded on its own and a segment holding a
NUL is refused, so an encoded slash can never become a path separator and
`..` is only ever a whole segment (which the tree lookups refuse).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from urllib.parse import parse_qs, unquote_to_bytes

from vtstore.http.content import PIECE

#: The ASGI scope extension under which a response may write its body to the
#: socket itself (`vtstore.http.server.DirectSend`).
DIRECT = "vt.direct"

#: Pieces at least this large are sent on the socket itself (`DirectSend`)
#: when the server offers it; `VT_HTTPD_DIRECT=0` never does (to measure it).
DIRECT_MIN = 256 << 10 if os.environ.get("VT_HTTPD_DIRECT") != "0" else 1 << 62


class HTTPError(Exception):
    """Answer with `status` and a one-line `message` (text, or JSON on request)."""

    def __init__(self, status: int, message: str, headers: list | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def split_path(raw: bytes) -> list[str]:
    """The decoded segments of a raw request path; `HTTPError(400)` for a path
    that is not absolute, not UTF-8, or has a NUL in a segment."""
    if not raw.startswith(b"/"):
        raise HTTPError(400, "the request target must be an absolute path")
    if b"%" not in raw and b"\0" not in raw:  # the common case: nothing encoded
        try:
            return raw[1:].decode("utf-8").split("/")
        except UnicodeDecodeError:
            raise HTTPError(400, "a path segment is not UTF-8") from None
    out = []
    for seg in raw[1:].split(b"/"):
        try:
            text = unquote_to_bytes(seg).decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "a path segment is not UTF-8") from None
        if "\0" in text:
            raise HTTPError(400, "a path segment holds a NUL")
        out.append(text)
    return out


class Request:
    """One request and its answer channel."""

    __slots__ = (
        "app",
        "scope",
        "receive",
        "_send",
        "method",
        "_headers",
        "raw_path",
        "query",
        "_qs",
        "started",
        "status",
        "sent",
    )

    def __init__(self, app, scope, receive, send):
        self.app = app
        self.scope = scope
        self.receive = receive
        self._send = send
        self.method = scope["method"]
        self._headers = scope["headers"]  # decoded only for the few looked up
        self.raw_path = scope.get("raw_path") or scope["path"].encode()
        qs = self._qs = scope.get("query_string", b"")
        if qs:
            parsed = parse_qs(qs.decode("latin-1"), keep_blank_values=True, max_num_fields=32)
            self.query = {k: v[-1] for k, v in parsed.items()}
        else:
            self.query = {}
        self.started = False
        self.status = 0
        self.sent = 0
        size = sum(len(k) + len(v) + 4 for k, v in self._headers)
        if size > app.limits.max_header:
            raise HTTPError(431, f"request headers over {app.limits.max_header} octets")

    @property
    def target(self) -> str:
        """The request target as sent: the raw path and the query."""
        qs = self._qs
        return self.raw_path.decode("latin-1") + ("?" + qs.decode("latin-1") if qs else "")

    def header(self, name: str) -> str | None:
        """A request header's value (the last one, if repeated), or None."""
        key = name.encode()
        found = None
        for k, v in self._headers:
            if k == key:
                found = v
        return None if found is None else found.decode("latin-1")

    def wants_json(self) -> bool:
        """Whether the client asked for JSON (`Accept: application/json` or `?json`)."""
        return "json" in self.query or "application/json" in (self.header("accept") or "")

    async def body(self, limit: int) -> bytes:
        """The whole request body, at most `limit` octets (413 beyond), each part
        arriving within the server's io timeout (408 otherwise)."""
        declared = self.header("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise HTTPError(400, "a bad Content-Length")
            if int(declared) > limit:
                raise HTTPError(413, f"the request body is over {limit} octets")
        parts = []
        got = 0
        timeout = self.app.limits.io_timeout
        while True:
            try:
                msg = await asyncio.wait_for(self.receive(), timeout)
            except TimeoutError:
                raise HTTPError(408, "the request body came too slowly") from None
            if msg["type"] == "http.disconnect":
                raise HTTPError(400, "the client went away")
            chunk = msg.get("body", b"")
            got += len(chunk)
            if got > limit:
                raise HTTPError(413, f"the request body is over {limit} octets")
            parts.append(chunk)
            if not msg.get("more_body"):
                return b"".join(parts)

    # -- answering ----------------------------------------------------------------------

    async def start(self, status: int, headers: list) -> None:
        """Send the status line and headers."""
        self.started = True
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send_body(self, data, more: bool = True) -> None:
        """Send part of the body (not for HEAD)."""
        self.sent += len(data)
        await self._send({"type": "http.response.body", "body": bytes(data), "more_body": more})

    async def finish(self) -> None:
        """End the body."""
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def stream(self, pieces) -> None:
        """Send what the iterator `pieces` yields, read in the server's worker
        threads about `PIECE` octets per hop (the store is never read on the
        loop), the next piece read while this one is sent."""
        it = iter(pieces)

        def pull():
            out = []
            n = 0
            for p in it:
                out.append(p)
                n += len(p)
                if n >= PIECE:
                    break
            return out[0] if len(out) == 1 else b"".join(out)

        run, lock = self.app.run, self.app.stream_lock
        direct = None
        if self.method != "HEAD":
            direct = self.scope.get("extensions", {}).get(DIRECT)
        ahead = asyncio.ensure_future(run(lock, pull))
        try:
            while True:
                data = await ahead
                if not data:
                    return
                ahead = asyncio.ensure_future(run(lock, pull))
                if direct is not None and len(data) >= DIRECT_MIN and await direct.begin():
                    self.sent += len(data)
                    await direct.sendall(data)
                else:
                    if direct is not None:
                        direct.end()
                    await self.send_body(data)
        except BaseException:
            if direct is not None:
                direct.abort()  # a body cut short: the client must see it cut
            raise
        finally:
            if direct is not None:
                direct.end()
            if not ahead.done():  # the client went away: let the read finish, unread
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead

    async def respond_parts(self, status: int, headers: list, parts: list) -> None:
        """Send a whole answer made of `parts` (not joined first: large ones go
        out on the socket itself when the server offers it, `DirectSend`)."""
        headers = [*headers, (b"content-length", str(sum(map(len, parts))).encode())]
        await self.start(status, headers)
        if self.method == "HEAD":
            return await self.finish()
        direct = self.scope.get("extensions", {}).get(DIRECT)
        if direct is None or sum(map(len, parts)) < DIRECT_MIN or not await direct.begin():
            for p in parts:
                await self.send_body(p)
            return await self.finish()
        try:
            for p in parts:
                self.sent += len(p)
                await direct.sendall(p)
        except BaseException:
            direct.abort()
            raise
        direct.end()
        await self.finish()

    async def respond(
        self, status: int, headers: list | None = None, body=b"", ctype: str | None = None
    ) -> None:
        """Send a whole answer (the body is left out for HEAD)."""
        headers = list(headers or [])
        if ctype:
            headers.append((b"content-type", ctype.encode()))
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        await self.start(status, headers)
        self.sent += len(body)
        await self._send(
            {
                "type": "http.response.body",
                "body": b"" if self.method == "HEAD" else bytes(body),
                "more_body": False,
            }
        )

    async def json(self, obj, status: int = 200, headers: list | None = None) -> None:
        """Answer with a JSON document."""
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        await self.respond(status, headers, body, "application/json")

    async def html(self, text: str, status: int = 200, headers: list | None = None) -> None:
        """Answer with an HTML page."""
        await self.respond(status, headers, text.encode("utf-8"), "text/html; charset=utf-8")
