"""Open-file and open-directory handles: a slot table with O(1) allocation.

Freed slots go on a free list and are reused first, so handle numbers stay
small and allocation and release never scan.  Handle 0 is never issued.
"""

from __future__ import annotations

import errno

from vtstore.fs.errors import FSError


class HandleTable:
    """Maps small integers to open handle objects."""

    def __init__(self):
        self._slots: list = [None]
        self._free: list[int] = []

    def add(self, obj) -> int:
        """Store `obj`; return its handle number."""
        if self._free:
            fh = self._free.pop()
        else:
            fh = len(self._slots)
            self._slots.append(None)
        self._slots[fh] = obj
        return fh

    def get(self, fh: int):
        """The object of handle `fh`; EBADF if there is none."""
        obj = self._slots[fh] if 0 < fh < len(self._slots) else None
        if obj is None:
            raise FSError(errno.EBADF)
        return obj

    def remove(self, fh: int):
        """Release handle `fh` and return its object."""
        obj = self.get(fh)
        self._slots[fh] = None
        self._free.append(fh)
        return obj

    def __len__(self) -> int:
        return len(self._slots) - 1 - len(self._free)

    def values(self):
        """The open handle objects."""
        return [o for o in self._slots if o is not None]
