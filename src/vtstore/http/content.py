"""Sending content over ASGI: whole, by ranges (206, multipart/byteranges, 416),
conditional (304), HEAD, streamed from a store a piece at a time.

A `Content` is a length and a way to read any range of it in pieces; the store
is read in the server's worker threads (never on the event loop), about
`PIECE` octets per hop, so a 1 GiB file costs one piece of memory at a time.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterator

from vtstore.chunking.scanners.detect import _looks_like_text
from vtstore.http import ranges as R
from vtstore.pieces import block_pieces

#: Octets read per hop to a worker thread while streaming.
PIECE = 1 << 20
#: What hash URLs (and content named by a hash) say to caches.
IMMUTABLE = "public, max-age=31536000, immutable"

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"<svg", "image/svg+xml"),
)


def content_type(name: str | None, stored: str | None, head: bytes) -> str:
    """The Content-Type of a file: its stored MIME type, else by name, else sniffed."""
    if stored and all(32 < ord(c) < 127 or c == " " for c in stored) and "/" in stored:
        return stored
    if name:
        guess, _ = mimetypes.guess_type(name, strict=False)
        if guess:
            return guess + ("; charset=utf-8" if guess.startswith("text/") else "")
    if head[:12][8:12] == b"WEBP" and head[:4] == b"RIFF":
        return "image/webp"
    for magic, ctype in _MAGIC:
        if head.startswith(magic):
            return ctype
    if _looks_like_text(head[:4096]):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


class Content:
    """`length` octets readable as pieces: `read(start, end)` yields buffers."""

    def __init__(self, length: int, read: Callable[[int, int], Iterator], data=None):
        self.length = length
        self.read = read
        #: the whole content when it is in memory already (sent without a thread hop)
        self.data = data

    @classmethod
    def of_bytes(cls, data) -> Content:
        view = memoryview(data)

        def read(start, end):
            yield view[start:end]

        return cls(len(view), read, view)

    @classmethod
    def of_block(cls, block, store) -> Content:
        def read(start, end):
            return block_pieces(block, store, start, end)

        return cls(block.span, read)


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, as RFC
    9110 §13.1.2 asks for If-None-Match)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def disposition(name: str, attachment: bool) -> str:
    """A Content-Disposition header for a file called `name` (RFC 6266, UTF-8)."""
    from urllib.parse import quote

    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


async def send_content(
    req,
    content: Content,
    *,
    ctype: str,
    etag: str | None,
    cache: str | None,
    extra: list | None = None,
) -> None:
    """Answer `req` (a `vtstore.http.app.Request`) with `content`: 304 if
    If-None-Match names the ETag, 206/416 for a Range, else 200; HEAD sends the
    headers only."""
    headers = [(b"accept-ranges", b"bytes"), *(extra or [])]
    if etag:
        headers.append((b"etag", etag.encode()))
    if cache:
        headers.append((b"cache-control", cache.encode()))
    if etag and etag_matches(req.header("if-none-match"), etag):
        await req.respond(304, headers)
        return
    length = content.length
    try:
        want = R.parse_range(req.header("range"), length)
        if want is not None and req.header("if-range") and req.header("if-range") != etag:
            want = None  # the client's copy is another version: send it all
    except R.Unsatisfiable:
        headers.append((b"content-range", f"bytes */{length}".encode()))
        await req.respond(416, headers, b"range not satisfiable\n", "text/plain")
        return
    if want is None:
        headers.append((b"content-type", ctype.encode()))
        headers.append((b"content-length", str(length).encode()))
        if content.data is not None:
            await req.respond(200, headers, content.data)
            return
        await req.start(200, headers)
        if req.method != "HEAD":
            await req.stream(content.read(0, length))
        await req.finish()
        return
    if len(want) == 1:
        start, end = want[0]
        headers.append((b"content-type", ctype.encode()))
        headers.append((b"content-range", f"bytes {start}-{end - 1}/{length}".encode()))
        headers.append((b"content-length", str(end - start).encode()))
        if content.data is not None:
            await req.respond(206, headers, content.data[start:end])
            return
        await req.start(206, headers)
        if req.method != "HEAD":
            await req.stream(content.read(start, end))
        await req.finish()
        return
    bound = R.boundary()
    headers.append((b"content-type", f"multipart/byteranges; boundary={bound}".encode()))
    total = R.multipart_length(bound, ctype, want, length)
    headers.append((b"content-length", str(total).encode()))
    await req.start(206, headers)
    if req.method != "HEAD":
        for start, end in want:
            await req.send_body(R.part_header(bound, ctype, start, end, length))
            await req.stream(content.read(start, end))
        await req.send_body(R.closing(bound))
    await req.finish()
