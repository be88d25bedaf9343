"""Bounded read-side caches for data files: open descriptors and decoded frames.

`FDCache` keeps at most `max_fds` read descriptors open, closing the least
recently used; a descriptor in use by another thread is closed only when that
thread releases it, so eviction can never close an fd under a `pread`.
`FrameCache` keeps recently decoded frames (up to a byte cap) so that reading the
blocks of one frame in turn decompresses it once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager


class _Handle:
    __slots__ = ("fd", "users", "evicted")

    def __init__(self, fd: int):
        self.fd = fd
        self.users = 0
        self.evicted = False


class FDCache:
    """An LRU of read-only descriptors, keyed by anything (a file number)."""

    def __init__(self, opener: Callable[[object], str], max_fds: int = 64):
        self._path_of = opener
        self.max_fds = max_fds
        self._lock = threading.Lock()
        self._handles: OrderedDict[object, _Handle] = OrderedDict()

    @contextmanager
    def fd(self, key):
        """Context manager yielding an open read fd for `key`."""
        with self._lock:
            h = self._handles.get(key)
            if h is not None:
                self._handles.move_to_end(key)
                h.users += 1
        if h is None:
            fd = os.open(self._path_of(key), os.O_RDONLY | os.O_CLOEXEC)
            with self._lock:
                h = self._handles.get(key)
                if h is None:
                    h = _Handle(fd)
                    self._handles[key] = h
                    fd = -1
                h.users += 1
                self._evict()
            if fd >= 0:
                os.close(fd)
        try:
            yield h.fd
        finally:
            with self._lock:
                h.users -= 1
                if h.evicted and h.users == 0:
                    os.close(h.fd)
                    h.fd = -1

    def _evict(self) -> None:
        while len(self._handles) > self.max_fds:
            _, old = self._handles.popitem(last=False)
            old.evicted = True
            if old.users == 0:
                os.close(old.fd)
                old.fd = -1

    def forget(self, key) -> None:
        """Close the descriptor for `key` (a file was removed or rewritten)."""
        with self._lock:
            h = self._handles.pop(key, None)
            if h is not None:
                h.evicted = True
                if h.users == 0:
                    os.close(h.fd)
                    h.fd = -1

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Close every descriptor not in use (all of them, once readers are done)."""
        with self._lock:
            while self._handles:
                _, h = self._handles.popitem()
                h.evicted = True
                if h.users == 0:
                    os.close(h.fd)
                    h.fd = -1


class FrameCache:
    """An LRU of decoded frame payloads with a byte cap."""

    def __init__(self, max_bytes: int = 8 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._frames: OrderedDict[object, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key) -> bytes | None:
        with self._lock:
            v = self._frames.get(key)
            if v is None:
                self.misses += 1
            else:
                self.hits += 1
                self._frames.move_to_end(key)
            return v

    def put(self, key, payload: bytes) -> None:
        if len(payload) > self.max_bytes:
            return
        with self._lock:
            old = self._frames.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._frames[key] = payload
            self._bytes += len(payload)
            while self._bytes > self.max_bytes:
                _, v = self._frames.popitem(last=False)
                self._bytes -= len(v)

    def discard_file(self, filenum: int) -> None:
        """Drop every frame of one file (its keys are `(filenum, offset)`)."""
        with self._lock:
            for k in [k for k in self._frames if k[0] == filenum]:
                self._bytes -= len(self._frames.pop(k))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0


def read_block(fd: int, frames: FrameCache, h, e) -> bytes:
    """Read and verify the block `h` that index entry `e` places in the open
    data file `fd`; raise `CorruptBlockError` if it does not match."""
    from vtstore.errors import CorruptBlockError, FormatError
    from vtstore.stores.vtd import ENC_MASK, ENC_PLAIN, MAX_BLOCK_SIZE, MAX_PAYLOAD, decode_payload

    # an entry from a damaged index must not ask for a huge read
    if (
        e.data_length > MAX_BLOCK_SIZE
        or e.payload_length > MAX_PAYLOAD
        or e.data_offset > MAX_PAYLOAD
        or e.payload_offset >= 1 << 48
    ):
        raise CorruptBlockError(h, f"index entry out of bounds {tuple(e)} (damaged index?)")
    if e.flags & ENC_MASK == ENC_PLAIN:
        data = os.pread(fd, e.data_length, e.payload_offset + e.data_offset)
    else:
        key = (e.filenum, e.payload_offset)
        payload = frames.get(key)
        if payload is None:
            stored = os.pread(fd, e.payload_length, e.payload_offset)
            if len(stored) != e.payload_length:
                raise CorruptBlockError(h, f"data file {e.filenum} is truncated")
            try:
                payload = decode_payload(e.flags, stored)
            except FormatError as x:
                raise CorruptBlockError(
                    h, f"record at {e.filenum}:{e.payload_offset}: {x}"
                ) from None
            frames.put(key, payload)
        data = payload[e.data_offset : e.data_offset + e.data_length]
    if len(data) != e.data_length:
        raise CorruptBlockError(h, f"data file {e.filenum} is truncated")
    if not h.check(data):
        raise CorruptBlockError(h, f"data at {e.filenum}:{e.payload_offset} does not match")
    return data
