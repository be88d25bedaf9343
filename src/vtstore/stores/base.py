"""The Store interface.

A store maps hashcodes of one hash class to the bytes they are the hash of.  A
backend implements a small core (`_add_new`, `_get`, `_contains`, `__len__`,
`_iter_sorted`); validation, batching defaults, range listing and the
hash-of-hashcodes walk are done here once, so wrappers (cache, proxy, progress,
network client) are stores of the same interface and compose freely.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence

from vtstore.errors import (
    CorruptBlockError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
    StoreError,
)
from vtstore.hashes import HashCode, default_hashclass
from vtstore.hashes import hash_of_hashcodes as _hash_of_hashcodes


class Store:
    """Abstract base of every store.

    Subclasses override at least `_add_new`, `_get`, `_contains`, `__len__` and
    `_iter_sorted`; the batch methods have serial defaults that backends with real
    batching (LMDB transactions, pipelined network requests) override.
    """

    #: True if `add_many` copies what it keeps of the data it is given (or keeps
    #: only immutable buffers, `vtstore.buffers.is_immutable`), so a caller may
    #: reuse its buffers as soon as the call returns.  Unknown stores: False.
    add_copies: bool = False
    #: True if the store keeps views of immutable buffers instead of copying
    #: them: blockify then reads into fresh buffers rather than recycling its own
    keeps_views: bool = False

    def __init__(
        self,
        name: str | None = None,
        hashclass: type[HashCode] | None = None,
        readonly: bool = False,
    ):
        self.hashclass: type[HashCode] = hashclass or default_hashclass()
        self.name = name or f"{type(self).__name__}"
        self.readonly = readonly
        self.closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.hashclass.hashname})"

    # -- context manager -----------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        """Flush and release resources; the store is unusable afterwards."""
        if not self.closed:
            try:
                if not self.readonly:
                    self.flush()
            finally:
                self.closed = True
                self._close()

    def _close(self) -> None:
        pass

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"store {self.name} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.name} is read-only")

    def check_hashcode(self, hashcode) -> HashCode:
        """Return `hashcode` if it is of this store's hash class, else raise."""
        if type(hashcode) is not self.hashclass:
            if isinstance(hashcode, HashCode):
                raise HashClassMismatchError(
                    f"store {self.name} holds {self.hashclass.hashname} blocks,"
                    f" not {hashcode.hashname}"
                )
            raise TypeError(f"not a hashcode: {hashcode!r}")
        return hashcode

    # -- the mapping ---------------------------------------------------------

    def hash(self, data) -> HashCode:
        """The hashcode `data` would be stored under."""
        return self.hashclass.from_data(data)

    def add(self, data) -> HashCode:
        """Store `data` (any buffer) and return its hashcode; adding twice is harmless."""
        return self.add_many([data])[0]

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Store each of `datas`; return their hashcodes in order."""
        self._check_writable()
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        out = self.hashclass.from_data_many(datas)
        contains = self._contains
        add_new = self._add_new
        for h, data in zip(out, datas, strict=True):
            if not contains(h):
                add_new(h, data)
        return out

    def add_tree_many(self, datas: Sequence) -> list[HashCode]:
        """`add_many` for tree blocks (directory data).  Stores that can keep
        them apart from file data (the datadir puts them in frames of their
        own) override it; the blocks are the same either way."""
        return self.add_many(datas)

    def add_tree_many_reporting(self, datas: Sequence) -> tuple[list[HashCode], list[bool]]:
        """`add_tree_many`, also saying for each block whether it was new."""
        return self.add_many_reporting(datas)

    def tree_view(self) -> Store:
        """This store as seen by code that writes tree blocks: its `add` and
        `add_many` are `add_tree_many`, everything else is the store's."""
        return TreeView(self)

    def add_many_reporting(self, datas: Sequence) -> tuple[list[HashCode], list[bool]]:
        """`add_many`, also saying for each block whether it was new to the store.

        Wrappers that count deduplication (ProgressStore) use it; stores that
        can tell without hashing twice override it.
        """
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        hs = self.hashclass.from_data_many(datas)
        present = self.contains_many(hs)
        fresh = [d for d, p in zip(datas, present, strict=True) if not p]
        if fresh:
            self.add_many(fresh)
        return hs, [not p for p in present]

    def get(self, hashcode, default=None):
        """The data for `hashcode`, or `default` if absent (mapping semantics)."""
        try:
            return self[hashcode]
        except MissingBlockError:
            return default

    def __getitem__(self, hashcode) -> bytes:
        self._check_open()
        self.check_hashcode(hashcode)
        data = self._get(hashcode)
        if data is None:
            raise MissingBlockError(hashcode, self.name)
        return data

    def fetch(self, hashcode) -> bytes:
        """The data for `hashcode`; raises `MissingBlockError` if absent."""
        return self[hashcode]

    def get_many(self, hashcodes: Iterable[HashCode]) -> list[bytes]:
        """The data for each hashcode, in order; raises on the first missing one."""
        return [self[h] for h in hashcodes]

    def __contains__(self, hashcode) -> bool:
        self._check_open()
        if type(hashcode) is not self.hashclass:
            return False
        return self._contains(hashcode)

    def contains_many(self, hashcodes: Iterable[HashCode]) -> list[bool]:
        """For each hashcode, whether the store holds it."""
        return [h in self for h in hashcodes]

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __bool__(self) -> bool:
        # a store is a store even when empty: `if store:` must not mean "has blocks"
        return True

    def __iter__(self) -> Iterator[HashCode]:
        return self.hashcodes()

    def keys(self) -> Iterator[HashCode]:
        """The hashcodes held, in order."""
        return self.hashcodes()

    def flush(self) -> None:
        """Make every block added so far durable (for persistent stores)."""

    def verify(self, hashcode, data) -> bytes:
        """Return `data` if it hashes to `hashcode`, else raise `CorruptBlockError`."""
        if not hashcode.check(data):
            raise CorruptBlockError(hashcode)
        return data

    # -- ordered listing ---------------------------------------------------

    def hashcodes(
        self, start: HashCode | None = None, after: bool = False, length: int | None = None
    ) -> Iterator[HashCode]:
        """The hashcodes held, in ascending order.

        `start`: begin at this hashcode (which need not be present); `after`: skip
        `start` itself if present; `length`: yield at most this many.
        """
        self._check_open()
        if start is not None:
            self.check_hashcode(start)
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        it = self._iter_sorted(start)
        if start is not None and after:
            it = itertools.dropwhile(lambda h: h == start, it)
        if length is not None:
            it = itertools.islice(it, length)
        return it

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:  # pragma: no cover
        """Yield held hashcodes >= `start` (all if None), ascending."""
        raise NotImplementedError

    def hash_of_hashcodes(
        self, start: HashCode | None = None, after: bool = False, length: int | None = None
    ) -> tuple[HashCode, HashCode | None]:
        """The hash of the hashcodes that `hashcodes(start, after, length)` lists.

        Returns `(hash, last)` where `last` is the final hashcode of the window
        (None if empty), so a caller can continue from it with `after=True`.
        """
        window = list(self.hashcodes(start=start, after=after, length=length))
        return _hash_of_hashcodes(self.hashclass, window), (window[-1] if window else None)

    def hash_of_hashcodes_many(self, windows) -> list[tuple[HashCode, HashCode | None]]:
        """`hash_of_hashcodes(start=s, length=n)` of each window `(s, n)`.

        One call for a round of key ranges: a block-server client sends the
        requests together (one round trip); here it is one call per window."""
        return [self.hash_of_hashcodes(start=s, length=n) for s, n in windows]

    def hashcodes_many(self, windows) -> list[list[HashCode]]:
        """`list(hashcodes(start=s, length=n))` of each window `(s, n)` (see
        `hash_of_hashcodes_many`)."""
        return [list(self.hashcodes(start=s, length=n)) for s, n in windows]

    # -- backend core --------------------------------------------------------

    def _add_new(self, hashcode: HashCode, data) -> None:  # pragma: no cover
        raise NotImplementedError

    def _get(self, hashcode: HashCode) -> bytes | None:  # pragma: no cover
        raise NotImplementedError

    def _contains(self, hashcode: HashCode) -> bool:  # pragma: no cover
        raise NotImplementedError

    # -- chunking ----------------------------------------------------------

    @property
    def chunk_params(self):
        """The chunker parameters (`vtstore.chunking.ChunkParams`) this store was
        created with, or None when it records none and the defaults apply.
        Wrappers pass their inner store's on, so that wrapping never changes cuts."""
        return None

    # -- exports -------------------------------------------------------------

    @property
    def exports(self) -> dict:
        """Named sub-stores or archives this store offers (none by default)."""
        return {}


class SortedKeys:
    """A set of hashcodes with cheap ordered iteration from any start key.

    New keys accumulate in an unsorted buffer and are merged on the next ordered
    read, so a burst of adds costs O(n log n) once rather than O(n) per add.
    """

    __slots__ = ("_sorted", "_pending")

    def __init__(self):
        self._sorted: list[HashCode] = []
        self._pending: list[HashCode] = []

    def add(self, h: HashCode) -> None:
        self._pending.append(h)

    def extend(self, hs) -> None:
        self._pending.extend(hs)

    def discard(self, h: HashCode) -> None:
        self._merge()
        i = bisect.bisect_left(self._sorted, h)
        if i < len(self._sorted) and self._sorted[i] == h:
            del self._sorted[i]

    def _merge(self) -> None:
        if self._pending:
            self._sorted.extend(self._pending)
            self._sorted.sort()
            self._pending.clear()

    def iter_from(self, start=None) -> Iterator[HashCode]:
        self._merge()
        keys = self._sorted
        i = 0 if start is None else bisect.bisect_left(keys, start)
        # iterate over a snapshot of the positions: adds during iteration land
        # in _pending and do not disturb it
        while i < len(keys):
            yield keys[i]
            i += 1


class TreeView:
    """A store whose adds are tree-block adds (see `Store.tree_view`)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store):
        self._store = store

    def add(self, data) -> HashCode:
        """Add one tree block."""
        return self._store.add_tree_many([data])[0]

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Add tree blocks."""
        return self._store.add_tree_many(datas)

    def tree_view(self) -> TreeView:
        return self

    def __getattr__(self, name):
        return getattr(self._store, name)

    def __contains__(self, h) -> bool:
        return h in self._store

    def __getitem__(self, h) -> bytes:
        return self._store[h]
