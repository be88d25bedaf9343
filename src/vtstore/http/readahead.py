"""The HTTP client store's read-ahead: the blocks a reader will ask for next,
fetched before it asks, in groups, each group one buffer.

Reading a file through a remote store block by block would cost a round trip
per leaf; so when the store reads a block whose data are the refs of an
indirect block, its children are planned: cut into groups of about
`GROUP_BYTES` (at most `GROUP_MAX` hashcodes), each fetched by one request and
held as one buffer (`Group`: the blocks end to end, checked against their
hashcodes before anything is kept).  A reader then takes them (`take`), and a
run of consecutive blocks of one group comes out as a slice of its buffer,
without a copy (`HTTPStore.read_joined`).

Bounded: what is held plus what is being fetched stays under `budget` octets,
at most `in_flight` requests at once; the plan is fetched in order as the
reader takes what came.  The children of a planned indirect block that are
themselves indirect blocks are fetched as a group too, and their own children
planned when the fetching reaches them, so that the stream does not stop at
each indirect block of a large file.  A block the reader needs that is planned
but not yet asked for is asked for at once; one that is being fetched is
waited for (not asked twice).  A fetch that fails keeps nothing: the reader
then asks itself and sees the error.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

#: A read-ahead request asks for about this many octets of blocks ...
GROUP_BYTES = 4 << 20
#: ... and at most this many hashcodes (a datadir's fast batch read).
GROUP_MAX = 1024
#: Indirect blocks fetched ahead in one request (their size is not known before).
NODE_GROUP = 64
#: What an indirect block of unknown size is counted as, before it comes.
NODE_GUESS = 64 << 10
#: The children of at most this many indirect blocks are remembered.
PARSED_MAX = 4096


class Group:
    """The blocks of one answer end to end in `data` (a memoryview): block `i`
    is `data[offs[i]:offs[i + 1]]`, or missing (`present[i]` false)."""

    __slots__ = ("data", "offs", "present")

    def __init__(self, data, offs: list, present: list):
        self.data = data
        self.offs = offs
        self.present = present

    def view(self, i: int):
        """Block `i`'s data (a memoryview of the group's buffer), None if missing."""
        if not self.present[i]:
            return None
        return self.data[self.offs[i] : self.offs[i + 1]]

    @property
    def size(self) -> int:
        return len(self.data)


class _Plan:
    """A group to fetch: its hashcodes, the octets expected (a guess for
    indirect blocks), whether they are indirect blocks, whether it was sent."""

    __slots__ = ("hs", "est", "nodes", "sent")

    def __init__(self, hs: list, est: int, nodes: bool):
        self.hs, self.est, self.nodes, self.sent = hs, est, nodes, False


def cuts(spans: list) -> list[tuple[int, int]]:
    """The groups `[i, j)` a list of leaves of these spans is fetched in: in
    order, about `GROUP_BYTES` each (at least one leaf, at most `GROUP_MAX`).
    The reader cuts its runs the same way (`HTTPStore.leaf_pieces`), so a run
    is one group's buffer."""
    out = []
    i = size = 0
    for j, span in enumerate(spans):
        if j > i and (size + span > GROUP_BYTES or j - i >= GROUP_MAX):
            out.append((i, j))
            i, size = j, 0
        size += span
    if i < len(spans):
        out.append((i, len(spans)))
    return out


def children(data, hashclass) -> tuple[list, list, list, bool] | None:
    """`(hashcodes, spans, indirect flags, leaf form)` of the blocks `data`
    refers to when it reads as an indirect block's refs, else None; `leaf
    form`: all are stored leaves in the shortest ref form (`leaf_refs`)."""
    from vtstore.blocks import decode_blockrefs, leaf_refs

    if len(data) < 8:
        return None
    got = leaf_refs(data)  # the common case, without a Block a leaf
    if got is not None:
        hs, spans = got
        if hs and type(hs[0]) is hashclass:
            return hs, spans, [False] * len(hs), True
        return None
    try:
        kids = [b for b in decode_blockrefs(data) if getattr(b, "hashcode", None)]
    except Exception:  # noqa: BLE001 - most data is no list of refs
        return None
    kids = [b for b in kids if type(b.hashcode) is hashclass]
    if not kids:
        return None
    return [b.hashcode for b in kids], [b.span for b in kids], [b.indirect for b in kids], False


class ReadAhead:
    """Blocks fetched ahead of a reader; see the module docstring.

    `fetch(hs, expected)` returns the `Group` of `hs` (raising on any fault),
    `submit(fn, *args)` runs a fetch in a worker thread."""

    def __init__(self, fetch, submit, hashclass, budget: int, in_flight: int, timeout: float):
        self._fetch = fetch
        self._submit = submit
        self._hashclass = hashclass
        self.budget = budget
        self._most = max(1, in_flight)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._held: OrderedDict = OrderedDict()  # hashcode -> (Group, index)
        self._held_bytes = 0
        self._planned: dict = {}  # hashcode -> _Plan (queued or being fetched)
        self._queue: deque = deque()  # _Plans not sent yet, in reading order
        self._nodes: OrderedDict = OrderedDict()  # indirect blocks come, children not planned
        # the children of the indirect blocks seen last (read once: the same
        # hashcode objects for planning, taking and the reader's walk)
        self._parsed: OrderedDict = OrderedDict()  # hashcode -> [children(), planned?]
        self._sending = 0
        self._sending_bytes = 0
        self.closed = False

    # -- planning ---------------------------------------------------------------------

    def plan(self, h, data) -> None:
        """Plan the children of block `h` (data `data`), if it is an indirect block."""
        with self._lock:
            self._nodes.pop(h, None)
            self._expand(h, data)
            self._pump()

    def leaf_refs(self, h, data) -> tuple[list, list] | None:
        """`blocks.leaf_refs(data)` of block `h`, read once for the plan and the reader."""
        with self._lock:
            got = self._parse(h, data)[0]
        return (got[0], got[1]) if got is not None and got[3] else None

    def _parse(self, h, data) -> list:
        entry = self._parsed.get(h)
        if entry is None:
            entry = self._parsed[h] = [children(data, self._hashclass), False]
            if len(self._parsed) > PARSED_MAX:
                self._parsed.popitem(last=False)
        return entry

    def _expand(self, h, data) -> None:
        """Plan the children of `h` unless planned already (the lock held)."""
        entry = self._parse(h, data)
        if entry[1] or entry[0] is None:
            return
        entry[1] = True
        hs, spans, indirect, leaf_form = entry[0]
        held, planned = self._held, self._planned

        def new(h) -> bool:
            if h in held or h in planned:
                return False
            planned[h] = None  # the _Plan is set by _enqueue
            return True

        if leaf_form or not any(indirect):
            for i, j in cuts(spans):
                group = [h for h in hs[i:j] if new(h)]
                if group:
                    self._enqueue(_Plan(group, sum(spans[i:j]), False))
            return
        # indirect blocks among them: in order, in groups of one kind
        refs = list(zip(hs, spans, indirect, strict=True))
        for i in range(0, len(refs), NODE_GROUP):
            part = refs[i : i + NODE_GROUP]
            for nodes in (True, False):
                kind = [(h, s) for h, s, x in part if x is nodes and new(h)]
                if kind:
                    est = NODE_GUESS * len(kind) if nodes else sum(s for _, s in kind)
                    self._enqueue(_Plan([h for h, _ in kind], est, nodes))

    def _enqueue(self, plan: _Plan) -> None:
        for h in plan.hs:
            self._planned[h] = plan
        self._queue.append(plan)

    def _pump(self) -> None:
        """Send planned groups while the budget allows (the lock held)."""
        while self._sending < self._most and not self.closed:
            if not self._queue:
                if not self._nodes:
                    return
                self._expand(*self._nodes.popitem(last=False))
                continue
            plan = self._queue[0]
            if self._held_bytes + self._sending_bytes + plan.est > self.budget and (
                self._sending or self._held_bytes
            ):
                return
            self._queue.popleft()
            self._send(plan)

    def _send(self, plan: _Plan) -> None:
        plan.sent = True
        self._sending += 1
        self._sending_bytes += plan.est
        self._submit(self._run, plan)

    def _run(self, plan: _Plan) -> None:
        try:
            group = self._fetch(plan.hs, None if plan.nodes else plan.est)
        except Exception:  # noqa: BLE001 - read-ahead is a hint; the reader's own read reports
            group = None
        with self._lock:
            self._sending -= 1
            self._sending_bytes -= plan.est
            for i, h in enumerate(plan.hs):
                if self._planned.get(h) is plan:
                    del self._planned[h]
                if group is None or not group.present[i] or self.closed:
                    continue
                self._held[h] = (group, i)
                self._held_bytes += group.offs[i + 1] - group.offs[i]
                if plan.nodes:
                    self._nodes[h] = group.view(i)
            self._evict()
            self._pump()
            self._done.notify_all()

    def _evict(self) -> None:
        """Drop the oldest held blocks past twice the budget: blocks planned
        and never read (a reader that stopped, or jumped)."""
        while self._held_bytes > 2 * self.budget and self._held:
            h, (g, i) = self._held.popitem(last=False)
            self._held_bytes -= g.offs[i + 1] - g.offs[i]
            self._nodes.pop(h, None)

    # -- reading ----------------------------------------------------------------------

    def take(self, hs: list) -> list:
        """For each of `hs`: `(Group, index)` if fetched ahead (removed from
        what is held), else None (the caller fetches it).  Waits for those
        being fetched; sends at once those planned and not yet sent."""
        with self._lock:
            planned = self._planned
            if planned:
                for h in hs:
                    plan = planned.get(h)
                    if plan is not None and not plan.sent:
                        self._queue.remove(plan)
                        self._send(plan)
                if any(h in planned for h in hs):
                    self._done.wait_for(
                        lambda: not any(h in planned for h in hs), timeout=self._timeout
                    )
            held = self._held
            if not held:
                return [None] * len(hs)
            out = []
            freed = 0
            for h in hs:
                e = held.pop(h, None)
                if e is not None:
                    g, i = e
                    freed += g.offs[i + 1] - g.offs[i]
                out.append(e)
            if freed:
                self._held_bytes -= freed
                self._pump()
            return out

    def close(self) -> None:
        """Drop everything; fetches still running keep nothing."""
        with self._lock:
            self.closed = True
            self._held.clear()
            self._held_bytes = 0
            self._queue.clear()
            self._nodes.clear()
            self._parsed.clear()
            self._planned.clear()
            self._done.notify_all()
