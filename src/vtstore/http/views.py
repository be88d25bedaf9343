"""The tree and archive routes of `vt httpd`: `/d/REF/path...` and `/a/...`.

A directory answers as an HTML listing, as JSON, or as a streamed tar (the tar
writer of `vtstore.tree.tar` runs in a thread of its own and hands its output
over a small queue, so a tree of any size costs a few pieces of memory); a file
answers with its content (ranges, ETag, Content-Type, Content-Disposition) or a
preview page.  Archives list their states (`vtstore.named_archives`), each
browsable like a dirent, and two states can be compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from urllib.parse import quote

from vtstore.archive import ArchiveError, select_state
from vtstore.errors import FormatError, VTError
from vtstore.http import pages
from vtstore.http.app import LockedReads
from vtstore.http.content import IMMUTABLE, Content, content_type, disposition, send_content
from vtstore.http.request import HTTPError, Request
from vtstore.tree.dir import dir_entries
from vtstore.tree.dirent import T_HARDLINK, Dirent, check_name
from vtstore.tree.links import LinkResolver

#: What a listing or a history says to caches (they may change with the server).
SHORT_CACHE = "public, max-age=60"
#: Most characters of text shown in a preview page.
PREVIEW_TEXT = 256 * 1024
#: Most changes a diff page lists; entries a history's sizes may walk in all.
DIFF_MAX = 2000
SIZE_WALK_MAX = 200_000
#: Directory totals remembered (by directory block; they never change).
SIZE_CACHE = 65536
#: Pieces of tar output queued between the writer thread and the connection.
TAR_QUEUE = 8


def _ref_of(text: str) -> Dirent:
    from vtstore.transcribe import parse

    try:
        value, end = parse(text)
    except FormatError as e:
        raise HTTPError(400, f"not a dirent ref: {e}") from None
    if end != len(text) or not isinstance(value, Dirent):
        raise HTTPError(400, "not a dirent ref (say /d/D{...}/path)")
    return value


def entry_json(e: Dirent) -> dict:
    """One directory entry as the JSON listing shows it."""
    d: dict = {"name": e.name, "type": e.type_name}
    if e.is_file:
        d["size"] = e.size
    if e.meta is not None:
        if e.meta.mtime_ns is not None:
            d["mtime"] = e.meta.mtime_ns / 1e9
        if e.meta.mode is not None:
            d["mode"] = f"{e.meta.mode:04o}"
        if e.meta.mime_type:
            d["mime_type"] = e.meta.mime_type
    if e.is_symlink:
        d["target"] = e.target
    if e.type == T_HARDLINK:
        d["ino"] = e.ino
    d["ref"] = str(e)
    return d


def tree_diff(a: Dirent, b: Dirent, store, limit: int = DIFF_MAX) -> tuple[list, bool]:
    """`[(kind, path, size_before, size_after)]` between two trees, walking only
    into directories whose encodings differ; True if cut at `limit` changes."""
    out: list = []
    stack = [("", a, b)]
    while stack:
        path, x, y = stack.pop()
        xs = {e.name: e for e in dir_entries(x, store)} if x is not None and x.is_dir else {}
        ys = {e.name: e for e in dir_entries(y, store)} if y is not None and y.is_dir else {}
        for name in sorted(set(xs) | set(ys), reverse=True):
            p = f"{path}/{name}" if path else name
            ex, ey = xs.get(name), ys.get(name)
            if ex is not None and ey is not None and ex.encode() == ey.encode():
                continue
            if ex is None:
                out.append(("added", p, None, ey.size))
            elif ey is None:
                out.append(("removed", p, ex.size, None))
            elif ex.is_dir and ey.is_dir:
                stack.append((p, ex, ey))
                continue
            else:
                out.append(("changed", p, ex.size, ey.size))
            if len(out) >= limit:
                return sorted(out, key=lambda c: c[1]), True
    return sorted(out, key=lambda c: c[1]), False


class _QueueWriter:
    """The file object the tar writer writes into: hands pieces to the loop."""

    def __init__(self, loop, queue: asyncio.Queue, stop: threading.Event):
        self.loop, self.queue, self.stop = loop, queue, stop
        self.buf = bytearray()

    def write(self, data) -> int:
        self.buf += data
        if len(self.buf) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            self._put(bytes(self.buf))
            self.buf.clear()

    def _put(self, item) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            if self.stop.is_set():
                fut.cancel()
                raise BrokenPipeError("the client went away")
            with contextlib.suppress(TimeoutError):
                fut.result(0.2)
                return


class TreeViews:
    """The `/d/` and `/a/` routes of one `HTTPApp`."""

    def __init__(self, app):
        self.app = app
        self._sizes: OrderedDict = OrderedDict()  # dir block -> (files, bytes); immutable

    # -- /d/ --------------------------------------------------------------------------------

    async def dirent(self, req: Request, export, base: str, rest: list[str]) -> None:
        if not rest or not rest[0]:
            raise HTTPError(404, "say /d/DIRENT-REF/path")
        root = _ref_of(rest[0])
        here = base + "d/" + quote(rest[0], safe="") + "/"
        crumbs = [("stores", "/"), (rest[0][:24] + "…", here)]
        await self.tree(req, export, root, rest[1:], here, crumbs, IMMUTABLE)

    async def tree(self, req, export, root: Dirent, parts, top_url: str, crumbs, cache) -> None:
        """Answer for the entry at `parts` below `root`."""
        store = export.store
        trailing = not parts or parts[-1] == ""

        def find():
            # each segment on its own: a decoded %2F stays inside its name (and fails)
            names = [p for p in parts if p not in ("", ".")]
            for p in names:
                if p == "..":
                    raise HTTPError(400, "a path may not climb out with '..'")
                check_name(p)
            d = root
            links = None
            for name in names:
                if not d.is_dir:
                    raise HTTPError(404, f"{d.name or 'top'} is not a directory")
                for sub in dir_entries(d, store):
                    if sub.name == name:
                        d = sub
                        break
                else:
                    raise HTTPError(404, f"no such entry {name!r}")
            if d.type == T_HARDLINK:
                links = LinkResolver(root, store)
                d = links.resolve_link(d)
            return d, names

        d, names = await self.app.run(export.lock, find)
        url = top_url + "/".join(quote(n, safe="") for n in names)
        for i, n in enumerate(names):
            crumbs = [
                *crumbs,
                (n, top_url + "/".join(quote(x, safe="") for x in names[: i + 1]) + "/"),
            ]
        if d.is_dir:
            if not trailing and names and req.method in ("GET", "HEAD") and not req.query:
                return await req.respond(301, [(b"location", (url + "/").encode())])
            if "tar" in req.query:
                return await self.tar(req, export, d, root, names[-1] if names else "tree")
            return await self.listing(req, export, d, url + ("/" if names else ""), crumbs)
        if d.is_file:
            return await self.file(req, export, d, url, crumbs, cache)
        info = entry_json(d)
        if req.wants_json():
            return await req.json(info)
        body = f"<p>A {pages.e(d.type_name)}"
        if d.is_symlink:
            body += f" pointing to <code>{pages.e(d.target)}</code>"
        await req.html(pages.page(d.name or "entry", body + ".</p>", crumbs))

    async def listing(self, req, export, d: Dirent, here: str, crumbs) -> None:
        entries = await self.app.run(export.lock, dir_entries, d, export.store)
        rows = [entry_json(e) for e in entries]
        headers = [(b"vary", b"Accept"), (b"cache-control", SHORT_CACHE.encode())]
        if req.wants_json():
            return await req.json({"name": d.name, "type": "dir", "entries": rows}, 200, headers)
        total = sum(r.get("size", 0) for r in rows)
        summary = f"<p class=mute>{len(rows)} entries, {pages.size_text(total)} in files here</p>"
        title = crumbs[-1][0] if len(crumbs) > 2 else "/"
        await req.html(pages.listing_page(title, crumbs[:-1], here, rows, summary), 200, headers)

    async def file(self, req, export, d: Dirent, url: str, crumbs, cache) -> None:
        store = export.store
        block = d.block
        head = b""
        if block is not None and block.span:
            head = await self.app.run(export.lock, block.read, store, 0, min(block.span, 4096))
        stored = d.meta.mime_type if d.meta is not None else None
        ctype = content_type(d.name, stored, bytes(head))
        if "view" in req.query:
            text = None
            if ctype.startswith(("text/", "application/json")) or ctype.endswith(("+xml", "json")):
                n = min(d.size, PREVIEW_TEXT)
                raw = await self.app.run(export.lock, block.read, store, 0, n) if n else b""
                text = bytes(raw).decode("utf-8", "replace")
                if d.size > n:
                    text += "\n… (cut here; download for the rest)"
            return await req.html(
                pages.preview_page(d.name or "file", crumbs[:-1], url, ctype, d.size, text)
            )
        h = getattr(block, "hashcode", None)
        if h is not None:
            etag = f'"{h.hashname}:{h.hex_digest}"'
        else:  # inline data (literal, run): named by its ref, which holds all of it
            ref = block.encode() if block is not None else b""
            etag = f'"ref-{export.hashclass.from_data(ref).hex_digest}"'
        if block is None:
            content = Content.of_bytes(b"")
        else:
            content = Content.of_block(block, LockedReads(export))
        if ctype.startswith("text/html") or "svg" in ctype:
            # stored HTML is shown as text: a page from a store must not run as ours
            ctype = "text/plain; charset=utf-8"
        extra = [
            (
                b"content-disposition",
                disposition(d.name or "file", "download" in req.query).encode(),
            ),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send_content(req, content, ctype=ctype, etag=etag, cache=cache, extra=extra)

    async def tar(self, req, export, d: Dirent, root: Dirent, name: str) -> None:
        from vtstore.tree.tar import write_tar

        headers = [
            (b"content-type", b"application/x-tar"),
            (b"content-disposition", disposition(f"{name}.tar", True).encode()),
        ]
        await req.start(200, headers)
        if req.method == "HEAD":
            return await req.finish()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(TAR_QUEUE)
        stop = threading.Event()
        out = _QueueWriter(loop, queue, stop)
        reads = LockedReads(export)
        links = LinkResolver(root, reads)

        def produce():
            try:
                write_tar(d.renamed(""), reads, out, links=links)
                out.flush()
                out._put(None)
            except BrokenPipeError:
                pass
            except Exception as e:  # noqa: BLE001 - reported to the reader as a cut stream
                with contextlib.suppress(BrokenPipeError):
                    out._put(e)

        t = threading.Thread(target=produce, name="vt-httpd-tar", daemon=True)
        t.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, Exception):
                    raise item
                await req.send_body(item)
            await req.finish()
        finally:
            stop.set()
            while not queue.empty():
                queue.get_nowait()
            await loop.run_in_executor(None, t.join)

    # -- /a/ --------------------------------------------------------------------------------

    async def archive(self, req: Request, export, base: str, rest: list[str]) -> None:
        from vtstore.named_archives import list_archives, open_archive

        store = export.store
        if not rest or rest == [""]:
            if req.method not in ("GET", "HEAD"):
                raise HTTPError(405, "GET the archive list")

            def describe():
                out = []
                for n in list_archives(store):
                    entries = list(open_archive(store, n).entries())
                    out.append(
                        {
                            "name": n,
                            "states": len(entries),
                            "latest": entries[-1].when if entries else None,
                        }
                    )
                return out

            info = await self.app.run(export.lock, describe)
            if req.wants_json():
                return await req.json({"archives": info})
            return await req.html(pages.archives_page(base, export.name, info))
        name = rest[0]
        if req.method == "POST":
            from vtstore.http.blockapi import archive_update

            return await archive_update(self.app, req, export, name)

        def states():
            try:
                return list(open_archive(store, name).entries())
            except ArchiveError as e:
                raise HTTPError(404, str(e)) from None

        entries = await self.app.run(export.lock, states)
        arch_url = base + "a/" + quote(name, safe="") + "/"
        if len(rest) == 1:
            return await req.respond(301, [(b"location", arch_url.encode())])
        if rest[1:] == [""]:
            return await self.history(req, export, base, name, entries)
        if rest[1] == "diff":
            return await self.diff(req, export, base, name, entries)
        try:
            entry = select_state(entries, rest[1], name)
        except ArchiveError as e:
            raise HTTPError(404, str(e)) from None
        crumbs = [("stores", "/"), ("archives", base + "a/"), (name, arch_url)]
        top = arch_url + quote(rest[1], safe="") + "/"
        crumbs.append((entry.short_id, top))
        full = len(rest[1]) == 64 and rest[1] == entry.id
        await self.tree(
            req, export, entry.dirent, rest[2:], top, crumbs, IMMUTABLE if full else None
        )

    def _state_info(self, e, store, budget: list) -> dict:
        d = {"id": e.short_id, "full_id": e.id, "when": e.when, "time": e.isotime}
        if e.comment:
            d["comment"] = e.comment
        sizes = self._totals(e.dirent, store, budget) if e.dirent.is_dir else None
        d["files"], d["bytes"] = sizes if sizes is not None else (None, None)
        return d

    def _totals(self, root: Dirent, store, budget: list) -> tuple[int, int] | None:
        """`(files, bytes)` of the tree under directory `root`, or None once
        `budget[0]` entries have been read.  Totals are remembered per
        directory block (immutable), so the states of one archive, which share
        most directories, cost only what changed between them; iterative, so
        any depth."""
        sizes = self._sizes
        hit = sizes.get(str(root.block))
        if hit is not None:
            return hit
        stack = [[root, iter(dir_entries(root, store)), 0, 0]]
        while stack:
            top = stack[-1]
            e = next(top[1], None)
            if e is None:
                stack.pop()
                res = (top[2], top[3])
                sizes[str(top[0].block)] = res
                if len(sizes) > SIZE_CACHE:
                    sizes.popitem(last=False)
                if not stack:
                    return res
                stack[-1][2] += res[0]
                stack[-1][3] += res[1]
                continue
            budget[0] -= 1
            if budget[0] < 0:
                return None
            if e.is_dir:
                hit = sizes.get(str(e.block))
                if hit is None:
                    stack.append([e, iter(dir_entries(e, store)), 0, 0])
                else:
                    top[2] += hit[0]
                    top[3] += hit[1]
            elif e.is_file:
                top[2] += 1
                top[3] += e.size
        return None

    async def history(self, req, export, base: str, name: str, entries) -> None:
        def info():
            out = []
            budget = [SIZE_WALK_MAX]  # entries read for sizes, for this whole page
            for e in reversed(entries):
                try:
                    out.append(self._state_info(e, export.store, budget))
                except VTError:
                    out.append({"id": e.short_id, "full_id": e.id, "when": e.when})
            return out

        states = await self.app.run(export.lock, info)
        headers = [(b"vary", b"Accept"), (b"cache-control", b"no-cache")]
        if req.wants_json():
            return await req.json({"name": name, "states": states}, 200, headers)
        await req.html(pages.history_page(base, name, states), 200, headers)

    async def diff(self, req, export, base: str, name: str, entries) -> None:
        sel_a = req.query.get("from", "-2" if len(entries) > 1 else "latest")
        sel_b = req.query.get("to", "latest")
        try:
            a, b = select_state(entries, sel_a, name), select_state(entries, sel_b, name)
        except ArchiveError as e:
            raise HTTPError(404, str(e)) from None
        changes, cut = await self.app.run(export.lock, tree_diff, a.dirent, b.dirent, export.store)
        ia = {"id": a.short_id, "when": a.when}
        ib = {"id": b.short_id, "when": b.when}
        if req.wants_json():
            rows = [{"change": k, "path": p, "before": x, "after": y} for k, p, x, y in changes]
            return await req.json({"from": ia, "to": ib, "changes": rows, "truncated": cut})
        await req.html(pages.diff_page(base, name, ia, ib, changes, cut))
