"""The crypt index: which backend block holds each plaintext hashcode.

A content-addressed backend names a block by the hash of the octets it is
given, and those are ciphertext, so the name of the block holding plaintext
hashcode `h` cannot be computed from `h`: it is recorded here.  The file is
append-only::

    magic (16 octets: b"vtcrypt-index1\\n\\0")
    batch*: length (u32 big-endian, of what follows) || nonce (12) ||
            AES-256-GCM(index key, nonce, records, aad = magic || key id || offset)
    records: (plaintext digest || backend digest)*, digests of the store's hash class

Nothing in it is readable without the key: an attacker learns how many blocks
there are, not which.  The offset in the associated data pins each batch to its
place.  An incomplete last batch is a torn append (a crash): readers stop
before it and the next append cuts it off.  A batch that fails authentication
is skipped with a warning (its blocks read as missing) and counted in
`damaged`; `CryptStore.reindex` rebuilds the whole index from the backend.

Appends take an exclusive `flock` and write each batch with one `write` on an
`O_APPEND` descriptor, so several processes can add to one crypt store; each
reads the batches the others appended when it misses a hashcode.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from pathlib import Path

from vtstore.errors import StoreError

log = logging.getLogger(__name__)

MAGIC = b"vtcrypt-index1\n\0"
MAX_BATCH = 64 << 20
_LEN = struct.Struct(">I")


class CryptIndex:
    """The plaintext-digest -> backend-digest map of one crypt store, kept in
    memory and appended to the index file at `flush`."""

    def __init__(self, path, key: bytes, key_id: str, digest_size: int, readonly: bool = False):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.path = Path(path)
        self._aead = AESGCM(key)
        self._aad0 = MAGIC + key_id.encode()
        self.record_size = 2 * digest_size
        self.digest_size = digest_size
        self.readonly = readonly
        self.map: dict[bytes, bytes] = {}
        self.pending: dict[bytes, bytes] = {}  # in `map`, not yet in the file
        self.end = 0  # the offset up to which the file has been read
        self.damaged = 0  # batches that failed authentication
        self._lock = threading.Lock()
        self._size_seen = -1
        self.refresh()

    # -- reading -------------------------------------------------------------

    def _open_read(self):
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"crypt index {self.path}: {e.strerror}") from None

    def refresh(self) -> int:
        """Read what other processes appended since we looked; return how many
        new entries.  Cheap when nothing changed (one stat)."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise StoreError(f"crypt index {self.path}: {e.strerror}") from None
        if size == self._size_seen:
            return 0
        f = self._open_read()
        if f is None:
            return 0
        with f, self._lock:
            n = self._read_from(f, size)
            self._size_seen = size
            return n

    def _read_from(self, f, size: int) -> int:
        """Read complete batches from `self.end` to `size` (caller holds _lock)."""
        if self.end == 0:
            f.seek(0)
            head = f.read(len(MAGIC))
            if len(head) < len(MAGIC):
                return 0  # being created, or empty
            if head != MAGIC:
                raise StoreError(f"crypt index {self.path}: not a crypt index (bad magic)")
            self.end = len(MAGIC)
        f.seek(self.end)
        data = f.read(max(0, size - self.end))
        added = 0
        pos = 0
        while pos + _LEN.size <= len(data):
            (length,) = _LEN.unpack_from(data, pos)
            if pos + _LEN.size + length > len(data):
                break  # torn or still being written
            if not 28 <= length <= MAX_BATCH:
                self.damaged += 1
                log.warning(
                    "crypt index %s: damaged batch length at offset %d; the rest of the"
                    " index is unreadable (vt crypt reindex rebuilds it)",
                    self.path,
                    self.end + pos,
                )
                pos = len(data)
                break
            body = data[pos + _LEN.size : pos + _LEN.size + length]
            recs = self._open_batch(self.end + pos, body)
            if recs is not None:
                m = self.map
                rs, ds = self.record_size, self.digest_size
                for i in range(0, len(recs) - rs + 1, rs):
                    h = recs[i : i + ds]
                    if h not in m:
                        added += 1
                    m[h] = recs[i + ds : i + rs]
            pos += _LEN.size + length
        self.end += pos
        return added

    def _open_batch(self, offset: int, body: bytes) -> bytes | None:
        from cryptography.exceptions import InvalidTag

        try:
            recs = self._aead.decrypt(body[:12], body[12:], self._aad0 + offset.to_bytes(8, "big"))
        except InvalidTag:
            recs = None
        if recs is None or len(recs) % self.record_size:
            self.damaged += 1
            log.warning(
                "crypt index %s: batch at offset %d fails authentication; its blocks read as"
                " missing (vt crypt reindex rebuilds the index)",
                self.path,
                offset,
            )
            return None
        return recs

    # -- writing -------------------------------------------------------------

    def add(self, h: bytes, n: bytes) -> None:
        """Record that plaintext digest `h` is backend block `n` (written at `flush`)."""
        self.map[h] = n
        self.pending[h] = n

    def flush(self) -> None:
        """Append the pending entries as one batch, durably."""
        if self.readonly or not self.pending:
            return
        with self._lock:
            pend = self.pending
            self.pending = {}
            try:
                self._append(pend)
            except BaseException:
                pend.update(self.pending)
                self.pending = pend
                raise

    def _append(self, pend: dict[bytes, bytes]) -> None:
        recs = b"".join(h + n for h, n in pend.items())
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"crypt index {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size == 0:
                os.write(fd, MAGIC)
                size = len(MAGIC)
            with os.fdopen(os.dup(fd), "rb") as f:
                self._read_from(f, size)  # what others appended; leaves a torn tail behind
            if self.end < size:
                log.warning("crypt index %s: cutting off a torn last batch", self.path)
                os.ftruncate(fd, self.end)
            offset = self.end
            step = MAX_BATCH // self.record_size * self.record_size - 64 * self.record_size
            out = []
            for i in range(0, len(recs), step):
                part = recs[i : i + step]
                nonce = os.urandom(12)
                ct = self._aead.encrypt(nonce, part, self._aad0 + offset.to_bytes(8, "big"))
                out.append(_LEN.pack(12 + len(ct)) + nonce + ct)
                offset += _LEN.size + 12 + len(ct)
            blob = b"".join(out)
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            self.end = offset
            self._size_seen = offset
        except OSError as e:
            raise StoreError(f"crypt index {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)

    def replace(self, entries: dict[bytes, bytes]) -> None:
        """Write a new index holding exactly `entries`, atomically (reindex)."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        with self._lock:
            old = (self.path, self.end, self._size_seen)
            self.path, self.end, self._size_seen = tmp, 0, -1
            try:
                self._append(dict(entries)) if entries else self._init_empty(tmp)
                os.rename(tmp, old[0])
            except BaseException:
                self.path, self.end, self._size_seen = old
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            self.path = old[0]
            self.map = dict(entries)
            self.pending = {}
            self.damaged = 0

    @staticmethod
    def _init_empty(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, MAGIC)
            os.fsync(fd)
        finally:
            os.close(fd)
