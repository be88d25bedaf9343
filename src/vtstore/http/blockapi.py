"""The block API of `vt httpd` (`/b/...`), which the HTTP client store speaks.

Binary where it carries blocks or hashcodes, JSON otherwise (docs/HTTP.md,
"Block API"); hashcodes travel as bare digests of the export's hash class:

- `GET /b/info`: `{"hashclass", "readonly", "max_body", "max_batch"}` (public);
- `POST /b/get`: body = digests; answer = for each, `u32 length + data`
  (`0xFFFFFFFF` for a block the store does not have), streamed;
  `POST /b/get?joined` (when `/b/info` says `"joined": true`): the `u32`
  lengths of all first, then the data of those present end to end (a datadir
  reads a run of plain blocks into one buffer and it goes out as is);
  `POST /b/get?joined&unchecked` (when `/b/info` says `"unchecked": true`):
  the same, from a client that checks every block itself, so the server
  leaves its own hash check out of that read (every other route checks);
- `POST /b/contains`: body = digests; answer = one octet (0 or 1) each;
- `POST /b/add`: body = `u32 length + data` per block; answer = their
  digests (`add` right); `POST /b/flush` (`add` right);
- `GET /b/hashcodes?start=HEX&after=1&length=N`: digests in order (a page);
- `GET /b/hoh?start=HEX&after=1&length=N`: `{"hash", "last"}`;
- `GET /b/len`: `{"length"}`;
- `GET /b/archives`: `{"archives": [names]}`; `GET /b/archive/NAME`:
  `{"states": [lines]}`; `POST /a/NAME` (or `/b/archive/NAME`): body `{"text",
  "if_newer"}` appends a state (`archive` right): `{"appended"}`.
"""

from __future__ import annotations

import json
import struct

from vtstore.errors import FormatError, MissingBlockError, VTError
from vtstore.http.app import LIST_MAX, MAX_BATCH, MISSING, HTTPError, pack_lengths
from vtstore.http.readahead import Group
from vtstore.http.request import Request

_U32 = struct.Struct(">I")


def _count(body: bytes, hashclass) -> int:
    """How many digests `body` holds (400 or 413 if it is not a list of them)."""
    size = hashclass.digest_size
    if len(body) % size:
        raise HTTPError(400, f"the body is not a list of {hashclass.hashname} digests")
    n = len(body) // size
    if n > MAX_BATCH:
        raise HTTPError(413, f"more than {MAX_BATCH} hashcodes in one request")
    return n


def _digests(body: bytes, hashclass) -> list:
    size = hashclass.digest_size
    return [hashclass(body[i * size : (i + 1) * size]) for i in range(_count(body, hashclass))]


def unpack_lengths(body, most: int | None = None) -> list:
    """`u32 length + data` records -> their data (None for `MISSING`);
    `FormatError` if they do not fill the body exactly."""
    view = memoryview(body)
    out = []
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise FormatError("a block record cut short")
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        if n == MISSING:
            out.append(None)
            continue
        if pos + n > len(view):
            raise FormatError("a block record cut short")
        out.append(view[pos : pos + n])
        pos += n
        if most is not None and len(out) > most:
            raise FormatError(f"more than {most} blocks")
    return out


def _get_many(store, hs: list) -> list:
    """The data of each of `hs`, None for a block the store does not have:
    one batch read (`get_many`) unless some are missing."""
    try:
        return store.get_many(hs)
    except MissingBlockError:
        return [store.get(h) for h in hs]


def read_joined(store, hs: list) -> tuple[bytes, bytes]:
    """The `/b/get?joined` answer for `hs`: `u32` lengths (`MISSING` for a
    block the store does not have), and the blocks present, end to end
    (`DataDir.read_joined`: a run of plain blocks read into one buffer)."""
    fast = getattr(store, "read_joined", None)
    try:
        if fast is not None:
            data, lengths = fast(hs, lengths=True)
        else:
            datas = store.get_many(hs)
            data, lengths = b"".join(datas), [len(d) for d in datas]
    except MissingBlockError:
        datas = [store.get(h) for h in hs]
        data = b"".join(d for d in datas if d is not None)
        lengths = [MISSING if d is None else len(d) for d in datas]
    return struct.pack(f">{len(lengths)}I", *lengths), data


def read_unchecked(store, body: bytes, hashclass, buffer=None) -> tuple[bytes, bytes]:
    """The `/b/get?joined&unchecked` answer for the digests `body`: as
    `read_joined`, but a datadir reads a run of plain blocks without hashing
    them (the client checks every block), looking the digests up as they
    came (no hashcode object a block), into `buffer(size)` if given (a
    buffer used again, `Buffers.get`); anything else reads as `read_joined`."""
    from vtstore.stores.datadir import DataDir

    size = hashclass.digest_size
    raw = [body[i : i + size] for i in range(0, len(body), size)]
    got = None
    if type(store) is DataDir:
        got = store.read_joined(raw, lengths=True, check=False, buffer=buffer)
    if got is None:
        return read_joined(store, [hashclass(d) for d in raw])
    data, lengths = got
    return struct.pack(f">{len(lengths)}I", *lengths), data


def joined_group(body, n: int) -> Group:
    """A `/b/get?joined` answer for `n` hashcodes as a `Group` (the blocks
    end to end in a memoryview of `body`); `FormatError` if it does not add up."""
    view = memoryview(body)
    if len(view) < 4 * n:
        raise FormatError("a joined block answer cut short")
    offs = [0]
    present = []
    pos = 0
    for k in struct.unpack_from(f">{n}I", view):
        if k == MISSING:
            present.append(False)
        else:
            present.append(True)
            pos += k
        offs.append(pos)
    if 4 * n + pos != len(view):
        raise FormatError("a joined block answer of the wrong length")
    return Group(view[4 * n :], offs, present)


def _window(req: Request, hashclass):
    q = req.query
    start = None
    if q.get("start"):
        try:
            start = hashclass.from_hex(q["start"])
        except (ValueError, FormatError):
            raise HTTPError(400, "a bad start hashcode") from None
    after = q.get("after") in ("1", "yes", "true")
    length = q.get("length")
    if length is not None:
        if not (length.isascii() and length.isdigit()) or len(length) > 12:
            raise HTTPError(400, "a bad length")
        length = int(length)
    return start, after, length


async def block_api(app, req: Request, export, rest: list[str]) -> None:
    """Answer one `/b/...` request."""
    op = rest[0] if rest else ""
    store = export.store
    hc = export.hashclass
    method = req.method
    if op == "info" and method in ("GET", "HEAD"):
        return await req.json(
            {
                "hashclass": hc.hashname,
                "readonly": export.readonly,
                "max_body": app.limits.max_body,
                "max_batch": MAX_BATCH,
                "joined": True,
                "unchecked": True,
            }
        )
    if op in ("get", "contains") and method == "POST":
        limit = MAX_BATCH * hc.digest_size
        body = await req.body(limit)
        await app.authorize(req, export, "read", body)
        if op == "get" and "joined" in req.query and "unchecked" in req.query:
            # the client checks every block against its hashcode
            # (vtstore.http.client), so the datadir need not hash them first
            _count(body, hc)
            lengths, data = await app.run(
                export.lock, read_unchecked, store, body, hc, app.buffers.get
            )
            return await req.respond_parts(
                200, [(b"content-type", b"application/octet-stream")], [lengths, data]
            )
        hs = _digests(body, hc)
        if op == "contains":
            found = await app.run(export.lock, store.contains_many, hs)
            return await req.respond(
                200, [], bytes(bool(x) for x in found), "application/octet-stream"
            )
        if "joined" in req.query:
            lengths, data = await app.run(export.lock, read_joined, store, hs)
            return await req.respond_parts(
                200, [(b"content-type", b"application/octet-stream")], [lengths, data]
            )
        await req.start(200, [(b"content-type", b"application/octet-stream")])

        def fetch(group):
            return pack_lengths(_get_many(store, group))

        for i in range(0, len(hs), 256):
            await req.send_body(await app.run(export.lock, fetch, hs[i : i + 256]))
        return await req.finish()
    if op in ("add", "flush") and method == "POST":
        limit = app.limits.max_body
        n = req.header("content-length")
        async with app.budget.charge(
            int(n) if n and n.isascii() and n.isdigit() else limit, app.limits.io_timeout
        ):
            body = await req.body(limit)
            await app.authorize(req, export, "add", body)
            if export.readonly:
                raise HTTPError(403, "this export is read-only")
            if op == "flush":
                await app.run(export.lock, store.flush)
                return await req.respond(204)
            try:
                datas = unpack_lengths(body)
            except FormatError as e:
                raise HTTPError(400, str(e)) from None
            if any(d is None for d in datas):
                raise HTTPError(400, "a missing-block record in an add")
            hs = await app.run(export.lock, store.add_many, datas)
        return await req.respond(200, [], b"".join(hs), "application/octet-stream")
    if method not in ("GET", "HEAD"):
        raise HTTPError(405, f"{method} is not allowed on /b/{op}")
    if op == "hashcodes":
        start, after, length = _window(req, hc)
        length = LIST_MAX if length is None else min(length, LIST_MAX)

        def page():
            return b"".join(store.hashcodes(start=start, after=after, length=length))

        return await req.respond(
            200, [], await app.run(export.lock, page), "application/octet-stream"
        )
    if op == "hoh":
        start, after, length = _window(req, hc)
        h, last = await app.run(export.lock, store.hash_of_hashcodes, start, after, length)
        return await req.json({"hash": h.hex_digest, "last": last.hex_digest if last else None})
    if op == "len":
        return await req.json({"length": await app.run(export.lock, len, store)})
    if op == "archives":
        from vtstore.named_archives import list_archives

        return await req.json({"archives": await app.run(export.lock, list_archives, store)})
    if op == "archive" and len(rest) == 2:
        from vtstore.named_archives import open_archive

        def states():
            try:
                archive = open_archive(store, rest[1])
            except VTError as e:
                raise HTTPError(404, str(e)) from None
            return [e.to_line().rstrip("\n") for e in archive.entries()]

        return await req.json({"states": await app.run(export.lock, states)})
    raise HTTPError(404, f"no block API call {op!r}")


async def archive_update(app, req: Request, export, name: str) -> None:
    """`POST /a/NAME`: append a state (the `archive` right)."""
    from vtstore.named_archives import open_archive
    from vtstore.net.handlers import _archive_append

    body = await req.body(1 << 20)
    await app.authorize(req, export, "archive", body)
    if export.readonly:
        raise HTTPError(403, "this export is read-only")
    try:
        obj = json.loads(body)
        text, if_newer = obj["text"], bool(obj.get("if_newer"))
        if not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise HTTPError(400, 'say {"text": "STATE LINE", "if_newer": false}') from None

    def append():
        archive = open_archive(export.store, name, create=True)
        export.store.flush()
        return _archive_append(archive, text, export.store, if_newer)

    done = await app.run(export.lock, append)
    await req.json({"appended": bool(done)})
