"""Whole-store sync by hash of hashcodes: make two stores hold the same blocks.

The two stores' key spaces are compared range by range.  A range is an
interval `[lo, hi)` of digest values (digests are uniform, so a range's share
of the key space predicts how many keys it holds); it is compared by asking
each store for the hash of the hashcodes in a window starting at `lo`
(`Store.hash_of_hashcodes(start, length)`, one HASH_OF_HASHCODES request on a
network store).  The window's length is the expected count of the range plus a
margin, so it normally reaches past `hi`: equal hashes then prove the range
equal; a window that stops short of `hi` is continued in a follow-up range
after its last key.  (A window reaching past `hi` can make a range look
different for a difference just past it: a needless descent, never a missed
difference.)  A range whose hashes differ is split into sub-ranges, or,
once small (about `LEAF` keys), listed on both sides and diffed.  A side with
no keys left from `lo` on is not asked again: the other side's keys there are
listed, in parallel chunks.

Every range of one round is asked for at once: on a network store
(`vtstore.net.StreamStore`) the round's requests are pipelined on the
connection (`StreamStore.hash_of_hashcodes_many`, `hashcodes_many`), so a
round costs one round trip whatever its size.  Two stores of
N keys differing by d blocks reconcile in a handful of rounds (the depth of the
range tree, about 4), against N/4096 sequential pages to list every key.

The blocks found on one side only are then copied (both ways with
`both_ways`), fetched in batches with `get_many`, each hashed against its
hashcode before it is added: a corrupt or vanished source block is reported in
`SyncReport.problems` and never copied.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vtstore.errors import (
    CorruptBlockError,
    FormatError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
)
from vtstore.hashes import HashCode
from vtstore.stores.base import Store

#: a differing range expected to hold at most this many keys is listed, not split
LEAF = 64
#: most sub-ranges one differing range is split into (after the first split)
FANOUT = 16
#: the first split aims at ranges of about this many keys, in at most MAX_FIRST ranges
FIRST_RANGE_KEYS = 1024
MAX_FIRST = 4096
#: keys asked for per listing request (a network server answers at most 16384)
LIST_PAGE = 4096
#: most comparisons sent to a store in one round
ROUND_MAX = 2048
#: most hashcodes one round of listings asks for (bounds the memory a round holds)
LIST_ROUND_KEYS = 1 << 18
#: blocks fetched per `get_many` when copying (a network store pipelines them:
#: one round trip)
COPY_BATCH = 1024


@dataclass
class SyncReport:
    """What `sync_stores` did (or, with `dry_run`, would do).

    `sent_*`: blocks copied from the source to the destination; `received_*`:
    from the destination to the source (`both_ways`).  `dst_only` counts the
    blocks only the destination holds (copied back only with `both_ways`).
    `round_trips` counts the rounds of requests (each round's requests go out
    together; on a network store a round is one round trip), `requests` the
    requests themselves (hash-of-hashcodes windows, listing pages, fetch and
    add batches), `ranges_compared` the key ranges whose hashes were compared,
    `keys_listed` the hashcodes listed (both sides).
    """

    src: str = ""
    dst: str = ""
    dry_run: bool = False
    both_ways: bool = False
    identical: bool = False
    src_blocks: int = 0
    dst_blocks: int = 0
    sent_blocks: int = 0
    sent_bytes: int = 0
    received_blocks: int = 0
    received_bytes: int = 0
    dst_only: int = 0
    round_trips: int = 0
    requests: int = 0
    ranges_compared: int = 0
    keys_listed: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human summary, one fact per line."""
        verb = "would send" if self.dry_run else "sent"
        out = [f"{self.src} -> {self.dst}: {self.src_blocks} and {self.dst_blocks} blocks"]
        if self.identical:
            out.append("the stores hold the same blocks")
        b = "" if self.dry_run else f", {self.sent_bytes} bytes"
        out.append(f"{verb} {self.sent_blocks} blocks{b}")
        if self.both_ways:
            verb = "would receive" if self.dry_run else "received"
            b = "" if self.dry_run else f", {self.received_bytes} bytes"
            out.append(f"{verb} {self.received_blocks} blocks{b}")
        elif self.dst_only:
            out.append(f"{self.dst_only} blocks only in {self.dst} (not copied back)")
        out.append(
            f"{self.ranges_compared} ranges compared, {self.keys_listed} hashcodes listed,"
            f" {self.requests} requests in {self.round_trips} round trips,"
            f" {self.seconds:.2f}s"
        )
        out.extend(f"problem: {p}" for p in self.problems)
        return out

    def to_json(self) -> dict:
        """The report as a JSON-able dict."""
        return {
            "src": self.src,
            "dst": self.dst,
            "dry_run": self.dry_run,
            "both_ways": self.both_ways,
            "identical": self.identical,
            "src_blocks": self.src_blocks,
            "dst_blocks": self.dst_blocks,
            "sent_blocks": self.sent_blocks,
            "sent_bytes": self.sent_bytes,
            "received_blocks": self.received_blocks,
            "received_bytes": self.received_bytes,
            "dst_only": self.dst_only,
            "round_trips": self.round_trips,
            "requests": self.requests,
            "ranges_compared": self.ranges_compared,
            "keys_listed": self.keys_listed,
            "seconds": round(self.seconds, 3),
            "problems": list(self.problems),
        }


# -- one side's requests, batched ---------------------------------------------------------------


class _Peer:
    """One store as the sync asks it: a round's windows at once, counted.

    A store with `hash_of_hashcodes_many`/`hashcodes_many` (a `StreamStore`
    pipelines them: one round trip a round) gets each round as one call; any
    other store answers window by window, locally.
    """

    def __init__(self, store: Store):
        self.store = store
        self.requests = 0

    def start(self) -> tuple[int, HashCode, HashCode | None]:
        """`(count, hash, last)` of the whole store: one round (the count is
        asked from another thread, so on a network store both requests are in
        flight together)."""
        self.requests += 2
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vt-sync-len") as ex:
            count = ex.submit(len, self.store)
            h, last = self.store.hash_of_hashcodes()
            return count.result(), h, last

    def hoh(self, windows: list[tuple[HashCode | None, int | None]]):
        """`(hash, last)` of each window `(start, length)`."""
        self.requests += len(windows)
        return self.store.hash_of_hashcodes_many(windows)

    def pages(self, windows: list[tuple[HashCode | None, int]]):
        """`(hashcodes, end)` of each window `(start, length)`; `end`: nothing after."""
        self.requests += len(windows)
        pages = self.store.hashcodes_many(windows)
        return [(keys, len(keys) < n) for keys, (_s, n) in zip(pages, windows, strict=True)]


# -- the comparison -------------------------------------------------------------------------------


class _Leaf:
    """A range being listed on both sides (a side already known empty there is done)."""

    __slots__ = ("lo", "hi", "keys", "next")

    def __init__(self, lo: int, hi: int, a_empty: bool = False, b_empty: bool = False):
        self.lo, self.hi = lo, hi
        self.keys: list[list[HashCode]] = [[], []]
        self.next: list[int | None] = [None if a_empty else lo, None if b_empty else lo]


class _Walk:
    """The range walk over two peers; yields the differences round by round."""

    def __init__(self, a: _Peer, b: _Peer, report: SyncReport):
        self.a, self.b = a, b
        self.report = report
        self.H = a.store.hashclass
        self.bits = 8 * self.H.digest_size
        self.top = 1 << self.bits
        self.density = 0.0
        self.last: list[HashCode | None] = [None, None]
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vt-sync-stores")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _key(self, lo: int) -> HashCode | None:
        return None if lo == 0 else self.H(lo.to_bytes(self.H.digest_size, "big"))

    def _expected(self, lo: int, hi: int) -> float:
        return self.density * (hi - lo)

    def _window(self, lo: int, hi: int) -> int:
        e = self._expected(lo, hi)
        return max(1, math.ceil(e + 3 * math.sqrt(e) + 4))

    def _both(self, fa, fb):
        """Run one request batch on each side at once; one round."""
        self.report.round_trips += 1
        ja = self._pool.submit(fa) if fa is not None else None
        rb = fb() if fb is not None else None
        ra = ja.result() if ja is not None else None
        return ra, rb

    def differences(self):
        """Yield `(only_in_a, only_in_b)` lists of hashcodes as they are found."""
        r = self.report
        (na, ha, la), (nb, hb, lb) = self._both(self.a.start, self.b.start)
        r.src_blocks, r.dst_blocks = na, nb
        r.ranges_compared += 1
        self.last = [la, lb]
        if ha == hb:
            r.identical = True
            return
        n = max(r.src_blocks, r.dst_blocks, 1)
        self.density = n / self.top
        cmp: deque[tuple[int, int]] = deque()
        leaves: deque[_Leaf] = deque()
        if la is None or lb is None or n <= 2 * LEAF:
            self._list_range(0, self.top, la is None, lb is None, leaves)
        else:
            k = min(MAX_FIRST, max(2, math.ceil(n / FIRST_RANGE_KEYS)))
            cmp.extend(self._split(0, self.top, k))
        while cmp or leaves:
            if cmp:
                batch = [cmp.popleft() for _ in range(min(len(cmp), ROUND_MAX))]
                self._compare(batch, cmp, leaves)
            else:
                yield from self._list(leaves)

    def _split(self, lo: int, hi: int, k: int):
        bounds = [lo + (hi - lo) * i // k for i in range(k + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i] < bounds[i + 1]]

    def _list_range(self, lo, hi, a_empty, b_empty, leaves) -> None:
        """List `[lo, hi)`: in chunks of about a page each, so a big range is
        listed in parallel rounds rather than page after page."""
        k = max(1, math.ceil(self._expected(lo, hi) / (LIST_PAGE * 0.75)))
        for clo, chi in self._split(lo, hi, k):
            leaves.append(_Leaf(clo, chi, a_empty, b_empty))

    def _past(self, last: HashCode, lo: int, what: str) -> int:
        """Where a window that ended at `last` continues; a peer whose window
        ends before it began (a broken store or server) would loop forever."""
        nxt = int.from_bytes(last, "big") + 1
        if nxt <= lo:
            raise FormatError(f"a {what} window from {self._key(lo)} ended before it: {last}")
        return nxt

    def _covered(self, side: int, last: HashCode | None, hi: int) -> bool:
        return last is None or last == self.last[side] or int.from_bytes(last, "big") >= hi - 1

    def _compare(self, batch, cmp, leaves) -> None:
        wins = [(self._key(lo), self._window(lo, hi)) for lo, hi in batch]
        ra, rb = self._both(lambda: self.a.hoh(wins), lambda: self.b.hoh(wins))
        self.report.ranges_compared += len(batch)
        for (lo, hi), (ha, la), (hb, lb) in zip(batch, ra, rb, strict=True):
            if ha == hb:
                if not (self._covered(0, la, hi) and self._covered(1, lb, hi)):
                    # the windows stopped short of hi: compare the rest
                    cmp.append((self._past(la, lo, "hash of hashcodes"), hi))
                continue
            e = self._expected(lo, hi)
            if la is None or lb is None:
                # one side holds nothing from lo on: list the other side
                self._list_range(lo, hi, la is None, lb is None, leaves)
            elif e <= LEAF or hi - lo < FANOUT:
                leaves.append(_Leaf(lo, hi))
            else:
                cmp.extend(self._split(lo, hi, min(FANOUT, max(2, math.ceil(e / LEAF)))))

    def _list(self, leaves: deque[_Leaf]):
        batch: list[_Leaf] = []
        asks: list[list[tuple[_Leaf, tuple]]] = [[], []]
        weight = 0
        while leaves and weight < LIST_ROUND_KEYS:
            leaf = leaves.popleft()
            batch.append(leaf)
            n = min(LIST_PAGE, self._window(leaf.lo, leaf.hi))
            weight += n * ((leaf.next[0] is not None) + (leaf.next[1] is not None))
            for side in (0, 1):
                if leaf.next[side] is not None:
                    asks[side].append((leaf, (self._key(leaf.next[side]), n)))
        peers = (self.a, self.b)
        fa, fb = (
            (lambda s=s: peers[s].pages([w for _, w in asks[s]])) if asks[s] else None
            for s in (0, 1)
        )
        answers = self._both(fa, fb)
        for side in (0, 1):
            for (leaf, _), (keys, end) in zip(asks[side], answers[side] or (), strict=True):
                self.report.keys_listed += len(keys)
                inside = [h for h in keys if int.from_bytes(h, "big") < leaf.hi]
                leaf.keys[side].extend(inside)
                if end or len(inside) < len(keys) or not keys:
                    leaf.next[side] = None
                else:
                    leaf.next[side] = self._past(keys[-1], leaf.next[side], "listing")
        for leaf in batch:
            if leaf.next[0] is None and leaf.next[1] is None:
                sa, sb = set(leaf.keys[0]), set(leaf.keys[1])
                only_a = sorted(sa - sb)
                only_b = sorted(sb - sa)
                if only_a or only_b:
                    yield only_a, only_b
            else:
                leaves.append(leaf)


# -- copying --------------------------------------------------------------------------------------


def _copy(
    src: Store,
    dst: Store,
    hashcodes: list[HashCode],
    report: SyncReport,
    problems: list[str],
) -> tuple[int, int]:
    """Copy `hashcodes` from `src` to `dst`, verifying each block; `(blocks, bytes)`."""
    blocks = nbytes = 0
    for i in range(0, len(hashcodes), COPY_BATCH):
        batch = hashcodes[i : i + COPY_BATCH]
        datas = _fetch(src, batch, report, problems)
        good_h, good_d = [], []
        for h, d in zip(batch, datas, strict=True):
            if d is None:
                continue
            if not h.check(d):
                problems.append(f"corrupt block {h} in {src.name}: not copied")
                continue
            good_h.append(h)
            good_d.append(d)
        if good_d:
            report.requests += 1
            got = dst.add_many(good_d)
            if got != good_h:  # pragma: no cover - verified above; a broken store
                problems.append(f"{dst.name} stored other hashcodes than were sent")
            blocks += len(good_d)
            nbytes += sum(len(d) for d in good_d)
    return blocks, nbytes


def _fetch(src: Store, batch: list[HashCode], report: SyncReport, problems: list[str]):
    """The data of each of `batch` (None for a bad block, reported): one
    `get_many`, asked again without each bad block its error names (so k bad
    blocks cost k more round trips, not one per block of the batch)."""
    todo = list(batch)
    got: dict[HashCode, bytes] = {}
    while todo:
        report.requests += 1
        report.round_trips += 1
        try:
            got.update(zip(todo, src.get_many(todo), strict=True))
            break
        except (CorruptBlockError, MissingBlockError) as e:
            bad = e.hashcode
            if not isinstance(bad, HashCode) or bad not in todo:
                # an error that does not say which: block by block
                for h in todo:
                    report.requests += 1
                    report.round_trips += 1
                    d = _get_one(src, h, problems)
                    if d is not None:
                        got[h] = d
                break
            _report_bad(src, e, problems)
            todo.remove(bad)
    return [got.get(h) for h in batch]


def _report_bad(src: Store, e: Exception, problems: list[str]) -> None:
    if isinstance(e, CorruptBlockError):
        problems.append(f"{e} (in {src.name}): not copied")
    else:
        problems.append(f"block {e.hashcode} vanished from {src.name} during the sync: not copied")


def _get_one(src: Store, h: HashCode, problems: list[str]):
    try:
        return src[h]
    except (CorruptBlockError, MissingBlockError) as e:
        e.hashcode = h
        _report_bad(src, e, problems)
    return None


def sync_stores(
    src: Store,
    dst: Store,
    *,
    both_ways: bool = False,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SyncReport:
    """Copy every block `src` holds and `dst` lacks into `dst` (and, with
    `both_ways`, every block only `dst` holds into `src`).

    The stores are compared by hash of hashcodes over key ranges (see the module
    docstring), so two large stores that differ by little cost few round trips.
    `dry_run`: compare and count, copy nothing.  `progress(done)` is called with
    the number of blocks copied so far after each batch.  Both stores must have
    the same hash class (`vt migrate` copies into another); a store that would
    be written must be writable.  A source block that is corrupt or vanishes is
    reported in `problems` and not copied.
    """
    if src.hashclass is not dst.hashclass:
        raise HashClassMismatchError(
            f"{src.name} holds {src.hashclass.hashname} blocks and {dst.name} holds"
            f" {dst.hashclass.hashname} blocks: a store sync copies blocks as they are;"
            " use 'vt migrate' to copy into a store of another hash class"
        )
    if not dry_run:
        for st in (dst, src) if both_ways else (dst,):
            if st.readonly:
                raise ReadOnlyError(f"store {st.name} is read-only: cannot sync into it")
    t0 = time.monotonic()
    report = SyncReport(src=src.name, dst=dst.name, dry_run=dry_run, both_ways=both_ways)
    for st in (src, dst):
        if not st.readonly:
            st.flush()  # a network store's own adds are then seen by its server
    a, b = _Peer(src), _Peer(dst)
    walk = _Walk(a, b, report)
    pending: list[list[HashCode]] = [[], []]
    done = 0

    def copy(final: bool) -> None:
        nonlocal done
        for side, (frm, to) in enumerate(((src, dst), (dst, src))):
            keys = pending[side]
            if not keys or (len(keys) < COPY_BATCH and not final):
                continue
            cut = len(keys) if final else len(keys) - len(keys) % COPY_BATCH
            todo, pending[side] = keys[:cut], keys[cut:]
            n, size = _copy(frm, to, todo, report, report.problems)
            if side == 0:
                report.sent_blocks += n
                report.sent_bytes += size
            else:
                report.received_blocks += n
                report.received_bytes += size
            done += n
            if progress is not None:
                progress(done)

    try:
        for only_a, only_b in walk.differences():
            report.dst_only += len(only_b)
            if dry_run:
                report.sent_blocks += len(only_a)
                if both_ways:
                    report.received_blocks += len(only_b)
                continue
            pending[0].extend(only_a)
            if both_ways:
                pending[1].extend(only_b)
            copy(final=False)
        if not dry_run:
            copy(final=True)
    finally:
        walk.close()
    if report.sent_blocks and not dry_run:
        dst.flush()
        report.round_trips += 1
    if report.received_blocks and not dry_run:
        src.flush()
        report.round_trips += 1
    report.requests += a.requests + b.requests
    report.seconds = time.monotonic() - t0
    return report


__all__ = ["SyncReport", "sync_stores"]
