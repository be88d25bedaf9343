"""ProxyStore: one store made of several, by role.

Roles (DESIGN §3):

- `save`: every add goes to all of these, in parallel; the add returns when all
  have it, and fails if any fails.
- `read`: gets are tried here in order (default: the `save` stores).
- `read2`: tried in order when no `read` store has the block.
- `copy2`: a block found in a `read2` store is added to each of these (say, a
  local datadir in front of a remote store), after checking it hashes right.
  This is a cache the user asked for, so it happens under a read-only command
  too (a spec opens its copy2 stores writable even then).  A copy2 store that
  refuses a block (read-only, no permission, full) gets one warning and no more
  blocks from this proxy: the read itself has succeeded.
- `save2`: written in the background, best effort: an add returns without
  waiting for them; failures are logged and counted in `save2_errors`, never
  raised; `flush` waits for the queue and flushes them.

Membership is "in any `read` or `read2` store"; `len` and the ordered listing
cover the `read` stores (the union, de-duplicated).  A corrupt copy in one store
is logged and the next store tried.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from vtstore.errors import CorruptBlockError, HashClassMismatchError, MissingBlockError
from vtstore.hashes import HashCode
from vtstore.stores.base import Store

log = logging.getLogger(__name__)
SAVE2_QUEUE = 256


class ProxyStore(Store):
    """A store that fans out to other stores by role; it closes them on close
    when `owns` is true (as when built from a spec)."""

    def __init__(
        self,
        save: Sequence[Store] = (),
        read: Sequence[Store] | None = None,
        read2: Sequence[Store] = (),
        copy2: Sequence[Store] = (),
        save2: Sequence[Store] = (),
        *,
        name: str | None = None,
        readonly: bool = False,
        owns: bool = True,
    ):
        self.save = list(save)
        self.read = list(self.save if read is None else read)
        self.read2 = list(read2)
        self.copy2 = list(copy2)
        self.save2 = list(save2)
        everyone = self._unique(self.save + self.read + self.read2 + self.copy2 + self.save2)
        if not everyone:
            raise ValueError("a proxy store needs at least one store")
        hc = everyone[0].hashclass
        for s in everyone:
            if s.hashclass is not hc:
                raise HashClassMismatchError(
                    f"proxy stores must share one hash class: {everyone[0].name} is"
                    f" {hc.hashname}, {s.name} is {s.hashclass.hashname}"
                )
        self.owns = owns
        self._stores = everyone
        self._pool: ThreadPoolExecutor | None = None
        self._bg: ThreadPoolExecutor | None = None
        self._bg_futures: deque[Future] = deque()
        self._lock = threading.Lock()
        self.save2_errors = 0
        self._copy2_live = list(self.copy2)  # the copy2 stores not yet given up on
        super().__init__(
            name=name or self._describe(),
            hashclass=hc,
            readonly=readonly or not self.save,
        )

    @staticmethod
    def _unique(stores: Iterable[Store]) -> list[Store]:
        seen = set()
        out = []
        for s in stores:
            if id(s) not in seen:
                seen.add(id(s))
                out.append(s)
        return out

    def _describe(self) -> str:
        parts = []
        for role in ("save", "read", "read2", "copy2", "save2"):
            for s in getattr(self, role):
                parts.append(f"{role}={s.name}")
        return f"proxy({','.join(parts)})"

    # -- adding ----------------------------------------------------------------

    def _parallel(self, stores: Sequence[Store], fn) -> list:
        if len(stores) == 1:
            return [fn(stores[0])]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=min(8, len(self._stores)), thread_name_prefix="vt-proxy"
                    )
        futs = [self._pool.submit(fn, s) for s in stores]
        results = []
        first = None
        for f in futs:
            try:
                results.append(f.result())
            except BaseException as e:  # noqa: BLE001 - re-raised below
                first = first or e
        if first is not None:
            raise first
        return results

    @property
    def chunk_params(self):
        """The chunking parameters of the first `save` store (cuts follow where blocks go)."""
        return self.save[0].chunk_params if self.save else None

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Add to every `save` store (in parallel), queue for the `save2` stores."""
        self._check_writable()
        datas = [bytes(d) for d in datas]
        results = self._parallel(self.save, lambda s: s.add_many(datas))
        hs = results[0]
        for other in results[1:]:
            if other != hs:
                raise HashClassMismatchError("save stores disagree on hashcodes")
        if self.save2:
            self._queue_save2(datas)
        return hs

    def _queue_save2(self, datas) -> None:
        if self._bg is None:
            with self._lock:
                if self._bg is None:
                    self._bg = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vt-save2")
        while len(self._bg_futures) >= SAVE2_QUEUE:
            self._settle(self._bg_futures.popleft())
        while self._bg_futures and self._bg_futures[0].done():
            self._settle(self._bg_futures.popleft())
        self._bg_futures.append(self._bg.submit(self._save2, datas))

    def _save2(self, datas) -> None:
        for s in self.save2:
            try:
                s.add_many(datas)
            except Exception as e:  # noqa: BLE001 - best effort by definition
                self.save2_errors += 1
                log.warning("save2 store %s: %s", s.name, e)

    @staticmethod
    def _settle(f: Future) -> None:
        f.result()

    # -- reading ---------------------------------------------------------------

    def _try(self, stores: Sequence[Store], h: HashCode):
        corrupt = None
        for s in stores:
            try:
                return s[h], corrupt
            except MissingBlockError:
                continue
            except CorruptBlockError as e:
                log.warning("store %s: %s", s.name, e)
                corrupt = e
        return None, corrupt

    def _get(self, h: HashCode) -> bytes | None:
        data, corrupt = self._try(self.read, h)
        if data is not None:
            return data
        data, corrupt2 = self._try(self.read2, h)
        if data is not None:
            if not h.check(data):
                raise CorruptBlockError(h, "read2 store returned wrong data")
            self._copy(data)
            return data
        if corrupt or corrupt2:
            raise corrupt or corrupt2
        return None

    def _copy(self, data: bytes) -> None:
        for s in list(self._copy2_live):
            try:
                s.add(data)
            except Exception as e:  # noqa: BLE001 - the read itself succeeded
                with self._lock:
                    if s not in self._copy2_live:
                        continue  # another reader gave up on it first
                    self._copy2_live.remove(s)
                # once per store: the next block would fail the same way
                log.warning("copy2 store %s: %s (no more copies to it)", s.name, e)

    def _contains(self, h: HashCode) -> bool:
        return any(h in s for s in self.read) or any(h in s for s in self.read2)

    def contains_many(self, hashcodes) -> list[bool]:
        """Batch membership over the `read` then `read2` stores."""
        self._check_open()
        hs = list(hashcodes)
        found = [False] * len(hs)
        for s in self.read + self.read2:
            todo = [i for i, f in enumerate(found) if not f]
            if not todo:
                break
            for i, f in zip(todo, s.contains_many([hs[i] for i in todo]), strict=True):
                found[i] = f
        return found

    def __len__(self) -> int:
        self._check_open()
        if len(self.read) == 1:
            return len(self.read[0])
        return sum(1 for _ in self._iter_sorted(None))

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        its = [s.hashcodes(start=start) for s in self.read]
        last = None
        for h in heapq.merge(*its):
            if h != last:
                yield h
                last = h

    # -- life cycle ----------------------------------------------------------

    def flush(self) -> None:
        """Flush the `save` stores, drain the `save2` queue, flush the rest."""
        if self.closed:
            return
        if self.save:
            self._parallel(self.save, lambda s: s.flush())
        while self._bg_futures:
            self._settle(self._bg_futures.popleft())
        for s in self.save2 + self.copy2:
            try:
                s.flush()
            except Exception as e:  # noqa: BLE001 - best effort stores
                log.warning("flushing %s: %s", s.name, e)

    def _close(self) -> None:
        try:
            while self._bg_futures:
                self._settle(self._bg_futures.popleft())
        finally:
            for ex in (self._bg, self._pool):
                if ex is not None:
                    ex.shutdown(wait=True)
            self._bg = self._pool = None
            if self.owns:
                first = None
                for s in self._stores:
                    try:
                        s.close()
                    except Exception as e:  # noqa: BLE001 - close them all, then raise
                        first = first or e
                if first is not None:
                    raise first

    @property
    def exports(self) -> dict:
        """The exports of the `read` stores, the first store's winning a name clash."""
        out: dict = {}
        for s in reversed(self.read):
            out.update(s.exports)
        return out

    def info(self) -> dict:
        """A description for `vt info`."""
        d = {"type": "proxy", "hashclass": self.hashclass.hashname}
        for role in ("save", "read", "read2", "copy2", "save2"):
            d[role] = [s.name for s in getattr(self, role)]
        d["blocks"] = len(self)
        return d
