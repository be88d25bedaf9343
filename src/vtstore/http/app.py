"""`vt httpd`'s ASGI application: blocks, trees and archives over HTTP.

Routes (docs/HTTP.md), under `/` for the default store and `/x/NAME/` for a
named export:

- `GET|HEAD /h/HASHNAME:HEX` and `/h/HEX.HASHNAME`: a raw block (`PUT` with
  the `add` right stores one); `/i/HASHCODE` or `/i/I{...}`: the whole data of
  an indirect block, streamed;
- `/d/DIRENT-REF/path...`: a directory (HTML, or JSON on `Accept:
  application/json` or `?json`), `?tar` a streamed tar of it; a file's content
  with its Content-Type, `?download` as an attachment, `?view` a preview page;
- `/a/` the archives, `/a/NAME/` a history, `/a/NAME/SEL/path...` a state
  browsed like `/d/` (SEL: `latest`, `-N`, `N`, a state ID prefix, a date),
  `/a/NAME/diff?from=SEL&to=SEL` what changed;
- `/b/...`: the block API of the HTTP client store (`vtstore.http.client`).

Why a hand-written ASGI app and not Starlette: the hot path is one tiny GET
per block, and the routing here is a split and a dict lookup.  Driving both
apps directly (no network) with the same `/h/` request, this one answered
1.1-1.7x as many per second as the route written with Starlette (a loaded
2-core machine; docs/HTTP.md, docs/PERFORMANCE.md "HTTP"), while also doing
ranges, conditional requests and auth; nothing else Starlette offers is used.
Uvicorn (with httptools and uvloop when installed) is the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vtstore.errors import (
    CorruptBlockError,
    FormatError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
    VTError,
)
from vtstore.hashes import HashCode, parse_hashcode, parse_hashcode_filename
from vtstore.http import pages
from vtstore.http.auth import AuthRefused, Verifier
from vtstore.http.buffers import Buffers
from vtstore.http.content import IMMUTABLE, Content, send_content
from vtstore.http.request import HTTPError, Request, split_path
from vtstore.net.handlers import Export

log = logging.getLogger("vtstore.http")

MIB = 1 << 20
#: Most hashcodes one `/b/get` or `/b/contains` request may name.
MAX_BATCH = 4096
#: Most hashcodes one `/b/hashcodes` page lists.
LIST_MAX = 16384
#: A missing block in a `/b/get` answer.
MISSING = 0xFFFFFFFF


@dataclass(frozen=True)
class HTTPLimits:
    """The resource bounds of `vt httpd` (docs/HTTP.md, "Limits")."""

    max_connections: int = 128
    max_body: int = 64 * MIB
    memory: int = 256 * MIB
    max_header: int = 16 * 1024
    idle_timeout: float = 60.0
    io_timeout: float = 30.0


class Budget:
    """One memory budget for the request bodies the server holds at once: a
    body is charged before it is read, and waits (at most the io timeout) for
    room, so many large uploads at once queue instead of exhausting memory."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._cond: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def charge(self, n: int, timeout: float):
        if self._cond is None:
            self._cond = asyncio.Condition()
        n = min(n, self.total)
        async with self._cond:
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self.used + n <= self.total), timeout
                )
            except TimeoutError:
                raise HTTPError(503, "the server is busy (memory budget); try again") from None
            self.used += n
        try:
            yield
        finally:
            async with self._cond:
                self.used -= n
                self._cond.notify_all()


def hashcode_of(text: str) -> HashCode:
    """`HASHNAME:HEX` or `HEX.HASHNAME` -> a hashcode; `FormatError` otherwise."""
    if len(text) > 200:
        raise FormatError("a hashcode that long is none")
    if ":" in text:
        return parse_hashcode(text)
    return parse_hashcode_filename(text)


def etag_of(h: HashCode) -> str:
    """The strong ETag of content named by hashcode `h`."""
    return f'"{h.hashname}:{h.hex_digest}"'


class HTTPApp:
    """The ASGI application; see the module docstring.

    `exports` maps export names ("" the default) to stores.  Reading is public
    unless `read_key` (then a key with the `read` right is needed, except on the
    exports named in `public`); writing always needs a key with the right
    (`add` for blocks, `archive` for archive updates) unless `insecure_no_auth`.
    `redirect_blocks`: a URL prefix that `/h/` GETs are redirected to as
    `PREFIX/HEX.HASHNAME` (a per-block object store or CDN).
    """

    def __init__(
        self,
        exports: dict,
        *,
        readonly: bool = False,
        keys=None,
        read_key: bool = False,
        public=(),
        insecure_no_auth: bool = False,
        redirect_blocks: str | None = None,
        limits: HTTPLimits | None = None,
        workers: int = 4,
    ):
        self.exports = {n: Export(n, s, readonly) for n, s in exports.items()}
        self.readonly = readonly
        self.verifier = Verifier(keys)
        self.read_key = read_key
        self.public = frozenset(public)
        self.insecure_no_auth = insecure_no_auth
        self.redirect_blocks = redirect_blocks.rstrip("/") if redirect_blocks else None
        self.limits = limits or HTTPLimits()
        self.budget = Budget(self.limits.memory)
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="vt-httpd")
        #: buffers for joined block reads, used again once sent (`Buffers`)
        self.buffers = Buffers(most=16)
        self.stream_lock = contextlib.nullcontext()
        from vtstore.http.views import TreeViews

        self.views = TreeViews(self)

    def close(self) -> None:
        """Stop the worker threads."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def run(self, lock, fn, *args):
        """`fn(*args)` in a worker thread, holding `lock` (an export's)."""

        def call():
            with lock:
                return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def read_block(self, export: Export, h: HashCode) -> bytes:
        """One block, read on the event loop when the export's lock is free (a
        hop to a worker thread costs more than reading a cached block; measured
        in docs/PERFORMANCE.md), else in a worker thread."""
        lock = export.lock
        if not hasattr(lock, "acquire"):  # a thread-safe store: no lock at all
            return export.store[h]
        if lock.acquire(blocking=False):
            try:
                return export.store[h]
            finally:
                lock.release()
        return await self.run(lock, export.store.__getitem__, h)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        req = None
        try:
            req = Request(self, scope, receive, send)
            await self.dispatch(req)
        except Exception as e:  # every failure is one answer, never a dropped connection
            status, message, headers = self._status_of(e)
            if req is None:
                req = _bare_request(self, scope, receive, send)
            if req.started:
                log.warning("%s %s: failed while answering: %s", scope["method"], scope["path"], e)
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if req.wants_json() or req.raw_path.startswith(b"/b/") or b"/b/" in req.raw_path[:80]:
                await req.json({"error": message, "status": status}, status, headers)
            elif "text/html" in (req.header("accept") or ""):
                await req.html(pages.error_page(status, message), status, headers)
            else:
                await req.respond(status, headers, (message + "\n").encode(), "text/plain")

    @staticmethod
    def _status_of(e: Exception) -> tuple[int, str, list]:
        if isinstance(e, HTTPError):
            return e.status, str(e), e.headers
        if isinstance(e, MissingBlockError):
            return 404, f"no such block: {e}", []
        if isinstance(e, CorruptBlockError):
            return 502, f"the store holds a damaged block: {e}", []
        if isinstance(e, ReadOnlyError):
            return 403, str(e), []
        if isinstance(e, HashClassMismatchError):
            return 400, str(e), []
        if isinstance(e, FormatError):
            return 400, str(e), []
        if isinstance(e, VTError):
            return 404 if "no such" in str(e) or "no archive" in str(e) else 400, str(e), []
        log.exception("internal error")
        return 500, f"internal error: {type(e).__name__}", []

    # -- routing ----------------------------------------------------------------------------

    async def dispatch(self, req: Request) -> None:
        segs = split_path(req.raw_path)
        base = "/"
        name = ""
        if segs[0] == "x" and len(segs) >= 2:
            name, segs = segs[1], segs[2:]
            base = pages.href("x", name) + "/"
        export = self.exports.get(name)
        if export is None:
            raise HTTPError(404, f"no export {name!r}")
        kind = segs[0] if segs else ""
        rest = segs[1:]
        if kind == "" and len(segs) <= 1:
            return await self.index(req, export, base)
        # each write is one exact route that checks its own right; any other
        # method anywhere is refused here, before it could read without the read right
        write = (
            (req.method == "PUT" and kind == "h")
            or (req.method == "POST" and kind == "b")
            or (req.method == "POST" and kind == "a" and len(rest) == 1 and rest[0])
        )
        if req.method not in ("GET", "HEAD") and not write:
            raise HTTPError(405, f"{req.method} is not allowed here", [(b"allow", b"GET, HEAD")])
        if kind != "b" or rest[:1] != ["info"]:
            if req.method in ("GET", "HEAD"):
                await self.authorize(req, export, "read")
        if kind == "h":
            return await self.block(req, export, rest)
        if kind == "i":
            return await self.indirect(req, export, rest)
        if kind == "d":
            return await self.views.dirent(req, export, base, rest)
        if kind == "a":
            return await self.views.archive(req, export, base, rest)
        if kind == "b":
            from vtstore.http.blockapi import block_api

            return await block_api(self, req, export, rest)
        raise HTTPError(404, "no such route (see /h/, /i/, /d/, /a/)")

    async def authorize(self, req: Request, export: Export, right: str, body=b"") -> None:
        """Refuse (401/403) a request without the right on `export`."""
        if self.insecure_no_auth:
            return
        if right == "read" and (not self.read_key or export.name in self.public):
            return
        challenge = [(b"www-authenticate", b'VT-HMAC realm="vt"')]
        try:
            key = self.verifier.check(req.header("authorization"), req.method, req.target, body)
        except AuthRefused as e:
            raise HTTPError(401, str(e), challenge) from None
        if right not in key.rights_for(export.name):
            raise HTTPError(
                403, f"key {key.id} has no {right} right on {export.name or 'the default export'}"
            )

    async def index(self, req: Request, export: Export, base: str) -> None:
        """The front page: the exports this requester may read, and their archives."""
        from vtstore.named_archives import list_archives

        key = None
        if self.read_key and not self.insecure_no_auth and req.header("authorization"):
            try:  # checked once: a signature is good for one use
                key = self.verifier.check(req.header("authorization"), req.method, req.target)
            except AuthRefused as e:
                raise HTTPError(
                    401, str(e), [(b"www-authenticate", b'VT-HMAC realm="vt"')]
                ) from None

        def readable(name: str) -> bool:
            if not self.read_key or self.insecure_no_auth or name in self.public:
                return True
            return key is not None and "read" in key.rights_for(name)

        if not readable(export.name):
            raise HTTPError(
                401 if key is None else 403,
                "this needs a key with the read right (Authorization: VT-HMAC)",
                [(b"www-authenticate", b'VT-HMAC realm="vt"')],
            )

        def describe(name: str, x: Export) -> dict:
            try:
                archives = list_archives(x.store)
            except VTError:
                archives = []
            try:
                blocks = len(x.store)
            except (VTError, NotImplementedError, TypeError):
                blocks = "?"
            return {
                "name": name,
                "base": "/" if not name else pages.href("x", name) + "/",
                "hashclass": x.hashclass.hashname,
                "blocks": blocks,
                "archives": archives,
                "readonly": x.readonly,
            }

        info = [
            await self.run(x.lock, describe, name, x)
            for name, x in sorted(self.exports.items())
            if readable(name)
        ]
        if req.wants_json():
            return await req.json({"exports": info})
        await req.html(pages.index_page(info))

    # -- blocks -----------------------------------------------------------------------------

    async def block(self, req: Request, export: Export, rest: list[str]) -> None:
        if len(rest) != 1:
            raise HTTPError(404, "say /h/HASHNAME:HEX or /h/HEX.HASHNAME")
        h = hashcode_of(rest[0])
        if type(h) is not export.hashclass:
            raise HTTPError(404, f"this store holds {export.hashclass.hashname} blocks")
        if req.method == "PUT":
            return await self.put_block(req, export, h)
        if req.method not in ("GET", "HEAD"):
            raise HTTPError(405, "GET, HEAD or PUT", [(b"allow", b"GET, HEAD, PUT")])
        if self.redirect_blocks and "raw" not in req.query:
            loc = f"{self.redirect_blocks}/{h.hex_digest}.{h.hashname}"
            return await req.respond(
                302, [(b"location", loc.encode()), (b"cache-control", IMMUTABLE.encode())]
            )
        data = await self.read_block(export, h)
        await send_content(
            req,
            Content.of_bytes(data),
            ctype="application/octet-stream",
            etag=etag_of(h),
            cache=IMMUTABLE,
        )

    async def put_block(self, req: Request, export: Export, h: HashCode) -> None:
        limit = self.limits.max_body
        async with self.budget.charge(_declared(req, limit), self.limits.io_timeout):
            body = await req.body(limit)
            await self.authorize(req, export, "add", body)
            if export.readonly:
                raise HTTPError(403, "this export is read-only")
            if not h.check(body):
                raise HTTPError(400, f"the body is not the block {h}")
            await self.run(export.lock, export.store.add, body)
        await req.respond(201, [(b"etag", etag_of(h).encode())])

    async def indirect(self, req: Request, export: Export, rest: list[str]) -> None:
        from vtstore.blocks import IndirectBlock, decode_blockrefs

        if len(rest) != 1:
            raise HTTPError(404, "say /i/HASHNAME:HEX or /i/I{...}")
        text = rest[0]
        if "{" in text:
            from vtstore.transcribe import parse

            value, end = parse(text)
            if end != len(text) or not hasattr(value, "span") or not hasattr(value, "chunks"):
                raise HTTPError(400, "not a block transcription")
            block = value
            h = getattr(block, "hashcode", None)
        else:
            h = hashcode_of(text)
            if type(h) is not export.hashclass:
                raise HTTPError(404, f"this store holds {export.hashclass.hashname} blocks")

            def span_of():
                return sum(b.span for b in decode_blockrefs(export.store[h]))

            try:
                span = await self.run(export.lock, span_of)
            except FormatError:
                raise HTTPError(400, f"{h} is not an indirect block") from None
            block = IndirectBlock(h, span)
        etag = etag_of(h) if h is not None else None
        await send_content(
            req,
            Content.of_block(block, LockedReads(export)),
            ctype="application/octet-stream",
            etag=etag,
            cache=IMMUTABLE,
        )


def _declared(req: Request, limit: int) -> int:
    n = req.header("content-length")
    return min(int(n), limit) if n and n.isascii() and n.isdigit() else limit


def _bare_request(app, scope, receive, send) -> Request:
    """A Request for answering an error found while making the real one."""
    req = Request.__new__(Request)
    req.app, req.scope, req.receive, req._send = app, scope, receive, send
    req.method = scope.get("method", "GET")
    req._headers, req.query, req._qs = [], {}, b""
    req.raw_path = scope.get("raw_path") or b"/"
    req.started, req.status, req.sent = False, 0, 0
    return req


def pack_lengths(datas) -> bytes:
    """Blocks as `u32 length + data` each (the `/b/add` body and `/b/get` answer)."""
    out = bytearray()
    for d in datas:
        if d is None:
            out += struct.pack(">I", MISSING)
        else:
            out += struct.pack(">I", len(d))
            out += d
    return bytes(out)


class LockedReads:
    """The reading side of an export's store with its lock taken per call, for
    long reads (a file streamed, a tar) that must not hold the lock between
    blocks while other requests wait."""

    def __init__(self, export: Export):
        self._store = export.store
        self._lock = export.lock
        self.hashclass = export.store.hashclass
        self.name = export.store.name

    def __getitem__(self, h):
        with self._lock:
            return self._store[h]

    def fetch(self, h):
        return self[h]

    def get(self, h, default=None):
        with self._lock:
            return self._store.get(h, default)

    def get_many(self, hs):
        with self._lock:
            return self._store.get_many(hs)

    def read_joined(self, hs):
        """The blocks `hs` end to end (`DataDir.read_joined`, else joined)."""
        with self._lock:
            fast = getattr(self._store, "read_joined", None)
            if fast is not None:
                return fast(hs)
            return b"".join(self._store.get_many(hs))

    def __contains__(self, h) -> bool:
        with self._lock:
            return h in self._store
