"""The memory store: a dict, for tests, scratch work and `-S memory:`."""

from __future__ import annotations

from collections.abc import Iterator

from vtstore.buffers import is_immutable
from vtstore.hashes import HashCode
from vtstore.stores.base import SortedKeys, Store


class MemoryStore(Store):
    """Blocks held in a dict; nothing survives `close`."""

    #: add_many never keeps a view of a buffer that can change, and keeps
    #: views of immutable ones (see Store)
    add_copies = True
    keeps_views = True

    def __init__(self, name: str = "memory:", hashclass=None, readonly: bool = False):
        super().__init__(name=name, hashclass=hashclass, readonly=readonly)
        self._blocks: dict[HashCode, bytes | memoryview] = {}
        self._keys = SortedKeys()

    def add_many(self, datas) -> list[HashCode]:
        """Store each of `datas` (see `Store.add_many`): one dict probe per block."""
        return self.add_many_reporting(datas)[0]

    def add_many_reporting(self, datas) -> tuple[list[HashCode], list[bool]]:
        """`add_many`, also saying for each block whether it was new.

        Views of immutable buffers (`vtstore.buffers`) are kept as they are when
        most of the batch is new: blockify hands over slices of its read
        buffers, so a GiB costs no copy and no second round of page faults.  A
        mostly duplicate batch is copied out, so that a few new blocks never pin
        whole buffers, and so is anything that could still change.
        """
        self._check_writable()
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        out = self.hashclass.from_data_many(datas)
        blocks = self._blocks
        flags = []
        new: dict = {}  # hashcode -> data, in order, each once
        for h, data in zip(out, datas, strict=True):
            f = h not in blocks and h not in new
            if f:
                new[h] = data
            flags.append(f)
        if new:
            keep = 2 * len(new) >= len(out)
            for h, data in new.items():
                if type(data) is not bytes and not (keep and is_immutable(data)):
                    data = bytes(data)
                blocks[h] = data
            self._keys.extend(new)
        return out, flags

    def _add_new(self, hashcode: HashCode, data) -> None:
        self._blocks[hashcode] = bytes(data)
        self._keys.add(hashcode)

    def _get(self, hashcode: HashCode) -> bytes | None:
        d = self._blocks.get(hashcode)
        return d if d is None or type(d) is bytes else bytes(d)

    def _contains(self, hashcode: HashCode) -> bool:
        return hashcode in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        return self._keys.iter_from(start)

    def _close(self) -> None:
        self._blocks.clear()
        self._keys = SortedKeys()
