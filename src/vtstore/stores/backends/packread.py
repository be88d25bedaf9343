"""Batched reads of a `PackStore`: `get_many` as parallel ranged GETs.

A restore asks for the leaves of many files at once (hundreds of hashcodes a
call).  One ranged GET per block would cost a round trip each; one window at a
time in the caller's order (the single-get path, `PackStore._fetch`) leaves
the link idle between windows.  So a batch is planned like restic's restorer
plans its pack downloads:

1. each hashcode is looked up in the local index; blocks still in a spool, and
   records whose payload is in the frame cache, are answered at once;
2. the other records are grouped by pack and sorted; records closer than
   `GAP` octets share one request, a request stops growing at a size that
   spreads the batch over the download threads (at least `MIN_RANGE`, at most
   the store's `readahead`);
3. the requests run on a pool of `downloads` threads (obstore releases the GIL
   for the whole request), never more than that many at once, so the memory
   held besides the answer is bounded by `downloads` requests; each worker
   decodes its records once, caches their payloads (the next batch often
   begins in the same frame) and checks its blocks against their hashcodes in
   one batch hash.

The first missing block raises `MissingBlockError` before anything is fetched;
otherwise the failure earliest in the batch is raised (`CorruptBlockError`
naming the block for damage, `StoreError` for a request that failed), and no
damaged data is ever returned.  After the batch, the window after the last
block asked for is prefetched, as the single-get path does.
"""

from __future__ import annotations

import bisect
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from vtstore.codec import encode_varint
from vtstore.errors import CorruptBlockError, MissingBlockError
from vtstore.hashes import HashCode
from vtstore.stores.index import IndexEntry
from vtstore.stores.vtd import CRC_SIZE, MAX_BLOCK_SIZE, MAX_PAYLOAD

#: records at most this far apart are fetched by one request
GAP = 1 << 20
#: a request is not split below this size to spread a batch over the threads
MIN_RANGE = 1 << 20

_pool_lock = threading.Lock()


def record_span(e: IndexEntry) -> tuple[int, int]:
    """Where the record holding entry `e` begins and ends in its pack."""
    head = len(encode_varint(e.flags)) + len(encode_varint(e.payload_length))
    return e.payload_offset - head, e.payload_offset + e.payload_length + CRC_SIZE


def _pool(store) -> ThreadPoolExecutor:
    with _pool_lock:
        if store._getters is None:
            store._getters = ThreadPoolExecutor(
                max_workers=store.downloads, thread_name_prefix="vt-get"
            )
        return store._getters


def _check_entry(h: HashCode, e: IndexEntry) -> None:
    # an entry from a damaged cache must not ask for a huge read
    if e.data_length > MAX_BLOCK_SIZE or e.payload_length > MAX_PAYLOAD:
        raise CorruptBlockError(h, f"index entry out of bounds {tuple(e)} (vt fsck --repair)")


def _plan(items: list, cap: int) -> list[tuple[int, int, list]]:
    """Coalesce the wanted records of one pack into requests `(start, end, items)`."""
    spans = sorted((record_span(e), i, h, e) for i, h, e in items)
    out: list[tuple[int, int, list]] = []
    for (s, t), i, h, e in spans:
        if out and s - out[-1][1] <= GAP and max(t, out[-1][1]) - out[-1][0] <= cap:
            cur = out[-1]
            out[-1] = (cur[0], max(cur[1], t), cur[2])
            cur[2].append((i, h, e))
        else:
            out.append((s, t, [(i, h, e)]))
    return out


def _fetch_range(store, num: int, pid: str, start: int, end: int, items: list):
    """A worker: GET `[start, end)` of pack `pid`, decode and cache its records,
    cut out and check the blocks of `items`; return `(found, errors)`, lists
    of `(position, data)` and `(position, exception)`."""
    buf = store._get_range(num, pid, start, end)
    payloads: dict = {}
    stops: list[tuple[int, str]] = []
    pos = 0
    for s, _ in sorted({record_span(e) for _, _, e in items}):
        off = s - start
        if off < pos:
            continue
        # parse from here; a damaged record stops the walk, the next wanted
        # record (its start known from the index) resumes it
        got, pos, why = store._cache_records(num, start, buf, off)
        payloads.update(got)
        if why is not None:
            stops.append((start + pos, why))
            pos = max(pos, off + 1)
    found: list[tuple[int, HashCode, bytes]] = []
    errors: list[tuple[int, BaseException]] = []
    for i, h, e in items:
        payload = payloads.get((num, e.payload_offset))
        if payload is None:
            s = record_span(e)[0]
            why = next((w for at, w in reversed(stops) if at <= s), None) or "no intact record"
            errors.append((i, CorruptBlockError(h, f"pack {pid} at {s}: {why}")))
            continue
        found.append((i, h, payload[e.data_offset : e.data_offset + e.data_length]))
    good, bad = verify(store, found, pid)
    return good, errors + bad


def verify(store, found: list, pid: str):
    """Check blocks `(position, hashcode, data)` in one batch hash: `(good, errors)`."""
    hashes = store.hashclass.from_data_many([d for _, _, d in found])
    good: list[tuple[int, bytes]] = []
    errors: list[tuple[int, BaseException]] = []
    for (i, h, data), got in zip(found, hashes, strict=True):
        if got != h:
            errors.append((i, CorruptBlockError(h, f"pack {pid} does not hold it")))
        else:
            good.append((i, data))
    return good, errors


def get_many(store, hashcodes) -> list[bytes]:
    """The data of each hashcode, in order (see the module docstring)."""
    store._check_open()
    hs = [store.check_hashcode(h) for h in hashcodes]
    out: list = [None] * len(hs)
    firsts: dict[bytes, int] = {}
    dups: list[tuple[int, int]] = []
    cached: list[tuple[int, HashCode, bytes]] = []
    remote: list[tuple[int, HashCode, IndexEntry]] = []
    digests = [bytes(h) for h in hs]
    for i, d in enumerate(digests):
        j = firsts.setdefault(d, i)
        if j != i:
            dups.append((i, j))
    # one read transaction for the batch (a lookup apiece costs 5x as much
    # in a busy process: each gives up the GIL twice more)
    found = dict(zip(firsts, store.index.get_many(list(firsts)), strict=True))
    for i, h in enumerate(hs):
        d = digests[i]
        if firsts[d] != i:
            continue
        e = found[d]
        if e is None:  # in a spool, or in an index object not loaded yet
            data = store._get(h)
            if data is None:
                raise MissingBlockError(h, store.name)
            out[i] = data
            continue
        _check_entry(h, e)
        remote.append((i, h, e))
    errors: list[tuple[int, BaseException]] = []
    if remote:
        # a prefetch on its way may hold some of them: wait for it, then look
        starts = sorted((e.filenum, record_span(e)[0]) for _, _, e in remote)
        wait(
            [
                f
                for (num, at), (f, end) in list(store._inflight.items())
                if _any_in(starts, num, at, end)
            ]
        )
        todo = []
        for i, h, e in remote:
            key = (e.filenum, e.payload_offset)
            payload = store._frames.get(key)
            if payload is None:
                todo.append((i, h, e))
                continue
            cached.append((i, h, payload[e.data_offset : e.data_offset + e.data_length]))
            after = store._trigger.pop(key, None)
            if after is not None:  # reading into a prefetched window: fetch the next
                store._prefetch(e.filenum, *after)
        errors += _fetch_all(store, todo, out)
        good, bad = verify(store, cached, "(cached)")
        errors += bad
        for i, data in good:
            out[i] = data
        if todo:
            last = max(todo, key=lambda x: x[0])[2]
            pid, size = store._pack_of(last.filenum)
            store._prefetch(last.filenum, pid, record_span(last)[1], size)
    if errors:
        raise min(errors, key=lambda x: x[0])[1]
    for i, j in dups:
        out[i] = out[j]
    return out


def _any_in(starts: list[tuple[int, int]], num: int, lo: int, hi: int) -> bool:
    """Whether a record of pack `num` in sorted `starts` begins in `[lo, hi)`."""
    k = bisect.bisect_left(starts, (num, lo))
    return k < len(starts) and starts[k] < (num, hi)


def _fetch_all(store, todo: list, out: list) -> list[tuple[int, BaseException]]:
    """Fetch the records of `todo` in parallel requests; fill `out`; return the errors."""
    if not todo:
        return []
    by_pack: dict[int, list] = {}
    for item in todo:
        by_pack.setdefault(item[2].filenum, []).append(item)
    span = sum(record_span(e)[1] - record_span(e)[0] for _, _, e in todo)
    cap = max(MIN_RANGE, min(store.readahead, span // store.downloads + 1))
    requests = []
    errors: list[tuple[int, BaseException]] = []
    for num, items in by_pack.items():
        pid, size = store._pack_of(num)
        for s, t, its in _plan(items, cap):
            if t > size:
                why = f"pack {pid} is {size} octets, its index says more"
                errors += [(i, CorruptBlockError(h, why)) for i, h, _ in its]
            else:
                requests.append((num, pid, s, t, its))
    # in the caller's order, so the first blocks asked for come first
    requests.sort(key=lambda r: min(i for i, _, _ in r[4]))
    pool = _pool(store)
    running: dict[Future, list] = {}
    pending = iter(requests)
    done_all = False
    while running or not done_all:
        while not done_all and len(running) < store.downloads:
            r = next(pending, None)
            if r is None:
                done_all = True
                break
            running[pool.submit(_fetch_range, store, *r)] = r[4]
        if not running:
            break
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for f in finished:
            items = running.pop(f)
            try:
                good, bad = f.result()
            except Exception as x:  # noqa: BLE001 - a failed request: its first block's error
                errors.append((min(i for i, _, _ in items), x))
                continue
            for i, data in good:
                out[i] = data
            errors += bad
    return errors
