"""The HTTP client store: `http://HOST:PORT/` (or `https://`, or
`.../x/EXPORT/`) as a `Store`, speaking `vt httpd`'s block API.

Requests go over a small pool of keep-alive connections (`http.client`: per
small request it measured about 3x faster than httpx's sync client here, and
it needs no event loop); batches (`get_many`, `contains_many`, `add_many`) are
cut into requests of at most `GET_BATCH`/`CONTAINS_BATCH` hashcodes or
`ADD_BYTES` octets, sent in parallel over `parallel` connections.  A connection
the server closed while idle is replaced and the request sent again (every
request here is idempotent: adding a block twice stores it once).

Reading a file block by block would cost a round trip per leaf; so when a
fetched block decodes as the refs of an indirect block, its children are
fetched ahead in batches, in the background, into a bounded read-ahead cache
(`READ_AHEAD` octets), and the leaf reads that follow are answered from it.
Every block read is checked against its hashcode.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

from vtstore.errors import (
    CorruptBlockError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
    StoreError,
)
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.stores.base import Store

GET_BATCH = 256
CONTAINS_BATCH = 4096
ADD_BYTES = 8 << 20
LIST_PAGE = 16384
READ_AHEAD = 64 << 20
#: Tries of one request over fresh connections.
ATTEMPTS = 3
_RETRY = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    http.client.BadStatusLine,
)


def _check_all(hs: list, datas: list) -> list[bool]:
    """For each block (None: missing, passes), whether it is the data of its
    hashcode: BLAKE3 in one batch without the GIL, other classes one by one."""
    from vtstore.hashes import Hash_BLAKE3

    have = [i for i, d in enumerate(datas) if d is not None]
    ok = [True] * len(hs)
    if have and all(type(hs[i]) is Hash_BLAKE3 for i in have):
        try:
            from vtstore.stores._vtdread import check_blake3
        except ImportError:
            pass
        else:
            good = check_blake3(b"".join(hs[i] for i in have), [datas[i] for i in have])
            for i, g in zip(have, good, strict=True):
                ok[i] = bool(g)
            return ok
    for i in have:
        ok[i] = hs[i].check(datas[i])
    return ok


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
        self._ahead: OrderedDict = OrderedDict()
        self._ahead_bytes = 0
        self._ahead_lock = threading.Lock()
        self._ahead_done = threading.Condition(self._ahead_lock)
        self._ahead_busy: set = set()
        self._dirty = False
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
        super().__init__(name or url, server_hc, readonly or bool(info.get("readonly")))

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

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request (path relative to the store's URL); `(status, body)`."""
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
                data = resp.read()
            except _RETRY:
                conn.close()
                if attempt + 1 == ATTEMPTS:
                    raise StoreError(f"{self.url}: the server closed the connection") from None
                continue
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise StoreError(f"{self.url}: {e}") from None
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
        with self._ahead_lock:
            data = self._ahead.pop(h, None)
            if data is not None:
                self._ahead_bytes -= len(data)
        if data is None:
            status, data = self.request("GET", self._path_of(h))
            if status == 404:
                return None
            if status != 200:
                raise self._error(status, data)
            data = self.verify(h, data)
        self._read_ahead(data)
        return data

    def _contains(self, h: HashCode) -> bool:
        status, data = self.request("HEAD", self._path_of(h))
        if status not in (200, 404):
            raise self._error(status, data)
        return status == 200

    def get_many(self, hashcodes) -> list[bytes]:
        """The data of each hashcode, in order: what the read-ahead fetched
        (waiting for what it is fetching, not asking twice), the rest in
        parallel `POST b/get` requests of `GET_BATCH` hashcodes."""
        hs = [self.check_hashcode(h) for h in hashcodes]
        self._check_open()
        found: dict = {}
        with self._ahead_lock:
            if self._ahead_busy:
                busy = self._ahead_busy
                self._ahead_done.wait_for(
                    lambda: not any(h in busy for h in hs), timeout=self.timeout
                )
            if self._ahead:
                for h in hs:
                    d = self._ahead.pop(h, None)
                    if d is not None:
                        found[h] = d
                        self._ahead_bytes -= len(d)
        rest = [h for h in dict.fromkeys(hs) if h not in found]
        groups = [rest[i : i + GET_BATCH] for i in range(0, len(rest), GET_BATCH)]
        for group, datas in zip(groups, self._map(self._fetch, groups), strict=True):
            found.update(zip(group, datas, strict=True))
        out = []
        for h in hs:
            d = found[h]
            if d is None:
                raise MissingBlockError(h, self.name)
            out.append(d)
        return out

    def _fetch(self, group) -> list:
        """`POST b/get` for a group of hashcodes: their data (None if missing),
        checked (BLAKE3 in one native batch, `_vtdread.check_blake3`)."""
        from vtstore.http.blockapi import unpack_joined, unpack_lengths

        try:
            if self._joined:
                datas = unpack_joined(self._ok("POST", "b/get?joined", b"".join(group)), len(group))
            else:
                datas = unpack_lengths(self._ok("POST", "b/get", b"".join(group)))
        except ValueError as e:
            raise StoreError(f"{self.url}: a bad block answer: {e}") from None
        if len(datas) != len(group):
            raise StoreError(f"{self.url}: {len(datas)} blocks for {len(group)} asked")
        ok = _check_all(group, datas)
        out = []
        for h, d, good in zip(group, datas, ok, strict=True):
            if d is not None:
                if not good:
                    raise CorruptBlockError(h, f"{self.url} sent other data")
                d = bytes(d)
            out.append(d)
        return out

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

    # -- read-ahead ---------------------------------------------------------------------

    def _read_ahead(self, data) -> None:
        """If `data` reads as an indirect block's refs, fetch its children ahead."""
        from vtstore.blocks import decode_blockrefs, leaf_refs

        if len(data) < 8 or self.closed:
            return
        got = leaf_refs(data)  # the common case, without a Block a leaf
        if got is not None:
            kids = got[0]
        else:
            try:
                kids = [b.hashcode for b in decode_blockrefs(data) if getattr(b, "hashcode", None)]
            except Exception:  # noqa: BLE001 - most data is no list of refs
                return
        kids = [h for h in kids if type(h) is self.hashclass]
        with self._ahead_lock:
            kids = [h for h in kids if h not in self._ahead and h not in self._ahead_busy]
            self._ahead_busy.update(kids)
        groups = [kids[i : i + GET_BATCH] for i in range(0, len(kids), GET_BATCH)]
        for g in groups:
            self._pool().submit(self._ahead_fetch, g)

    def _ahead_fetch(self, group) -> None:
        try:
            datas = self._fetch(group)
        except Exception:  # noqa: BLE001 - read-ahead is a hint; the real read reports
            datas = [None] * len(group)
        with self._ahead_lock:
            for h, d in zip(group, datas, strict=True):
                self._ahead_busy.discard(h)
                if d is None or self._ahead_bytes + len(d) > READ_AHEAD:
                    continue
                self._ahead[h] = d
                self._ahead_bytes += len(d)
            self._ahead_done.notify_all()

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
        if self._exec is not None:
            self._exec.shutdown(wait=True, cancel_futures=True)
            self._exec = None
        self._drop_all()
        with self._ahead_lock:
            self._ahead.clear()
            self._ahead_bytes = 0
