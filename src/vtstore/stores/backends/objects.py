"""`BlockObjectStore`: one object per block, named `<hex>.<hashname>`.

The seed's layout: block `h` is the object `<prefix>/<h.hex>.<hashname>`, its
content the block itself, so any HTTP client or CDN can fetch a block by its
name.  Beside the blocks: `config` (`{"layout": "blocks", ...}`) and
`archives/` (as in the pack layout).

An object store answers about a thousand small requests a second per
connection, so every batch call runs its requests on a pool of threads
(`parallel`, default 32): `add_many` asks which blocks are there (HEAD), then
uploads the others; uploads run behind the caller, at most `parallel * 8`
outstanding, and `flush` returns once all of them are acknowledged.  Blocks
being uploaded are answered from memory meanwhile.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from vtstore.errors import CorruptBlockError
from vtstore.hashes import HashCode
from vtstore.stores.backends.base import Backend
from vtstore.stores.backends.layout import LayoutStore

DEFAULT_PARALLEL = 32


class BlockObjectStore(LayoutStore):
    """Blocks as objects on `backend` (see the module docstring)."""

    add_copies = True
    layout = "blocks"

    def __init__(
        self,
        backend: Backend,
        *,
        parallel: int = DEFAULT_PARALLEL,
        **common,
    ):
        """`common`: `LayoutStore`'s hashclass, default_hashclass, readonly,
        name and config."""
        super().__init__(backend, **common)
        self.parallel = max(1, parallel)
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="vt-obj")
        self._lock = threading.Lock()
        self._pending: dict[bytes, bytes] = {}
        self._puts: deque[Future] = deque()
        self._failed: BaseException | None = None
        self._suffix = "." + self.hashclass.hashname
        self._name_re = re.compile(
            rf"[0-9a-f]{{{2 * self.hashclass.digest_size}}}{re.escape(self._suffix)}"
        )

    def object_name(self, h: HashCode) -> str:
        """The object holding block `h`."""
        return f"{h.hex()}{self._suffix}" if hasattr(h, "hex") else f"{h}{self._suffix}"

    # -- writing -------------------------------------------------------------------

    def _put(self, d: bytes, h: HashCode, data: bytes) -> None:
        try:
            self.backend.put(self.object_name(h), data)
        except BaseException as e:
            if self._failed is None:
                self._failed = e
            raise
        finally:
            with self._lock:
                self._pending.pop(d, None)

    def add_many(self, datas: Sequence) -> list[HashCode]:
        return self.add_many_reporting(datas)[0]

    def add_many_reporting(self, datas: Sequence):
        datas, hs = self._start_add(datas)
        if not datas:
            return hs, []
        present = self.contains_many(hs)
        new = [False] * len(hs)
        seen = set()
        for i, (h, p) in enumerate(zip(hs, present, strict=True)):
            d = bytes(h)
            if p or d in seen:
                continue
            seen.add(d)
            new[i] = True
            data = datas[i] if type(datas[i]) is bytes else bytes(datas[i])
            with self._lock:
                self._pending[d] = data
            self._puts.append(self._pool.submit(self._put, d, h, data))
            while len(self._puts) > self.parallel * 8 or (self._puts and self._puts[0].done()):
                self._puts.popleft().result()
        return hs, new

    def flush(self) -> None:
        """Return when every block added so far is acknowledged by the server."""
        if self.readonly or self.closed:
            return
        while self._puts:
            self._puts.popleft().result()
        self._check_failed()

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        self.backend.close()

    # -- reading ---------------------------------------------------------------

    def _contains(self, h: HashCode) -> bool:
        return bytes(h) in self._pending or self.backend.stat(self.object_name(h)) is not None

    def contains_many(self, hashcodes) -> list[bool]:
        self._check_open()
        hs = list(hashcodes)
        ok = [type(h) is self.hashclass for h in hs]
        if len(hs) <= 1:
            return [o and self._contains(h) for h, o in zip(hs, ok, strict=True)]
        futs = [
            self._pool.submit(self._contains, h) if o else None for h, o in zip(hs, ok, strict=True)
        ]
        return [f is not None and f.result() for f in futs]

    def _get(self, h: HashCode) -> bytes | None:
        data = self._pending.get(bytes(h))
        if data is not None:
            return data
        data = self.backend.get(self.object_name(h))
        if data is None:
            return None
        if not h.check(data):
            raise CorruptBlockError(h, f"{self.backend.url}/{self.object_name(h)} does not match")
        return data

    def get_many(self, hashcodes) -> list[bytes]:
        """The data of each hashcode, in order: one GET per distinct block, up
        to `parallel` at once; raises for the earliest missing or corrupt one."""
        hs = list(hashcodes)
        if len(hs) <= 1:
            return [self[h] for h in hs]
        distinct = list(dict.fromkeys(hs))
        got = dict(zip(distinct, self._pool.map(self.__getitem__, distinct), strict=True))
        return [got[h] for h in hs]

    def __len__(self) -> int:
        self._check_open()
        return sum(1 for _ in self._iter_sorted(None))

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        import heapq

        with self._lock:
            pend = sorted(self._pending)
        if start is not None:
            pend = [p for p in pend if p >= bytes(start)]
        after = None if start is None else f"{start.hex()}"  # sorts before hex + suffix
        match = self._name_re.fullmatch
        hc = self.hashclass
        listed = (
            bytes.fromhex(o.name[: -len(self._suffix)])
            for o in self.backend.list("", start_after=after)
            if match(o.name)
        )
        last = None
        for d in heapq.merge(listed, pend):
            if d != last:
                yield hc(d)
                last = d

    def info(self) -> dict:
        """What `vt info` shows."""
        return {
            "type": "blocks",
            "name": self.name,
            "url": self.backend.url,
            "hashclass": self.hashclass.hashname,
            "blocks": len(self),
            "uuid": (self.config or {}).get("uuid"),
        }
