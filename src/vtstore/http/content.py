"""Sending content over ASGI: whole, by ranges (206, multipart/byteranges, 416),
conditional (304), HEAD, streamed from a store a piece at a time.

A `Content` is a length and a way to read any range of it in pieces; the store
is read in the server's worker threads (never on the event loop), about
`PIECE` octets per hop, so a 1 GiB file costs one piece of memory at a time.
"""

from __future__ import annotations

import mimetypes
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate

from vtstore.chunking.scanners.detect import _looks_like_text
from vtstore.http import ranges as R

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


#: A streamed block is read in runs of stored leaves of about this many
#: octets, the first one smaller (one `PIECE`) so the answer starts soon.
RUN_BYTES = 4 << 20
FIRST_RUN_BYTES = 1 << 20


def block_pieces(block, store, start: int, end: int) -> Iterator:
    """The bytes `[start:end)` of `block` as pieces of about `RUN_BYTES`, for
    sending: what `block.chunks(store, start, end, joined=True)` yields, but
    read in runs of stored leaves by `store.read_joined` when the store has it
    (a datadir reads a run of plain blocks into one buffer, checked, with no
    object per block and no join: `DataDir.read_joined`), and an indirect
    block of leaves walked from its refs' octets (`leaf_refs`) without a
    Python step per leaf."""
    read_joined = getattr(store, "read_joined", None)
    if read_joined is None:
        yield from block.chunks(store, start, end, joined=True)
        return
    want = FIRST_RUN_BYTES
    leaf_pieces = getattr(store, "leaf_pieces", None)  # a store reading in its own runs
    for item in _leaf_runs(block, store, start, end, 0):
        if type(item) is not tuple:
            yield item
            continue
        hs, spans, s, e = item
        if leaf_pieces is not None:
            yield from leaf_pieces(hs, spans, s, e)
            continue
        cum = list(accumulate(spans))  # each leaf's end
        i = bisect_right(cum, s)  # the leaf holding octet s
        base = cum[i - 1] if i else 0
        pos = s
        while pos < e:
            j = min(bisect_left(cum, min(pos + want, e), lo=i), len(cum) - 1, i + RUN_LEAVES - 1)
            data = read_joined(hs[i : j + 1])
            if len(data) != cum[j] - base:
                _length_fault(store, hs[i : j + 1], spans[i : j + 1])
            a, b = pos - base, min(e, cum[j]) - base
            yield data if a == 0 and b == len(data) else memoryview(data)[a:b]
            want = RUN_BYTES
            pos, i, base = base + b, j + 1, cum[j]


#: Most leaves one `read_joined` call asks for (`DataDir.read_joined`'s batch).
RUN_LEAVES = 1024


def _leaf_runs(block, store, start: int, end: int, depth: int) -> Iterator:
    """`(hashcodes, spans, s, e)` runs of stored leaves (`[s:e)` of them
    wanted, end to end) and the pieces of any other leaf (literal, RLE), that
    make `[start:end)` of `block`, in order."""
    from vtstore.blocks import MAX_INDIRECT_DEPTH, HashCodeBlock, IndirectBlock, leaf_refs
    from vtstore.errors import CorruptBlockError

    kind = type(block)
    if kind is HashCodeBlock:
        yield [block.hashcode], [block.span], start, end
        return
    if kind is not IndirectBlock:
        yield from block.chunks(store, start, end)
        return
    if depth >= MAX_INDIRECT_DEPTH:
        raise CorruptBlockError(
            block.hashcode, f"indirect blocks nested more than {MAX_INDIRECT_DEPTH} deep"
        )
    refs = getattr(store, "leaf_refs", None)  # a store that has read them already
    got = (
        refs(block.hashcode) if refs is not None else leaf_refs(store[block.hashcode])
    )  # the level above the leaves: most of a file
    if got is not None:
        total = sum(got[1])
        if total != block.span:
            raise CorruptBlockError(
                block.hashcode, f"children span {total} but the ref says {block.span}"
            )
        yield got[0], got[1], start, end
        return
    off = 0
    for sub in block.subblocks(store):  # checks the span too
        sub_end = off + sub.span
        if sub_end > start:
            if off >= end:
                return
            yield from _leaf_runs(
                sub, store, max(start, off) - off, min(end, sub_end) - off, depth + 1
            )
        off = sub_end


def _length_fault(store, hs: list, spans: list):
    """Raise for the first leaf whose stored length is not its ref's span."""
    from vtstore.errors import CorruptBlockError

    for h, span, data in zip(hs, spans, store.get_many(hs), strict=True):
        if len(data) != span:
            raise CorruptBlockError(h, f"stored length {len(data)} but the ref says {span}")
    raise CorruptBlockError(hs[0], "a run of blocks read back at another length")


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
