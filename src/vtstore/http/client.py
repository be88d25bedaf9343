"""The HTTP client store: `http://HOST:PORT/` (or `https://`, or
`.../x/EXPORT/`) as a `Store`, speaking `vt httpd`'s block API.

Requests go over a small pool of keep-alive connections (`http.client`: per
small request it measured about 3x faster than httpx's sync client here, and
it needs no event loop); batches (`get_many`, `contains_many`, `add_many`) are
cut into requests of at most `GET_BATCH`/`CONTAINS_BATCH` hashcodes or
`ADD_BYTES` octets, sent in parallel over `parallel` connections.  A connection
the server closed while idle is replaced and the request sent again (every
request here is idempotent: adding a block twice stores it once).

Blocks come by `POST b/get?joined`: the lengths, then the blocks end to end,
read into one buffer (`readinto`, no copy per block) and checked against the
hashcodes asked for in one native batch (`_vtdread.check_blake3`) before
anything is used; the client says so (`&unchecked`), and the server then
leaves its own check out (docs/HTTP.md).  A server that answers other bytes
gets a `CorruptBlockError`, never into the output.

Reading a file block by block would cost a round trip per leaf; so the blocks
an indirect block refers to are fetched ahead (`vtstore.http.readahead`), and
`read_joined` (what `vt cat` and a streamed answer read a run of leaves with)
answers a run that came in one request as a slice of its buffer.
"""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from urllib.parse import quote, urlsplit

from vtstore.errors import (
    CorruptBlockError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
    StoreError,
)
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.http.buffers import Buffers
from vtstore.http.readahead import Group, Leaves, ReadAhead, cuts
from vtstore.stores.base import Store

GET_BATCH = 256
CONTAINS_BATCH = 4096
ADD_BYTES = 8 << 20
LIST_PAGE = 16384
READ_AHEAD = 64 << 20
#: A block answer may hold at most this many octets a block asked for (when
#: the sizes are not known from the refs), so a bogus Content-Length cannot
#: make the client allocate without bound.
BLOCK_MAX = 16 << 20
#: An answer whose size is not known from the refs is read into one buffer
#: up to this size, beyond it as it comes.
PREALLOC_MAX = 64 << 20
#: Tries of one request over fresh connections.
ATTEMPTS = 3
_RETRY = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    http.client.BadStatusLine,
)


def _bad_blocks(hashclass, digests: bytes, views: list) -> list[int]:
    """The indexes of the blocks (None: missing, passes) that are not the
    data of their digest in `digests`: BLAKE3 in one batch without the GIL,
    other classes one by one."""
    from vtstore.hashes import Hash_BLAKE3

    size = hashclass.digest_size
    have = [i for i, v in enumerate(views) if v is not None]
    if hashclass is Hash_BLAKE3:
        try:
            from vtstore.stores._vtdread import check_blake3
        except ImportError:
            pass
        else:
            if len(have) != len(views):
                digests = b"".join(digests[i * size : (i + 1) * size] for i in have)
                views = [views[i] for i in have]
            good = check_blake3(digests, views)
            return [] if all(good) else [i for i, g in zip(have, good, strict=True) if not g]
    return [i for i in have if not hashclass(digests[i * size : (i + 1) * size]).check(views[i])]


def _group_of(datas: list) -> Group:
    """A `Group` of separate blocks (None: missing), joined once."""
    offs = [0]
    for d in datas:
        offs.append(offs[-1] + (0 if d is None else len(d)))
    data = memoryview(b"".join(d for d in datas if d is not None))
    return Group(data, offs, [d is not None for d in datas])


class HTTPStoreError(StoreError):
    """An HTTP answer the client did not expect (the server's message in it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HTTPStore(Store):
    """A store on a `vt httpd` server; see the module docstring."""

    add_copies = True

    def __init__(
        self,
        url: str,
        name: str | None = None,
        hashclass: type[HashCode] | None = None,
        readonly: bool = False,
        key=None,
        key_file: str | None = None,
        tls_ca: str | None = None,
        parallel: int = 4,
        timeout: float = 60.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = (parts.path or "/").rstrip("/") + "/"
        self.timeout = timeout
        if key is None and key_file:
            from vtstore.security.keys import load_key_file

            key = load_key_file(key_file)
        self.key = key
        self._ssl = None
        if parts.scheme == "https":
            import ssl

            self._ssl = ssl.create_default_context(cafile=tls_ca)
        self._idle: list = []
        self._pool_lock = threading.Lock()
        self._parallel = max(1, parallel)
        self._exec: ThreadPoolExecutor | None = None
        self._dirty = False
        self._buffers = Buffers()
        info = self._json("GET", "b/info")
        try:
            server_hc = hashclass_by_name(info["hashclass"])
        except (KeyError, TypeError, ValueError) as e:
            self._drop_all()
            raise StoreError(f"{url}: not a vt httpd block API ({e})") from None
        if hashclass is not None and hashclass is not server_hc:
            self._drop_all()
            raise HashClassMismatchError(
                f"{url} holds {server_hc.hashname} blocks, not {hashclass.hashname}"
            )
        #: the server answers `b/get?joined` (lengths first, data end to end)
        self._joined = info.get("joined") is True
        #: ... and leaves its own hash check out when told the client checks
        self._unchecked = info.get("unchecked") is True
        super().__init__(name or url, server_hc, readonly or bool(info.get("readonly")))
        self._ahead = ReadAhead(
            self._fetch_raw,
            lambda fn, *a: self._pool().submit(fn, *a),
            server_hc,
            READ_AHEAD,
            self._parallel,
            timeout,
        )

    # -- requests ------------------------------------------------------------------------

    def _conn(self):
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        if self._ssl is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _release(self, conn) -> None:
        with self._pool_lock:
            if len(self._idle) < 2 * self._parallel + 2:
                self._idle.append(conn)
                return
        conn.close()

    def _drop_all(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def request(self, method: str, path: str, body: bytes = b"", read=None) -> tuple[int, bytes]:
        """Send one request (path relative to the store's URL); `(status, body)`.
        `read(response)`, if given, reads a 200 answer's body instead of `read()`."""
        target = self.base + path
        headers = {"Content-Length": str(len(body))}
        if self.key is not None:
            from vtstore.http.auth import sign

            headers["Authorization"] = sign(self.key, method, target, body)
        for attempt in range(ATTEMPTS):
            conn = self._conn()
            try:
                conn.request(method, target, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = read(resp) if read is not None and resp.status == 200 else resp.read()
            except _RETRY:
                conn.close()
                if attempt + 1 == ATTEMPTS:
                    raise StoreError(f"{self.url}: the server closed the connection") from None
                continue
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise StoreError(f"{self.url}: {e}") from None
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._release(conn)
            return resp.status, data
        raise AssertionError("unreachable")

    def _ok(self, method: str, path: str, body: bytes = b"", ok=(200,)) -> bytes:
        status, data = self.request(method, path, body)
        if status not in ok:
            raise self._error(status, data)
        return data

    def _error(self, status: int, data: bytes) -> Exception:
        try:
            message = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            message = data[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        text = f"{self.url}: {message}"
        if status == 403 and "read-only" in message:
            return ReadOnlyError(text)
        return HTTPStoreError(status, text)

    def _json(self, method: str, path: str, body: bytes = b"", ok=(200,)):
        data = self._ok(method, path, body, ok)
        try:
            return json.loads(data)
        except ValueError:
            raise StoreError(f"{self.url}: a bad answer to {path}") from None

    def _pool(self) -> ThreadPoolExecutor:
        if self._exec is None:
            self._exec = ThreadPoolExecutor(self._parallel, thread_name_prefix="vt-http-client")
        return self._exec

    def _map(self, fn, groups):
        groups = list(groups)
        if len(groups) <= 1:
            return [fn(g) for g in groups]
        return list(self._pool().map(fn, groups))

    # -- the store core ------------------------------------------------------------------

    def _path_of(self, h: HashCode) -> str:
        return f"h/{h.hashname}:{h.hex_digest}?raw"

    def _get(self, h: HashCode) -> bytes | None:
        (e,) = self._ahead.take([h])
        if e is not None:
            data = bytes(e[0].view(e[1]))
        else:
            status, data = self.request("GET", self._path_of(h))
            if status == 404:
                return None
            if status != 200:
                raise self._error(status, data)
            data = self.verify(h, data)
        if not self.closed:
            self._ahead.plan(h, data)
        return data

    def _contains(self, h: HashCode) -> bool:
        status, data = self.request("HEAD", self._path_of(h))
        if status not in (200, 404):
            raise self._error(status, data)
        return status == 200

    def _entries(self, hs: list) -> dict:
        """`{hashcode: (Group, index)}` for the distinct `hs`: what the
        read-ahead fetched (waiting for what it is fetching, not asking
        twice), the rest in parallel requests of `GET_BATCH` hashcodes;
        `MissingBlockError` for the first the server does not have."""
        self._check_open()
        want = list(dict.fromkeys(hs))
        found = {h: e for h, e in zip(want, self._ahead.take(want), strict=True) if e is not None}
        rest = [h for h in want if h not in found]
        groups = [rest[i : i + GET_BATCH] for i in range(0, len(rest), GET_BATCH)]
        for group, got in zip(groups, self._map(self._fetch_group, groups), strict=True):
            for i, h in enumerate(group):
                if not got.present[i]:
                    raise MissingBlockError(h, self.name)
                found[h] = (got, i)
        return found

    def get_many(self, hashcodes) -> list[bytes]:
        """The data of each hashcode, in order (see `_entries`)."""
        hs = [self.check_hashcode(h) for h in hashcodes]
        found = self._entries(hs)
        return [bytes(g.view(i)) for g, i in (found[h] for h in hs)]

    def read_joined(self, hashcodes, lengths: bool = False):
        """The data of the blocks `hashcodes` end to end, as
        `b"".join(self.get_many(hashcodes))` (`lengths`: and the length of
        each), raising as it does; a run that came in one answer is a slice
        of its buffer (a memoryview, no copy), any other is joined once."""
        hs = [self.check_hashcode(h) for h in hashcodes]
        if not hs:
            return (b"", []) if lengths else b""
        found = self._entries(hs)
        entries = [found[h] for h in hs]
        g0, i0 = entries[0]
        if all(g is g0 and i == i0 + k for k, (g, i) in enumerate(entries)):
            offs = g0.offs
            data = g0.data[offs[i0] : offs[i0 + len(hs)]]
            if lengths:
                return data, [offs[i + 1] - offs[i] for i in range(i0, i0 + len(hs))]
            return data
        views = [g.view(i) for g, i in entries]
        data = b"".join(views)
        return (data, [len(v) for v in views]) if lengths else data

    def block_pieces(self, block, start: int, end: int):
        """The bytes `[start:end)` of `block` as large pieces (what
        `block.chunks(self, start, end, joined=True)` yields, `vt cat`'s
        read): an indirect block of leaves walked from its refs' octets, its
        leaves read in the groups the read-ahead fetched them in, each a
        slice of one answer's buffer (`leaf_pieces`)."""
        from vtstore.pieces import block_pieces

        return block_pieces(block, self, start, end)

    def leaf_refs(self, h: HashCode) -> tuple[Leaves, list] | None:
        """`(Leaves, spans)` when block `h` is an indirect block of leaves in
        their shortest ref form (as `blocks.leaf_refs` reads it), else None;
        read once for the read-ahead and the reader (`MissingBlockError` if
        the server does not have it)."""
        return self._ahead.leaf_refs(h, self[h])

    def leaf_pieces(self, leaves, spans: list, start: int, end: int):
        """The bytes `[start:end)` of `leaves` (a `Leaves` from `leaf_refs`,
        or a list of hashcodes) of `spans`, end to end, read in the
        read-ahead's groups (`readahead.cuts`): one memoryview of one
        answer's buffer a group, no copy."""
        if type(leaves) is not Leaves:
            leaves = Leaves(None, b"".join(leaves), self.hashclass)
        self._check_open()
        pos = 0
        for k, (i, j) in enumerate(cuts(spans)):
            want = spans[i:j]
            size = sum(want)
            a, pos = pos, pos + size
            if pos <= start:
                continue
            if a >= end:
                return
            got = None if leaves.node is None else self._ahead.take_group(leaves.node, k)
            if got is None:
                got = self._fetch_raw(leaves.digests_of(i, j), j - i, size)
            if not all(got.present):
                raise MissingBlockError(leaves.hashcode(i + got.present.index(False)), self.name)
            if got.size != size or got.offs[1:] != list(accumulate(want)):
                from vtstore.pieces import length_fault

                length_fault(self, leaves.hashcodes(i, j), want)
            lo, hi = max(start, a) - a, min(end, pos) - a
            yield got.data if lo == 0 and hi == size else got.data[lo:hi]

    def _fetch(self, group) -> list:
        """The data of each of `group` (None if missing), checked: one request."""
        got = self._fetch_group(group)
        return [None if v is None else bytes(v) for v in map(got.view, range(len(group)))]

    def _fetch_group(self, group: list, expected: int | None = None) -> Group:
        """`_fetch_raw` for the hashcodes `group`."""
        return self._fetch_raw(b"".join(group), len(group), expected)

    def _fetch_raw(self, digests: bytes, n: int, expected: int | None = None) -> Group:
        """`POST b/get?joined` for the `n` blocks whose digests are `digests`
        (`expected`: the octets their refs say they hold, if known): their
        data in one buffer read with `readinto`, every block checked (BLAKE3
        in one native batch, `_vtdread.check_blake3`), `CorruptBlockError`
        for one that is not the data of its hashcode."""
        from vtstore.http.blockapi import joined_group, unpack_lengths

        limit = 4 * n + (expected if expected is not None else n * BLOCK_MAX)
        try:
            if self._joined:
                path = "b/get?joined" + ("&unchecked" if self._unchecked else "")
                reader = self._reader(limit, limit if expected is not None else PREALLOC_MAX)
                status, body = self.request("POST", path, digests, reader)
                if status != 200:
                    raise self._error(status, body)
                got = joined_group(body, n)
            else:
                got = _group_of(unpack_lengths(self._ok("POST", "b/get", digests)))
        except ValueError as e:
            raise StoreError(f"{self.url}: a bad block answer: {e}") from None
        if len(got.present) != n:
            raise StoreError(f"{self.url}: {len(got.present)} blocks for {n} asked")
        bad = _bad_blocks(self.hashclass, digests, [got.view(i) for i in range(n)])
        if bad:
            size = self.hashclass.digest_size
            h = self.hashclass(digests[bad[0] * size : (bad[0] + 1) * size])
            raise CorruptBlockError(h, f"{self.url} sent other data")
        return got

    def _reader(self, limit: int, prealloc: int):
        """Read a body of at most `limit` octets: into one buffer (`Buffers`)
        if it says it has at most `prealloc`, else as it comes (a length a
        server merely claims allocates nothing)."""

        def read(resp):
            size = resp.length
            if size is None:
                data = resp.read(limit + 1)
                if len(data) > limit:
                    raise StoreError(f"{self.url}: a block answer longer than asked for")
                return data
            if size > limit:
                raise StoreError(f"{self.url}: a block answer longer than asked for")
            if size > prealloc:
                parts, got = [], 0
                while got < size:
                    parts.append(resp.read(min(1 << 20, size - got)))
                    if not parts[-1]:
                        raise http.client.IncompleteRead(b"", size - got)
                    got += len(parts[-1])
                return b"".join(parts)
            view = self._buffers.get(size)
            got = 0
            while got < size:
                k = resp.readinto(view[got:])
                if not k:
                    raise http.client.IncompleteRead(bytes(view[:got]), size - got)
                got += k
            return view

        return read

    def contains_many(self, hashcodes) -> list[bool]:
        self._check_open()
        hs = [h for h in hashcodes]
        ours = [type(h) is self.hashclass for h in hs]
        mine = [h for h, ok in zip(hs, ours, strict=True) if ok]
        groups = [mine[i : i + CONTAINS_BATCH] for i in range(0, len(mine), CONTAINS_BATCH)]
        found = []
        for ans in self._map(lambda g: self._ok("POST", "b/contains", b"".join(g)), groups):
            found.extend(bool(x) for x in ans)
        it = iter(found)
        return [next(it) if ok else False for ok in ours]

    def add_many(self, datas) -> list[HashCode]:
        from vtstore.http.app import pack_lengths

        self._check_writable()
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        out = self.hashclass.from_data_many(datas)
        groups, cur, size = [], [], 0
        for d in datas:
            if cur and size + len(d) > ADD_BYTES:
                groups.append(cur)
                cur, size = [], 0
            cur.append(d)
            size += len(d) + 4
        if cur:
            groups.append(cur)
        got = b"".join(self._map(lambda g: self._ok("POST", "b/add", pack_lengths(g)), groups))
        self._dirty = True
        if got != b"".join(out):
            raise StoreError(f"{self.url}: the server stored other hashcodes than sent")
        return out

    def _add_new(self, h, data) -> None:
        self.add_many([data])

    def flush(self) -> None:
        """Make what this client added durable on the server (nothing to do if
        it added nothing, so a reader needs no key to close)."""
        if self._dirty and not self.closed:
            self._ok("POST", "b/flush", ok=(200, 204))
            self._dirty = False

    def __len__(self) -> int:
        self._check_open()
        return int(self._json("GET", "b/len")["length"])

    def _iter_sorted(self, start):
        after = False
        while True:
            q = f"b/hashcodes?length={LIST_PAGE}"
            if start is not None:
                q += f"&start={start.hex_digest}" + ("&after=1" if after else "")
            data = self._ok("GET", q)
            size = self.hashclass.digest_size
            if len(data) % size:
                raise StoreError(f"{self.url}: a bad hashcode page")
            for i in range(0, len(data), size):
                yield self.hashclass(data[i : i + size])
            if len(data) < LIST_PAGE * size:
                return
            start, after = self.hashclass(data[-size:]), True

    def hash_of_hashcodes(self, start=None, after=False, length=None):
        self._check_open()
        if start is not None:
            self.check_hashcode(start)
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        q = "b/hoh?" + (f"start={start.hex_digest}&" if start is not None else "")
        q += ("after=1&" if after else "") + (f"length={length}" if length is not None else "")
        obj = self._json("GET", q)
        last = obj.get("last")
        return self.hashclass.from_hex(obj["hash"]), (
            self.hashclass.from_hex(last) if last else None
        )

    # -- archives -----------------------------------------------------------------------

    def archive_names(self) -> list[str]:
        """The names of the archives the server's export keeps."""
        names = self._json("GET", "b/archives").get("archives")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise StoreError(f"{self.url}: a bad archive list")
        return names

    def archive_states(self, name: str) -> list[str]:
        """The lines of every state of archive `name`, oldest first."""
        from vtstore.net import protocol as P

        status, data = self.request("GET", "b/archive/" + quote(name, safe=""))
        if status == 404:
            raise P.RemoteError(P.E_NO_ARCHIVE, {"message": f"no archive {name!r}"})
        if status != 200:
            raise self._error(status, data)
        states = json.loads(data).get("states")
        if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
            raise StoreError(f"{self.url}: a bad archive answer")
        return states

    def archive_last(self, name: str) -> str | None:
        """The line of archive `name`'s newest state, or None."""
        states = self.archive_states(name)
        return states[-1] if states else None

    def archive_update(self, name: str, text: str, if_newer: bool = False) -> bool:
        """Append state `text` to archive `name` (after flushing); whether it was."""
        self._check_writable()
        self.flush()
        self._dirty = False
        body = json.dumps({"text": text, "if_newer": if_newer}).encode()
        return bool(self._json("POST", "a/" + quote(name, safe=""), body).get("appended"))

    def named_archive(self, name: str, create: bool = False):
        """The server's archive `name` (`vtstore.named_archives`)."""
        from vtstore.net.client import RemoteArchive

        self._check_open()
        return RemoteArchive(self, name)

    @property
    def exports(self) -> dict:
        from vtstore.net.client import RemoteArchive

        return {n: RemoteArchive(self, n) for n in self.archive_names()}

    def _close(self) -> None:
        self._ahead.close()  # first: a fetch that ends now sends no other
        if self._exec is not None:
            self._exec.shutdown(wait=True, cancel_futures=True)
            self._exec = None
        self._drop_all()
        self._buffers.clear()
