"""CryptStore: a store that encrypts every block before its backend sees it.

Block format on the backend (one backend block per plaintext block)::

    version (1) || flags (1: bit 0 = zstd) || tag (32) ||
    AES-256-GCM(block key, nonce = tag[:12], payload, aad = version || flags || tag)

    tag = BLAKE2b-256 keyed with the name key (hash class name || ":" || plaintext digest)

The encryption is deterministic: the nonce is derived from the plaintext's
hashcode, which determines the plaintext, so one nonce never encrypts two
different messages (GCM's one hard rule) and the same block always becomes the
same ciphertext, which the backend deduplicates, across processes and across
crypt stores sharing the key.  The backend names the block by the hash of the
ciphertext: without the key nobody can compute it from a plaintext, so holding
the backend does not tell whether a known file is stored.  `CryptIndex` records
which backend block holds each plaintext hashcode.

`get(h)` finds the backend block, checks that its tag is `h`'s (a block moved
or swapped to another name fails here), authenticates and decrypts it (a flipped
bit fails here), decompresses it and checks that it hashes to `h`: it returns
the right octets or raises `CorruptBlockError`, never other data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag

from vtstore.errors import CorruptBlockError, FormatError, MissingBlockError, StoreError
from vtstore.hashes import HashCode
from vtstore.stores.base import Store
from vtstore.stores.crypt.index import CryptIndex
from vtstore.stores.crypt.keys import MasterKey
from vtstore.stores.vtd import PLAIN_ENTROPY
from vtstore.stores.vtdio import sample_entropy  # None without the extension

log = logging.getLogger(__name__)

VERSION = 1
F_ZSTD = 1
HEADER = 2 + 32
OVERHEAD = HEADER + 16
#: pending index entries that make `add_many` flush (backend first, then index)
FLUSH_EVERY = 16384
#: the largest block this store decompresses to
MAX_PLAIN = 64 << 20
ARCHIVE_PREFIX = b"!vtcrypt1:"


class ArchiveLineCodec:
    """Encrypts archive lines (see `vtstore.archive.register_line_codec`):
    `!vtcrypt1:` + base64(nonce || AES-256-GCM(archive key, nonce, line, key id))."""

    def __init__(self, key: bytes, key_id: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._aad = b"vtcrypt-archive1 " + key_id.encode()

    def encode(self, line: bytes) -> bytes:
        """The encrypted form of one line (no newline in or out)."""
        nonce = os.urandom(12)
        return ARCHIVE_PREFIX + base64.b64encode(
            nonce + self._aead.encrypt(nonce, bytes(line), self._aad)
        )

    def decode(self, raw: bytes) -> bytes:
        """The line `encode` made; `FormatError` for anything else."""
        raw = raw.rstrip(b"\r")
        if not raw.startswith(ARCHIVE_PREFIX):
            raise FormatError("not an encrypted archive line")
        try:
            blob = base64.b64decode(raw[len(ARCHIVE_PREFIX) :], validate=True)
        except ValueError:
            raise FormatError("an encrypted line that is not base64") from None
        if len(blob) < 28:
            raise FormatError("an encrypted line too short to hold a state")
        try:
            return self._aead.decrypt(blob[:12], blob[12:], self._aad)
        except InvalidTag:
            raise FormatError(
                "an encrypted line that fails authentication (tampered, or another key)"
            ) from None


@dataclass
class CryptReindexReport:
    """What `CryptStore.reindex` found (the shape `vt reindex` prints)."""

    index: str
    blocks: int = 0
    foreign: int = 0
    unreadable: int = 0

    @property
    def ok(self) -> bool:
        """No backend block was unreadable."""
        return not self.unreadable

    def as_dict(self) -> dict:
        """The counts."""
        return {"blocks": self.blocks, "foreign": self.foreign, "unreadable": self.unreadable}

    def lines(self) -> list[str]:
        """One line for `vt reindex` and `vt crypt reindex`."""
        return [
            f"{self.index}: {self.blocks} blocks indexed, {self.foreign} blocks of another key"
            f" or not encrypted, {self.unreadable} unreadable"
        ]


class CryptStore(Store):
    """Encrypts blocks into `backend` under `key`; see the module docstring.

    `index` is the path of the `CryptIndex`.  `compress`: zstd each block
    before encrypting it when that saves at least 1/32 (the backend cannot
    compress ciphertext).  The backend is closed with this store if `owns`.
    """

    add_copies = True

    def __init__(
        self,
        backend: Store,
        key: MasterKey,
        index,
        *,
        readonly: bool = False,
        compress: bool = True,
        owns: bool = True,
        key_file=None,
        name: str | None = None,
    ):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.backend = backend
        self.key_id = key.key_id
        self.key_file = None if key_file is None else str(key_file)
        self.compress = compress
        self.owns = owns
        self._aead = AESGCM(key.subkey("block"))
        self._name_key = key.subkey("name")
        self._codec = ArchiveLineCodec(key.subkey("archive"), key.key_id)
        self._archives: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sorted: list[bytes] = []
        self._plain_run = 0  # blocks in a row that zstd did not shrink
        super().__init__(
            name=name or f"crypt:{backend.name}",
            hashclass=backend.hashclass,
            readonly=readonly or backend.readonly,
        )
        self._hname = self.hashclass.hashname.encode() + b":"
        self.index = CryptIndex(
            index, key.subkey("index"), key.key_id, self.hashclass.digest_size, self.readonly
        )

    # -- the block format ------------------------------------------------------

    def tag(self, h: HashCode) -> bytes:
        """The keyed name tag of plaintext hashcode `h` (32 octets)."""
        return hashlib.blake2b(self._hname + h, key=self._name_key, digest_size=32).digest()

    def _zstd(self):
        loc = self._local
        c = getattr(loc, "c", None)
        if c is None:
            import zstandard

            c = loc.c = zstandard.ZstdCompressor(level=3)
            loc.d = zstandard.ZstdDecompressor()
        return loc

    def _worth_compressing(self, datas) -> bool:
        """Whether to try zstd on a batch: after a run of incompressible
        blocks, only if a sample of the batch has low entropy (the datadir's
        rule for its frames: random data never pays for a compression try)."""
        if not self.compress:
            return False
        if self._plain_run < 4 or sample_entropy is None:
            return True
        if sum(len(d) for d in datas[:4]) < 4096:
            return True
        return sample_entropy(datas) < PLAIN_ENTROPY

    def _payload(self, data, try_zstd: bool) -> tuple[int, object]:
        """`(flags, payload)`: `data` zstd-compressed when that saves 1/32."""
        n = len(data)
        if try_zstd and self.compress and n >= 128:
            z = self._zstd().c.compress(data)
            if len(z) <= n - (n >> 5):
                self._plain_run = 0
                return F_ZSTD, z
            self._plain_run += 1
        return 0, data

    def _seal_into(self, out: memoryview, h: HashCode, flags: int, payload) -> None:
        """Write the backend block of `payload` into `out` (exactly its size):
        the header, then the ciphertext encrypted in place (no copies)."""
        t = self.tag(h)
        out[0] = VERSION
        out[1] = flags
        out[2:HEADER] = t
        self._aead.encrypt_into(t[:12], payload, out[:HEADER], out[HEADER:])

    def seal(self, h: HashCode, data, try_zstd: bool = True) -> bytes:
        """The backend block for plaintext `data` whose hashcode is `h`."""
        flags, payload = self._payload(data, try_zstd)
        out = bytearray(OVERHEAD + len(payload))
        self._seal_into(memoryview(out), h, flags, payload)
        return bytes(out)

    def seal_many(self, items, try_zstd: bool = True) -> list:
        """The backend blocks of `(h, data)` pairs.  When the backend copies what
        it is given (`add_copies`), they are views of one buffer that this
        thread reuses for its next batch: no fresh memory to fault in per block."""
        parts = [(h, *self._payload(data, try_zstd)) for h, data in items]
        sizes = [OVERHEAD + len(p) for _, _, p in parts]
        if getattr(self.backend, "add_copies", False):
            loc = self._local
            arena = getattr(loc, "arena", None)
            if arena is None or len(arena) < sum(sizes):
                arena = loc.arena = bytearray(max(sum(sizes), 1 << 20))
            mv = memoryview(arena)
        else:  # the backend may keep what it is given: one fresh buffer each
            mv = None
        out = []
        off = 0
        for (h, flags, payload), n in zip(parts, sizes, strict=True):
            view = mv[off : off + n] if mv is not None else memoryview(bytearray(n))
            self._seal_into(view, h, flags, payload)
            out.append(view)
            off += n
        return out

    def unseal(self, h: HashCode, blob) -> bytes:
        """The plaintext of backend block `blob` for `h`, or `CorruptBlockError`."""
        payload = self._decrypt(h, blob)
        if not h.check(payload):
            raise CorruptBlockError(h, "decrypted data does not match its hash")
        return payload

    def _decrypt(self, h: HashCode, blob) -> bytes:
        """`unseal` without the final hash check (the caller does it)."""
        blob = bytes(blob)
        if len(blob) < OVERHEAD:
            raise CorruptBlockError(h, "backend block too short for an encrypted block")
        if blob[0] != VERSION or blob[1] & ~F_ZSTD:
            raise CorruptBlockError(h, f"not an encrypted block (version {blob[0]})")
        head = blob[:HEADER]
        t = head[2:]
        if not hmac.compare_digest(t, self.tag(h)):
            raise CorruptBlockError(
                h, "the backend block belongs to another block (moved or swapped), or another key"
            )
        try:
            payload = self._aead.decrypt(t[:12], memoryview(blob)[HEADER:], head)
        except InvalidTag:
            raise CorruptBlockError(
                h, "encrypted block fails authentication (tampered ciphertext)"
            ) from None
        if blob[1] & F_ZSTD:
            import zstandard

            try:
                payload = self._zstd().d.decompress(payload, max_output_size=MAX_PLAIN)
            except zstandard.ZstdError as e:
                raise CorruptBlockError(h, f"does not decompress: {e}") from None
        return payload

    def _open_foreign(self, blob) -> HashCode | None:
        """The plaintext hashcode of backend block `blob` if this key made it."""
        blob = bytes(blob)
        if len(blob) < OVERHEAD or blob[0] != VERSION or blob[1] & ~F_ZSTD:
            return None
        head = blob[:HEADER]
        try:
            payload = self._aead.decrypt(head[2:14], blob[HEADER:], head)
        except InvalidTag:
            return None
        if blob[1] & F_ZSTD:
            import zstandard

            try:
                payload = self._zstd().d.decompress(payload, max_output_size=MAX_PLAIN)
            except zstandard.ZstdError:
                return None
        h = self.hashclass.from_data(payload)
        return h if hmac.compare_digest(self.tag(h), head[2:]) else None

    # -- adding ------------------------------------------------------------------

    def add_many(self, datas: Sequence) -> list[HashCode]:
        """Encrypt and store each new block of `datas`; return the plaintext hashcodes."""
        return self.add_many_reporting(datas)[0]

    def add_tree_many(self, datas: Sequence) -> list[HashCode]:
        """`add_many`, the ciphertext going to the backend's tree frames."""
        return self.add_many_reporting(datas, tree=True)[0]

    def add_tree_many_reporting(self, datas: Sequence) -> tuple[list[HashCode], list[bool]]:
        """`add_tree_many`, also saying for each block whether it was new."""
        return self.add_many_reporting(datas, tree=True)

    def add_many_reporting(
        self, datas: Sequence, tree: bool = False
    ) -> tuple[list[HashCode], list[bool]]:
        """`add_many`, also saying for each block whether it was new."""
        self._check_writable()
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        hs = self.hashclass.from_data_many(datas)
        m = self.index.map
        if any(h not in m for h in hs):
            self.index.refresh()
        new_at: dict[HashCode, int] = {}
        for i, h in enumerate(hs):
            if h not in m and h not in new_at:
                new_at[h] = i
        flags = [False] * len(hs)
        if new_at:
            z = self._worth_compressing([datas[i] for i in new_at.values()])
            sealed = self.seal_many([(h, datas[i]) for h, i in new_at.items()], z)
            add = self.backend.add_tree_many if tree else self.backend.add_many
            ns = add(sealed)
            with self._lock:
                for (h, i), n in zip(new_at.items(), ns, strict=True):
                    flags[i] = h not in m
                    self.index.add(bytes(h), bytes(n))
            if len(self.index.pending) >= FLUSH_EVERY:
                self.flush()
        return hs, flags

    # -- reading -------------------------------------------------------------------

    def _backend_name(self, h: HashCode) -> bytes | None:
        n = self.index.map.get(h)
        if n is None and self.index.refresh():
            n = self.index.map.get(h)
        return n

    def _get(self, h: HashCode) -> bytes | None:
        n = self._backend_name(h)
        if n is None:
            return None
        blob = self.backend.get(self.backend.hashclass(n))
        if blob is None:
            log.warning("crypt store %s: %s is indexed but its backend block is gone", self.name, h)
            return None
        return self.unseal(h, blob)

    def get_many(self, hashcodes) -> list[bytes]:
        """The plaintext of each hashcode, in order; raises on the first
        missing or corrupt one.  The plaintexts are checked against their
        hashcodes in one batch (one native call for the lot)."""
        self._check_open()
        hs = [self.check_hashcode(h) for h in hashcodes]
        bhc = self.backend.hashclass
        names = []
        for h in hs:
            n = self._backend_name(h)
            if n is None:
                raise MissingBlockError(h, self.name)
            names.append(bhc(n))
        try:
            blobs = self.backend.get_many(names)  # one batch: the backend's fast path
        except MissingBlockError as e:  # name the plaintext hashcode, not the backend's
            h = next((h for h, n in zip(hs, names, strict=True) if n == e.hashcode), hs[0])
            raise MissingBlockError(h, self.name) from None
        out = [self._decrypt(h, blob) for h, blob in zip(hs, blobs, strict=True)]
        for h, got in zip(hs, self.hashclass.from_data_many(out), strict=True):
            if got != h:
                raise CorruptBlockError(h, "decrypted data does not match its hash")
        return out

    def _contains(self, h: HashCode) -> bool:
        return self._backend_name(h) is not None

    def contains_many(self, hashcodes) -> list[bool]:
        """For each hashcode, whether the store holds it (one index refresh)."""
        self._check_open()
        hs = list(hashcodes)
        m = self.index.map
        hc = self.hashclass
        out = [type(h) is hc and h in m for h in hs]
        if not all(out) and self.index.refresh():
            out = [type(h) is hc and h in m for h in hs]
        return out

    def __len__(self) -> int:
        self._check_open()
        self.index.refresh()
        return len(self.index.map)

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        import bisect

        self.index.refresh()
        with self._lock:
            if len(self._sorted) != len(self.index.map):
                self._sorted = sorted(self.index.map)
            keys = self._sorted
        hc = self.hashclass
        i = 0 if start is None else bisect.bisect_left(keys, bytes(start))
        return (hc(k) for k in keys[i:])

    # -- life cycle ------------------------------------------------------------

    @property
    def chunk_params(self):
        """The backend's: encryption never changes where blocks are cut."""
        return self.backend.chunk_params

    def flush(self) -> None:
        """Make the blocks durable in the backend, then the index entries."""
        if self.readonly or self.closed:
            return
        self.backend.flush()
        self.index.flush()

    def _close(self) -> None:
        from vtstore.archive import line_codec_for, register_line_codec

        for p in self._archives:
            if line_codec_for(p) is self._codec:
                register_line_codec(p, None)
        self._archives.clear()
        if self.owns:
            self.backend.close()

    # -- archives --------------------------------------------------------------

    def _register(self, path) -> Path:
        from vtstore.archive import register_line_codec

        register_line_codec(path, self._codec)
        self._archives.add(os.path.abspath(os.fspath(path)))
        return Path(path)

    def archive_path(self, name: str) -> Path:
        """Where the backend keeps archive `name`; its lines are encrypted
        while this store is open (`vtstore.archive.register_line_codec`)."""
        path_of = getattr(self.backend, "archive_path", None)
        if path_of is None:
            raise StoreError(f"store {self.backend.name} keeps no named archives")
        return self._register(path_of(name))

    @property
    def exports(self) -> dict:
        """The backend's archives, read and written encrypted."""
        out = dict(self.backend.exports)
        for v in out.values():
            if isinstance(v, (str, os.PathLike)):
                self._register(v)
        return out

    def archive_codec(self) -> ArchiveLineCodec:
        """The codec of this store's archives (for `Archive(path, codec)`)."""
        return self._codec

    # -- maintenance -----------------------------------------------------------

    @property
    def initialized(self) -> bool:
        """Whether the backend exists yet (a datadir is created on first write)."""
        return bool(getattr(self.backend, "initialized", True))

    def reindex(self, progress=None) -> CryptReindexReport:
        """Rebuild the index from the backend alone: decrypt every backend block,
        keep those this key made and that check.  `progress(n)` is called with
        the octets of each block read."""
        self._check_writable()
        self.flush()
        entries: dict[bytes, bytes] = {}
        rep = CryptReindexReport(str(self.index.path))
        for n in self.backend.hashcodes():
            try:
                blob = self.backend[n]
            except (CorruptBlockError, KeyError) as e:
                log.warning("crypt reindex: backend block %s: %s", n, e)
                rep.unreadable += 1
                continue
            h = self._open_foreign(blob)
            if h is None:
                rep.foreign += 1
            else:
                entries[bytes(h)] = bytes(n)
            if progress is not None:
                progress(len(blob))
        self.index.replace(entries)
        rep.blocks = len(entries)
        with self._lock:
            self._sorted = []
        return rep

    def info(self) -> dict:
        """A description for `vt info`."""
        from vtstore.stores.spec import store_info

        return {
            "type": "crypt",
            "name": self.name,
            "hashclass": self.hashclass.hashname,
            "key_id": self.key_id,
            "key_file": self.key_file,
            "index": str(self.index.path),
            "index_damaged_batches": self.index.damaged,
            "blocks": len(self),
            "compress": self.compress,
            "backend": store_info(self.backend),
        }
