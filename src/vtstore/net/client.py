"""The stream client store: a `Store` whose blocks live on a block server.

Adds are pipelined: `add`/`add_many` hash locally, return the hashcodes at once and
queue the data into ADD packets that are sent without waiting for their answers.
Every block added is kept (and answers `get`/`contains` locally) until a FLUSH
sent after it has been answered: the server's FLUSH is a barrier over what it
received before, so only then is the block known durable.  If the connection
drops, the client reconnects (a bounded number of tries over `reconnect_timeout`
seconds) and sends every such block again before any new request; adding is
idempotent, so nothing is lost and nothing is stored twice.  `flush()` returns
only when every add is acknowledged and the server has flushed.  A server that
stays gone gives a `StoreError` naming it.

Read requests are idempotent and retried on a new connection the same way;
archive updates are not, and a connection lost during one is reported as such.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future

from vtstore.errors import CorruptBlockError, FormatError, MissingBlockError, StoreError, VTError
from vtstore.hashes import HashCode
from vtstore.net import protocol as P
from vtstore.net.link import Link, LinkLost
from vtstore.net.transport import Transport, client_transport_factory
from vtstore.stores.base import Store

#: Hashcodes per GET / CONTAINS request and per HASHCODES page.
GET_BATCH = 256
CONTAINS_BATCH = 4096
LIST_PAGE = 4096
#: How many times one request is retried over fresh connections before giving up.
MAX_ATTEMPTS = 4


def resolve_key(spec: str | None, key=None, key_file: str | None = None):
    """The key a client authenticates with: `key`, else the one in `key_file`,
    else (for `tcp:`/`tls:` specs) the one in `$VT_KEY_FILE`, else None."""
    import os

    if key is not None:
        return key
    if key_file is None and spec is not None and spec.startswith(("tcp:", "tls:")):
        key_file = os.environ.get("VT_KEY_FILE") or None
    if key_file is None:
        return None
    from vtstore.security.keys import load_key_file

    return load_key_file(key_file)


class RemoteArchive:
    """A named archive on the server, with the reading and appending surface of
    `vtstore.archive.Archive`: `entries()`, `last()`, `at(when)`, `update(...)`,
    `exists()`, and `path` (`SERVER:NAME`, for messages)."""

    def __init__(self, store: StreamStore, name: str):
        self.store = store
        self.name = name

    def __repr__(self) -> str:
        return f"RemoteArchive({self.store.name!r}, {self.name!r})"

    def __str__(self) -> str:
        return self.path

    @property
    def path(self) -> str:
        """What names this archive in messages: `SERVER:NAME`."""
        return f"{self.store.name}:{self.name}"

    def _parse(self, text: str):
        from vtstore.archive import parse_line

        return parse_line(text, f"{self.path}: ")

    def _ask(self, call):
        """`(call(name), True)`, or `(None, False)` when the server has no such archive (as
        reading a missing `.vt` file gives nothing)."""
        try:
            return call(self.name), True
        except P.RemoteError as e:
            if e.code == P.E_NO_ARCHIVE:
                return None, False
            raise

    def exists(self) -> bool:
        """Whether the server has this archive."""
        return self._ask(self.store.archive_last)[1]

    def last(self):
        """The newest state (an `ArchiveEntry`), or None for an empty or
        missing archive."""
        text = self._ask(self.store.archive_last)[0]
        return None if text is None else self._parse(text)

    def entries(self):
        """Every state, oldest first (from a server too old to send them all:
        its latest only); nothing for a missing archive.  A damaged line is
        skipped by the server, as reading a local archive does."""
        for text in self._ask(self.store.archive_states)[0] or ():
            yield self._parse(text)

    def scan(self):
        """The states for `vt fsck`, numbered from 1 (an `ArchiveScan`): the
        server skips damaged lines, so none are listed; `vt fsck` on the
        server's side sees them."""
        from vtstore.archive import ArchiveError, ArchiveScan

        if not self.exists():
            raise ArchiveError(f"{self.path}: no such archive")
        states = list(enumerate(self.entries(), 1))
        return ArchiveScan(self.path, states, [], len(states))

    def repair(self):
        """A server's archive is repaired where it lives."""
        from vtstore.archive import ArchiveError

        raise ArchiveError(f"{self.path}: run vt fsck --repair on the server's side")

    def at(self, when: float):
        """The newest state no later than `when`."""
        best = None
        for e in self.entries():
            if e.when <= when:
                best = e
        return best

    def check_store(self, store, force: bool = False, last=...) -> bool:
        """`Archive.check_store` for a server's archive: refuse to build on a
        latest state whose top blocks `store` lacks.  The state's recorded store
        identity is the server's datadir, which this side cannot name, so only
        the blocks are checked here (the server checks again on update)."""
        import dataclasses

        from vtstore.archive import Archive

        if last is ...:
            last = self.last()
        if last is not None:
            last = dataclasses.replace(last, store_id=None)
        return Archive.check_store(self, store, force, last)  # type: ignore[arg-type]

    def update(
        self,
        dirent,
        when=None,
        uuid=None,
        name=None,
        comment=None,
        store_id=None,
        if_newer: bool = False,
    ):
        """Append a new state; every block added to the store is flushed first
        (the server records its own store's identity).  With `if_newer`, only if
        the archive's latest state is older (checked under the server's lock);
        return the state appended, or None when it was not."""
        from vtstore.archive import ArchiveEntry

        entry = ArchiveEntry(time.time() if when is None else when, dirent, uuid, name, comment)
        done = self.store.archive_update(self.name, entry.to_line().rstrip("\n"), if_newer=if_newer)
        return entry if done else None

    def update_if_newer(self, dirent, when, uuid=None, name=None, comment=None) -> bool:
        """Append a state only if the archive's latest is older (the server
        checks under the archive's lock); return whether it was appended."""
        return self.update(dirent, when, uuid, name, comment, if_newer=True) is not None


class StreamStore(Store):
    """A store served by a block server at `spec` (`tcp:host:port`,
    `unix:/path.sock`, `|command`; append `#NAME` to a tcp: or unix: spec to pick a
    named export).  See the module docstring for the delivery guarantees."""

    def __init__(
        self,
        spec: str | None = None,
        *,
        connect: Callable[[], Transport] | None = None,
        name: str | None = None,
        hashclass=None,
        readonly: bool = False,
        export: str = "",
        reconnect_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        batch_bytes: int = 1024 * 1024,
        batch_blocks: int = 512,
        retain_bytes: int = 64 * 1024 * 1024,
        key=None,
        key_file: str | None = None,
        tls_ca: str | None = None,
        tls_pin: str | None = None,
    ):
        """`key` (a `vtstore.security.keys.Key`) or `key_file` authenticates the
        connection (docs/PROTOCOL.md §2a); for `tcp:` and `tls:` specs without
        either, `$VT_KEY_FILE` names the key file.  `tls_ca` / `tls_pin` say how
        a `tls:` server's certificate is checked (`vtstore.security.tls`)."""
        if connect is None:
            if spec is None:
                raise TypeError("StreamStore needs a spec or a connect function")
            target = spec
            if not spec.startswith("|") and "#" in spec:
                target, _, export = spec.partition("#")
            connect = client_transport_factory(target, tls_ca=tls_ca, tls_pin=tls_pin)
        self._key = resolve_key(spec, key, key_file)
        self._connect = connect
        self._export = export
        self.reconnect_timeout = reconnect_timeout
        self.connect_timeout = connect_timeout
        self.batch_bytes = batch_bytes
        self.batch_blocks = batch_blocks
        self.retain_bytes = retain_bytes
        self._lock = threading.RLock()
        self._unflushed: OrderedDict[HashCode, tuple[int, bytes]] = OrderedDict()
        self._unflushed_bytes = 0
        self._seq = 0
        self._batch: list[tuple[HashCode, bytes]] = []
        self._batch_bytes = 0
        self._acks: deque[tuple[Future, list[HashCode]]] = deque()
        self._flushes: deque[tuple[Future, int]] = deque()
        self._add_error: BaseException | None = None
        self.reconnects = 0
        try:
            self._link: Link | None = self._open_link(hashclass)
        except OSError as e:
            # say which server: a bare "[Errno 2] No such file or directory" does not
            msg = str(e)
            where = name or spec or ""
            if where and where not in msg:
                msg = f"{where}: {e.strerror or msg}"
            raise StoreError(f"cannot connect to the block server: {msg}") from None
        w = self._link.welcome
        super().__init__(
            name=name or spec or w.name, hashclass=w.hashclass, readonly=readonly or w.readonly
        )
        #: The name the server gives the store it serves us.
        self.server_store_name = w.name

    # -- connections -------------------------------------------------------------

    def _open_link(self, hashclass) -> Link:
        link = Link(self._connect())
        try:
            link.handshake(hashclass, self._export, self.connect_timeout, key=self._key)
        except BaseException:
            link.abandon()
            raise
        return link

    def _live_link(self) -> Link:
        """The current connection, reconnecting (and resending) if it died.  Call
        with `self._lock` held."""
        link = self._link
        if link is not None and link.dead is None:
            return link
        self._check_open()
        if link is not None:
            link.abandon()
        self._link = None
        # settle what the dead link already answered, then forget its requests
        self._reap(everything=True)
        self._acks.clear()
        self._flushes.clear()
        link = self._reconnect()
        self._link = link
        self.reconnects += 1
        # every block not known durable goes again, before any new request; the
        # batch being filled is part of it
        self._batch.clear()
        self._batch_bytes = 0
        for chunk in self._chunks([(h, d) for h, (_, d) in self._unflushed.items()]):
            try:
                fut = link.submit(P.OP_ADD, P.encode_blocks_parts([d for _, d in chunk]))
            except LinkLost:
                break  # the next request reconnects again
            self._acks.append((fut, [h for h, _ in chunk]))
        return link

    def _batch_limit(self) -> int:
        """Most block octets one ADD carries: ours, within the server's packet limit."""
        max_packet = self._link.max_packet if self._link else P.DEFAULT_MAX_PACKET
        return min(self.batch_bytes, max_packet - 4096)

    def _chunks(self, items):
        """Split `(hashcode, data)` pairs into ADD-sized runs (a big block alone)."""
        limit = self._batch_limit()
        chunk: list = []
        size = 0
        for item in items:
            n = len(item[1]) + 10
            if chunk and (size + n > limit or len(chunk) >= self.batch_blocks):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            yield chunk

    def _reconnect(self) -> Link:
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._open_link(self.hashclass)
            except (OSError, FormatError) as e:
                last = e
            except P.RemoteError as e:
                if e.code != P.E_SHUTDOWN:
                    raise
                last = e
            if time.monotonic() + delay > deadline:
                raise StoreError(
                    f"{self.name}: the block server is gone ({last}); gave up after"
                    f" {attempts} attempts in {self.reconnect_timeout:g}s"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _call(self, op: int, parts, flags: int = 0, idempotent: bool = True) -> P.Packet:
        """One request and its answer, retried on a new connection if idempotent."""
        return self._pipeline([(op, parts, flags)], idempotent)[0]

    def _pipeline(self, requests: list, idempotent: bool = True) -> list[P.Packet]:
        """Send all `requests` (`(op, parts, flags)`) before waiting for any answer."""
        results: list[P.Packet | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        attempts = 0
        while todo:
            attempts += 1
            with self._lock:
                link = self._live_link()
            futs = []
            for i in todo:
                op, parts, flags = requests[i]
                try:
                    futs.append((i, link.submit(op, parts, flags)))
                except LinkLost:
                    break
            lost = []
            for i, fut in futs:
                try:
                    results[i] = fut.result()
                except LinkLost as e:
                    lost.append((i, e))
            todo = [i for i in todo if results[i] is None]
            if todo:
                what = P.OP_NAMES.get(requests[todo[0]][0], "request")
                why = lost[0][1] if lost else link.dead
                if not idempotent:
                    raise StoreError(
                        f"{self.name}: connection lost during {what};"
                        f" it may or may not have been done ({why})"
                    )
                if attempts >= MAX_ATTEMPTS:
                    raise StoreError(
                        f"{self.name}: {what} failed on {attempts} connections ({why})"
                    )
        return results  # type: ignore[return-value]

    # -- adding ---------------------------------------------------------------------

    def add_many(self, datas: Sequence) -> list[HashCode]:
        self._check_writable()
        hashcodes = [self.hashclass.from_data(d) for d in datas]
        with self._lock:
            self._raise_add_error()
            max_packet = self._link.max_packet if self._link else P.DEFAULT_MAX_PACKET
            limit = self._batch_limit()
            for h, d in zip(hashcodes, datas, strict=True):
                if h in self._unflushed:
                    continue
                n = len(d) + 10
                if n > max_packet - 64:
                    raise StoreError(
                        f"{self.name}: a block of {len(d)} octets is larger than the server accepts"
                    )
                # a batch stays within the limit, unless it is one big block
                if self._batch and (
                    self._batch_bytes + n > limit or len(self._batch) >= self.batch_blocks
                ):
                    self._send_batch()
                b = d if type(d) is bytes else bytes(d)
                self._seq += 1
                self._unflushed[h] = (self._seq, b)
                self._unflushed_bytes += len(b)
                self._batch.append((h, b))
                self._batch_bytes += n
            if self._batch_bytes >= limit or len(self._batch) >= self.batch_blocks:
                self._send_batch()
            if self._unflushed_bytes > self.retain_bytes:
                self._retain_pressure()
        return hashcodes

    def _send_batch(self) -> None:
        """Send the blocks queued so far as one ADD (lock held)."""
        if not self._batch:
            return
        batch = self._batch
        link = self._live_link()
        if not self._batch:  # the reconnect resent it
            return
        self._batch, self._batch_bytes = [], 0
        try:
            fut = link.submit(P.OP_ADD, P.encode_blocks_parts([d for _, d in batch]))
        except LinkLost:
            return  # kept in _unflushed: resent after the reconnect
        self._acks.append((fut, [h for h, _ in batch]))
        self._reap()

    def _retain_pressure(self) -> None:
        """Too much unflushed data held: ask for a flush without waiting, and wait
        for older ones only when twice the allowance is held (lock held)."""
        if not self._flushes or self._flushes[-1][0].done():
            self._send_batch()
            link = self._live_link()
            try:
                self._flushes.append((link.submit(P.OP_FLUSH, []), self._seq))
            except LinkLost:
                return
        while self._unflushed_bytes > 2 * self.retain_bytes and self._flushes:
            self._flushes[0][0].exception()  # wait
            self._reap()

    def _reap(self, everything: bool = False) -> None:
        """Settle the answered ADDs and FLUSHes at the front of the queues (lock held)."""
        while self._acks and (everything or self._acks[0][0].done()):
            fut, hashcodes = self._acks.popleft()
            if fut.done():
                self._check_ack(fut, hashcodes)
        while self._flushes and (everything or self._flushes[0][0].done()):
            fut, mark = self._flushes.popleft()
            if fut.done() and fut.exception() is None:
                self._drop_flushed(mark)
            elif fut.done() and not isinstance(fut.exception(), LinkLost):
                self._add_error = self._add_error or fut.exception()

    def _check_ack(self, fut: Future, hashcodes: list[HashCode]) -> None:
        try:
            pkt = fut.result()
        except LinkLost:
            return  # still in _unflushed: resent on the next connection
        except VTError as e:
            # the server refused these blocks: they are reported, not retried
            for h in hashcodes:
                self._forget(h)
            self._add_error = self._add_error or e
            return
        # comparing octets is several times cheaper than decoding each hashcode
        if pkt.payload != P.encode_hashcodes(hashcodes):
            for h in hashcodes:
                self._forget(h)
            self._add_error = self._add_error or StoreError(
                f"{self.name}: the server acknowledged other hashcodes than were sent"
            )

    def _forget(self, h: HashCode) -> None:
        entry = self._unflushed.pop(h, None)
        if entry is not None:
            self._unflushed_bytes -= len(entry[1])

    def _drop_flushed(self, mark: int) -> None:
        u = self._unflushed
        if mark >= self._seq:  # the usual case: everything so far is durable
            u.clear()
            self._unflushed_bytes = 0
            return
        while u:
            h, (seq, data) = next(iter(u.items()))
            if seq > mark:
                break
            u.popitem(last=False)
            self._unflushed_bytes -= len(data)

    def _raise_add_error(self) -> None:
        e, self._add_error = self._add_error, None
        if e is not None:
            raise e

    def _wait_acks(self) -> None:
        """Send what is queued and wait until every ADD is answered (lock held),
        over fresh connections if need be; raise an add error if one came back."""
        for _ in range(MAX_ATTEMPTS):
            self._send_batch()
            link = self._live_link()
            for fut, _ in list(self._acks):
                fut.exception()  # wait for it, whatever it is
            self._reap()
            if link.dead is None:
                break
        else:
            raise StoreError(f"{self.name}: adds not acknowledged after {MAX_ATTEMPTS} connections")
        self._raise_add_error()

    def flush(self) -> None:
        """Return once every block added so far is acknowledged and flushed by the server."""
        self._check_open()
        if self.readonly:
            return
        with self._lock:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                self._wait_acks()
                mark = self._seq
                link = self._live_link()
                try:
                    link.submit(P.OP_FLUSH, []).result()
                except LinkLost as e:
                    if attempt == MAX_ATTEMPTS:
                        raise StoreError(f"{self.name}: flush failed: {e}") from None
                    continue
                break
            self._reap()
            self._drop_flushed(mark)
            self._flushes.clear()
            self._raise_add_error()

    @property
    def unflushed_count(self) -> int:
        """How many added blocks are not yet known to be durable on the server."""
        with self._lock:
            return len(self._unflushed)

    # -- reading --------------------------------------------------------------------------

    def _local(self, h: HashCode) -> bytes | None:
        with self._lock:
            entry = self._unflushed.get(h)
        return None if entry is None else entry[1]

    def _fetch(self, hashcodes: list[HashCode]) -> list[bytes | None]:
        """Fetch from the server, pipelined, verifying every block's hash."""
        out: dict[int, bytes | None] = {}
        todo = list(range(len(hashcodes)))
        while todo:
            batches = [todo[i : i + GET_BATCH] for i in range(0, len(todo), GET_BATCH)]
            answers = self._pipeline(
                [(P.OP_GET, [P.encode_hashcodes([hashcodes[j] for j in b])], 0) for b in batches]
            )
            todo = []
            for b, pkt in zip(batches, answers, strict=True):
                items = P.decode_get_answer(pkt.payload)
                if not items or len(items) > len(b):
                    raise FormatError(f"{self.name}: a GET answer of {len(items)} for {len(b)}")
                for j, item in zip(b, items, strict=False):
                    if item is not None:
                        item = bytes(item)
                        if not hashcodes[j].check(item):
                            raise CorruptBlockError(hashcodes[j], "the server sent other data")
                    out[j] = item
                todo.extend(b[len(items) :])
        return [out[i] for i in range(len(hashcodes))]

    def _get(self, hashcode: HashCode) -> bytes | None:
        data = self._local(hashcode)
        return data if data is not None else self._fetch([hashcode])[0]

    def get_many(self, hashcodes: Iterable[HashCode]) -> list[bytes]:
        self._check_open()
        hashcodes = [self.check_hashcode(h) for h in hashcodes]
        out: list[bytes | None] = [self._local(h) for h in hashcodes]
        need = [i for i, d in enumerate(out) if d is None]
        if need:
            for i, d in zip(need, self._fetch([hashcodes[i] for i in need]), strict=True):
                if d is None:
                    raise MissingBlockError(hashcodes[i], self.name)
                out[i] = d
        return out  # type: ignore[return-value]

    def _contains(self, hashcode: HashCode) -> bool:
        return self.contains_many([hashcode])[0]

    def contains_many(self, hashcodes: Iterable[HashCode]) -> list[bool]:
        self._check_open()
        hashcodes = list(hashcodes)
        out = [False] * len(hashcodes)
        need = []
        with self._lock:
            for i, h in enumerate(hashcodes):
                if type(h) is self.hashclass:
                    if h in self._unflushed:
                        out[i] = True
                    else:
                        need.append(i)
        batches = [need[i : i + CONTAINS_BATCH] for i in range(0, len(need), CONTAINS_BATCH)]
        answers = self._pipeline(
            [(P.OP_CONTAINS, [P.encode_hashcodes([hashcodes[j] for j in b])], 0) for b in batches]
        )
        for b, pkt in zip(batches, answers, strict=True):
            bits = P.decode_bitmap(pkt.payload)
            if len(bits) != len(b):
                raise FormatError(f"{self.name}: a CONTAINS answer of {len(bits)} for {len(b)}")
            for j, present in zip(b, bits, strict=True):
                out[j] = present
        return out

    def __len__(self) -> int:
        self._check_open()
        self._settle()
        return P.decode_count(self._call(P.OP_LENGTH, []).payload)

    def _settle(self) -> None:
        """Make the server see every add before a request about the whole store."""
        if not self.readonly:
            with self._lock:
                self._wait_acks()

    # -- listing ----------------------------------------------------------------------------

    def hashcodes(
        self, start: HashCode | None = None, after: bool = False, length: int | None = None
    ) -> Iterator[HashCode]:
        self._check_open()
        if start is not None:
            self.check_hashcode(start)
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self._settle()
        return self._listing(start, after, length)

    def _listing(self, start, after: bool, length: int | None) -> Iterator[HashCode]:
        left = length
        while left is None or left > 0:
            n = LIST_PAGE if left is None else min(left, LIST_PAGE)
            pkt = self._call(P.OP_HASHCODES, [P.encode_window(start, after, n)])
            page, end = P.decode_listing(pkt.payload, self.hashclass)
            if len(page) > n:
                raise FormatError(f"{self.name}: a listing of {len(page)} for {n}")
            yield from page
            if left is not None:
                left -= len(page)
            if end or not page:
                return
            start, after = page[-1], True

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        return self._listing(start, False, None)

    def hash_of_hashcodes(
        self, start: HashCode | None = None, after: bool = False, length: int | None = None
    ) -> tuple[HashCode, HashCode | None]:
        self._check_open()
        if start is not None:
            self.check_hashcode(start)
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self._settle()
        pkt = self._call(P.OP_HASH_OF_HASHCODES, [P.encode_window(start, after, length)])
        return P.decode_hoh(pkt.payload, self.hashclass)

    def _check_windows(self, windows) -> list[tuple[HashCode | None, int | None]]:
        out = []
        for start, length in windows:
            if start is not None:
                self.check_hashcode(start)
            if length is not None and length < 0:
                raise ValueError(f"length must be >= 0, got {length}")
            out.append((start, length))
        return out

    def hash_of_hashcodes_many(self, windows) -> list[tuple[HashCode, HashCode | None]]:
        """`hash_of_hashcodes(start, length=n)` of each window `(start, n)`
        (`n` None: to the end), all requests sent before any answer is awaited:
        one round trip for the lot (`vtstore.sync.stores` compares a round of
        key ranges this way)."""
        self._check_open()
        windows = self._check_windows(windows)
        self._settle()
        pkts = self._pipeline(
            [(P.OP_HASH_OF_HASHCODES, [P.encode_window(s, False, n)], 0) for s, n in windows]
        )
        return [P.decode_hoh(p.payload, self.hashclass) for p in pkts]

    def hashcodes_many(self, windows) -> list[list[HashCode]]:
        """`list(hashcodes(start, length=n))` of each window `(start, n)`, the
        first page of every window pipelined (one round trip when each fits a
        server page, 16384 keys); a window the server cut short is continued."""
        self._check_open()
        windows = self._check_windows(windows)
        self._settle()
        pkts = self._pipeline(
            [(P.OP_HASHCODES, [P.encode_window(s, False, n)], 0) for s, n in windows]
        )
        out = []
        for (_s, n), pkt in zip(windows, pkts, strict=True):
            page, end = P.decode_listing(pkt.payload, self.hashclass)
            if n is not None and len(page) > n:
                raise FormatError(f"{self.name}: a listing of {len(page)} for {n}")
            if not end and page and (n is None or len(page) < n):
                left = None if n is None else n - len(page)
                page = page + list(self._listing(page[-1], True, left))
            out.append(page)
        return out

    # -- indirect completeness ---------------------------------------------------------------

    def missing_blocks(self, block) -> tuple[int, list[HashCode]]:
        """Ask the server to walk the tree under `block`: `(checked, missing)`, with
        at most 64 missing hashcodes (see `vtstore.net.indirect.missing_blocks`)."""
        self._check_open()
        self._settle()
        pkt = self._call(P.OP_INDIRECT_COMPLETE, [block.encode()])
        complete, checked, missing = P.decode_completeness(pkt.payload, self.hashclass)
        return checked, missing

    def is_complete(self, block) -> bool:
        """True if every block reachable from `block` is on the server."""
        return not self.missing_blocks(block)[1]

    # -- archives ---------------------------------------------------------------------------

    def archive_names(self) -> list[str]:
        """The names of the archives the export offers."""
        self._check_open()
        obj = P.decode_json(self._call(P.OP_ARCHIVE_LIST, []).payload)
        names = obj.get("archives")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise FormatError(f"{self.name}: a bad archive list")
        return names

    def archive_last(self, name: str) -> str | None:
        """The text of archive `name`'s newest state (None if it has none)."""
        self._check_open()
        pkt = self._call(P.OP_ARCHIVE_LAST, [P.encode_json({"name": name})], P.F_JSON)
        last = P.decode_json(pkt.payload).get("last")
        if last is not None and not isinstance(last, str):
            raise FormatError(f"{self.name}: a bad archive state")
        return last

    def archive_update(self, name: str, text: str, if_newer: bool = False) -> bool:
        """Append state `text` to archive `name`.  Every block added so far is flushed
        first, so the archive never names blocks the server may not have.  With
        `if_newer`, the server appends it only if the archive's latest state is
        older (checked under its lock); return whether it was appended."""
        self._check_writable()
        self.flush()
        req = {"name": name, "text": text}
        if if_newer:
            req["if_newer"] = True
        pkt = self._call(P.OP_ARCHIVE_UPDATE, [P.encode_json(req)], P.F_JSON, idempotent=False)
        answer = P.decode_json(pkt.payload) if pkt is not None and pkt.payload else {}
        # a server before this flag answers without "appended": it appended
        return answer.get("appended", True) is not False

    def archive_states(self, name: str) -> list[str]:
        """The text of every state of archive `name`, oldest first.  A server
        before ARCHIVE_STATES answers E_UNKNOWN_OP: then its latest state only."""
        self._check_open()
        out: list[str] = []
        start = 0
        while True:
            req = P.encode_json({"name": name, "start": start})
            try:
                pkt = self._call(P.OP_ARCHIVE_STATES, [req], P.F_JSON)
            except P.RemoteError as e:
                if e.code != P.E_UNKNOWN_OP or start:
                    raise
                last = self.archive_last(name)
                return [] if last is None else [last]
            obj = P.decode_json(pkt.payload)
            states, after = obj.get("states"), obj.get("next")
            if not isinstance(states, list) or not all(isinstance(t, str) for t in states):
                raise FormatError(f"{self.name}: a bad list of archive states")
            out.extend(states)
            if after is None:
                return out
            # a page must move on, or a broken server would keep us here forever
            if type(after) is not int or after != start + len(states) or not states:
                raise FormatError(f"{self.name}: archive states continue at {after!r}")
            start = after

    def named_archive(self, name: str, create: bool = False) -> RemoteArchive:
        """The server's archive `name` (`vtstore.named_archives`); the first
        update creates it."""
        self._check_open()
        return RemoteArchive(self, name)

    @property
    def exports(self) -> dict:
        return {name: RemoteArchive(self, name) for name in self.archive_names()}

    # -- closing -------------------------------------------------------------------------------

    def _close(self) -> None:
        with self._lock:
            link, self._link = self._link, None
            self._unflushed.clear()
            self._unflushed_bytes = 0
            self._batch.clear()
            self._acks.clear()
            self._flushes.clear()
        if link is not None:
            link.close()


def open_stream_store(spec: str, readonly: bool = False, hashclass=None, **kw) -> StreamStore:
    """Open the client store for `tcp:host:port[#NAME]`, `unix:/path[#NAME]` or
    `|command`; `hashclass`, if given, must be the export's."""
    return StreamStore(spec, readonly=readonly, hashclass=hashclass, **kw)


__all__ = ["RemoteArchive", "StreamStore", "open_stream_store"]
