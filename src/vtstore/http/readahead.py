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


class Leaves:
    """The leaves an indirect block refers to, as its refs' digests end to end
    (`_vtdread.split_leaf_refs`: no object a leaf); `node`: that block's
    hashcode (the read-ahead's groups of them are named by it), or None."""

    __slots__ = ("node", "digests", "hashclass")

    def __init__(self, node, digests: bytes, hashclass):
        self.node, self.digests, self.hashclass = node, digests, hashclass

    def __len__(self) -> int:
        return len(self.digests) // self.hashclass.digest_size

    def digests_of(self, i: int, j: int) -> bytes:
        """The digests of leaves `[i, j)`, end to end."""
        size = self.hashclass.digest_size
        return self.digests[i * size : j * size]

    def hashcode(self, i: int):
        """Leaf `i`'s hashcode."""
        return self.hashclass(self.digests_of(i, i + 1))

    def hashcodes(self, i: int, j: int) -> list:
        """The hashcodes of leaves `[i, j)`."""
        return [self.hashcode(k) for k in range(i, j)]


class _Plan:
    """A request to make: `key` names a group of a node's leaves (`(node,
    k)`), else `hs` are the hashcodes it fetches one by one; `digests` what
    it asks for, `est` the octets expected (a guess for indirect blocks),
    `nodes` whether they are indirect blocks, `sent` whether it went out."""

    __slots__ = ("key", "hs", "digests", "n", "est", "nodes", "sent")

    def __init__(self, key, hs, digests: bytes, n: int, est: int, nodes: bool = False):
        self.key, self.hs, self.digests, self.n = key, hs, digests, n
        self.est, self.nodes, self.sent = est, nodes, False


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


def leaf_list(data, hashclass) -> tuple[bytes, list] | None:
    """`(digests, spans)` of data that `blocks.leaf_refs` reads as leaves of
    `hashclass`, else None; natively when it can."""
    try:
        from vtstore.stores._vtdread import split_leaf_refs
    except ImportError:
        from vtstore.blocks import leaf_refs

        got = leaf_refs(data)
        if got is None or any(type(h) is not hashclass for h in got[0]):
            return None
        return b"".join(got[0]), got[1]
    return split_leaf_refs(data, hashclass.hashid, hashclass.digest_size)


def children(data, hashclass) -> tuple[list, list, list] | None:
    """`(hashcodes, spans, indirect flags)` of the blocks `data` refers to
    when it reads as an indirect block's refs, else None."""
    from vtstore.blocks import decode_blockrefs

    if len(data) < 8:
        return None
    try:
        kids = [b for b in decode_blockrefs(data) if getattr(b, "hashcode", None)]
    except Exception:  # noqa: BLE001 - most data is no list of refs
        return None
    kids = [b for b in kids if type(b.hashcode) is hashclass]
    if not kids:
        return None
    return [b.hashcode for b in kids], [b.span for b in kids], [b.indirect for b in kids]


def _size(entry) -> int:
    g, i = entry
    return g.size if i < 0 else g.offs[i + 1] - g.offs[i]


class ReadAhead:
    """Blocks fetched ahead of a reader; see the module docstring.

    `fetch(digests, n, expected)` returns the `Group` of the `n` blocks whose
    digests are `digests` (raising on any fault), `submit(fn, *args)` runs a
    fetch in a worker thread."""

    def __init__(self, fetch, submit, hashclass, budget: int, in_flight: int, timeout: float):
        self._fetch = fetch
        self._submit = submit
        self._hashclass = hashclass
        self.budget = budget
        self._most = max(1, in_flight)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        # hashcode -> (Group, index), or (node, k) -> (Group, -1): a group of leaves
        self._held: OrderedDict = OrderedDict()
        self._held_bytes = 0
        self._planned: dict = {}  # a key of _held -> the _Plan fetching it
        self._queue: deque = deque()  # _Plans not sent yet, in reading order
        self._nodes: OrderedDict = OrderedDict()  # indirect blocks come, children not planned
        # what the indirect blocks seen last refer to, and whether it is planned
        self._parsed: OrderedDict = OrderedDict()  # hashcode -> [Leaves/children(), planned?]
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

    def leaf_refs(self, h, data) -> tuple[Leaves, list] | None:
        """`(Leaves, spans)` of block `h` (data `data`) when it is an indirect
        block of leaves in their shortest ref form (`blocks.leaf_refs`), read
        once for the plan and the reader; else None."""
        with self._lock:
            got = self._parse(h, data)[0]
        return got if got is not None and type(got[0]) is Leaves else None

    def _parse(self, h, data) -> list:
        entry = self._parsed.get(h)
        if entry is None:
            got = leaf_list(data, self._hashclass) if len(data) >= 8 else None
            if got is not None:
                got = (Leaves(h, got[0], self._hashclass), got[1])
            else:
                got = children(data, self._hashclass)
            entry = self._parsed[h] = [got, False]
            if len(self._parsed) > PARSED_MAX:
                self._parsed.popitem(last=False)
        return entry

    def _expand(self, h, data) -> None:
        """Plan the children of `h` unless planned already (the lock held)."""
        entry = self._parse(h, data)
        if entry[1] or entry[0] is None:
            return
        entry[1] = True
        if type(entry[0][0]) is Leaves:
            leaves, spans = entry[0]
            for k, (i, j) in enumerate(cuts(spans)):
                key = (h, k)
                if key not in self._held and key not in self._planned:
                    plan = _Plan(key, None, leaves.digests_of(i, j), j - i, sum(spans[i:j]))
                    self._enqueue(plan)
            return
        hs, spans, indirect = entry[0]
        held, planned = self._held, self._planned
        refs = [(h, s, x) for h, s, x in zip(hs, spans, indirect, strict=True)]
        for i in range(0, len(refs), NODE_GROUP):  # in order, in groups of one kind
            part = refs[i : i + NODE_GROUP]
            for nodes in (True, False):
                kind = [(h, s) for h, s, x in part if x is nodes]
                kind = [(h, s) for h, s in dict(kind).items() if h not in held and h not in planned]
                if kind:
                    group = [h for h, _ in kind]
                    est = NODE_GUESS * len(kind) if nodes else sum(s for _, s in kind)
                    digests = b"".join(group)
                    self._enqueue(_Plan(None, group, digests, len(group), est, nodes))

    def _enqueue(self, plan: _Plan) -> None:
        if plan.key is not None:
            self._planned[plan.key] = plan
        else:
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
            group = self._fetch(plan.digests, plan.n, None if plan.nodes else plan.est)
        except Exception:  # noqa: BLE001 - read-ahead is a hint; the reader's own read reports
            group = None
        with self._lock:
            self._sending -= 1
            self._sending_bytes -= plan.est
            if plan.key is not None:
                self._planned.pop(plan.key, None)
                if group is not None and not self.closed:
                    self._held[plan.key] = (group, -1)
                    self._held_bytes += group.size
            else:
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
            h, e = self._held.popitem(last=False)
            self._held_bytes -= _size(e)
            self._nodes.pop(h, None)

    # -- reading ----------------------------------------------------------------------

    def _wait(self, keys: list) -> None:
        """Send at once what of `keys` is planned and not sent, and wait for
        what is being fetched (the lock held)."""
        planned = self._planned
        if not planned:
            return
        for key in keys:
            plan = planned.get(key)
            if plan is not None and not plan.sent:
                self._queue.remove(plan)
                self._send(plan)
        if any(key in planned for key in keys):
            self._done.wait_for(lambda: not any(k in planned for k in keys), timeout=self._timeout)

    def take(self, hs: list) -> list:
        """For each of `hs`: `(Group, index)` if fetched ahead (removed from
        what is held), else None (the caller fetches it).  Waits for those
        being fetched; sends at once those planned and not yet sent."""
        with self._lock:
            self._wait(hs)
            held = self._held
            if not held:
                return [None] * len(hs)
            out = [held.pop(h, None) for h in hs]
            freed = sum(_size(e) for e in out if e is not None)
            if freed:
                self._held_bytes -= freed
                self._pump()
            return out

    def take_group(self, node, k: int) -> Group | None:
        """Group `k` of the leaves of indirect block `node` (`cuts`) if
        fetched ahead, else None (the caller fetches it); waits as `take`."""
        key = (node, k)
        with self._lock:
            self._wait([key])
            e = self._held.pop(key, None)
            if e is None:
                return None
            self._held_bytes -= e[0].size
            self._pump()
            return e[0]

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
