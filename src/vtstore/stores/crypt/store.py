"""CryptStore: a store that encrypts every block before its backend sees it.

Block format on the backend (one backend block per plaintext block)::

    version (1) || flags (1: bit 0 = zstd) || tag (32) ||
    AES-256-GCM(block key, nonce = tag[:12], payload, aad = version || flags || tag)

    tag = BLAKE2b-256 keyed with the name key (hash class name || ":" || plaintext digest)

The encryption is deterministic: the nonce is derived from the plaintext's
hashcode, which determines the plaintext, so one nonce never encrypts two
different messages (GCM's one hard rule) and the same block always becomes the
same ciphertext, which the backend deduplicates, across processes and across
crypt stores sharing the key.

How the backend names the block (docs/FORMATS.md §12): in format 2, the
default for a new datadir, by its tag (`names`: the datadir reads the name from
the block's header), so the crypt store finds a block from the plaintext
hashcode alone, with no second hash of the ciphertext and no index of its own.
In format 1 (older stores, and backends that only name blocks by a hash of
their content) by the hash of the ciphertext, and `CryptIndex` records which
backend block holds each plaintext hashcode.  Either way, without the key
nobody can compute a backend name from a plaintext, so holding the backend does
not tell whether a known file is stored.

`get(h)` finds the backend block, checks that its tag is `h`'s (a block moved
or swapped to another name fails here), authenticates and decrypts it (a flipped
bit fails here), decompresses it and checks that it hashes to `h`: it returns
the right octets or raises `CorruptBlockError`, never other data.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag

from vtstore.errors import CorruptBlockError, MissingBlockError, StoreError
from vtstore.hashes import Hash_BLAKE3, HashCode
from vtstore.stores.base import Store
from vtstore.stores.crypt.index import CryptIndex
from vtstore.stores.crypt.keys import MasterKey
from vtstore.stores.crypt.lines import ARCHIVE_PREFIX, ArchiveLineCodec
from vtstore.stores.crypt.names import F_ZSTD, HEADER, OVERHEAD, VERSION, is_tag_class, tag_class
from vtstore.stores.vtd import PLAIN_ENTROPY
from vtstore.stores.vtdio import sample_entropy  # None without the extension

try:  # batch AES-256-GCM and tags without the GIL (libcrypto); cryptography's AESGCM
    # and hashlib's BLAKE2b without it
    from vtstore.stores.crypt import _cryptblocks
except ImportError:  # pragma: no cover - an unbuilt checkout
    _cryptblocks = None
try:  # the batch BLAKE3 digests Hash_BLAKE3.from_data_many makes objects of
    from vtstore import _blake3
except ImportError:  # pragma: no cover - an unbuilt checkout
    _blake3 = None

log = logging.getLogger(__name__)

# VT_CRYPT_GCM=vaes512: vtstore's own AES-256-GCM for CPUs with AVX-512 VAES
# (twice libcrypto's speed; the same octets) instead of the system's libcrypto,
# the default (docs/SECURITY.md)
if _cryptblocks is not None and os.environ.get("VT_CRYPT_GCM"):
    try:
        _cryptblocks.set_gcm_implementation(os.environ["VT_CRYPT_GCM"])
    except ValueError as e:
        log.warning("VT_CRYPT_GCM ignored: %s", e)

__all__ = ["ARCHIVE_PREFIX", "ArchiveLineCodec", "CryptStore", "tag_class"]

#: pending index entries that make `add_many` flush (backend first, then index)
FLUSH_EVERY = 16384
#: batches of at least this many blocks are hashed on two threads
HASH_SPLIT_MIN = 64
#: the largest block this store decompresses to
MAX_PLAIN = 64 << 20
#: what is wrong with a block that decrypted in place (`_open_checked`), by
#: `_cryptblocks`' code; the others are found before decrypting
_TAMPERED = "encrypted block fails authentication (tampered ciphertext)"
_NOT_ITS_HASH = "decrypted data does not match its hash"
_REFUSED = {4: _TAMPERED, 5: _NOT_ITS_HASH}


class CryptStore(Store):
    """Encrypts blocks into `backend` under `key`; see the module docstring.

    The format follows the backend: a backend whose hash class is a tag class
    (`names.tag_class`, a format 2 datadir) names blocks by their tag, any
    other is format 1, with the `CryptIndex` at `index`.  `compress`: zstd each
    block before encrypting it when that saves at least 1/32 (the backend
    cannot compress ciphertext).  The backend is closed with this store if
    `owns`.
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
        self._block_key = key.subkey("block")
        self._aead = AESGCM(self._block_key)
        self._name_key = key.subkey("name")
        self._codec = ArchiveLineCodec(key.subkey("archive"), key.key_id)
        self._archives: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sorted: list[bytes] = []
        self._plain_run = 0  # blocks in a row that zstd did not shrink
        self._all_new = 0  # batches in a row whose blocks were all new
        self._hasher = None  # the thread of _helper, made on first use
        bhc = backend.hashclass
        #: 2: the backend names blocks by their tag; 1: by a hash, with the index
        self.format = 2 if is_tag_class(bhc) else 1
        super().__init__(
            name=name or f"crypt:{backend.name}",
            hashclass=bhc.plain if self.format == 2 else bhc,
            readonly=readonly or backend.readonly,
        )
        self._hname = self.hashclass.hashname.encode() + b":"
        # keyed once: a copy per tag costs 0.6 µs, a keyed BLAKE2b 1.1 µs
        self._tagger = hashlib.blake2b(self._hname, key=self._name_key, digest_size=32)
        self._tagcls = bhc if self.format == 2 else None
        #: reads open and check a batch in one native call (`_open_checked`)
        self._one_call = (
            _cryptblocks is not None
            and hasattr(_cryptblocks, "open_checked")
            and self.hashclass is Hash_BLAKE3
        )
        #: format 2: (backend blocks seen, sorted plaintext digests) once listed
        self._listing: tuple[int, list[bytes]] | None = None
        self.index = (
            None
            if self.format == 2
            else CryptIndex(
                index, key.subkey("index"), key.key_id, self.hashclass.digest_size, self.readonly
            )
        )

    # -- the block format ------------------------------------------------------

    def tag(self, h: HashCode) -> bytes:
        """The keyed name tag of plaintext hashcode `h` (32 octets)."""
        b = self._tagger.copy()
        b.update(h)
        return b.digest()

    def _tags(self, hs, cls=bytes) -> list:
        """The tags of plaintext `hs`, as `cls` objects: natively in one call
        (0.1 µs a tag), else one hashlib call each (0.5 µs)."""
        if _cryptblocks is not None:
            return _cryptblocks.tag_many(self._name_key, self._hname, hs, cls)
        new = bytes.__new__
        copy = self._tagger.copy
        out = []
        for h in hs:
            b = copy()
            b.update(h)
            out.append(new(cls, b.digest()))
        return out

    def _names(self, hs) -> list:
        """The backend names (tags, of the backend's class) of plaintext `hs` (format 2)."""
        return self._tags(hs if isinstance(hs, (list, tuple)) else list(hs), self._tagcls)

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

    def _seal_into(self, out: memoryview, t: bytes, flags: int, payload) -> None:
        """Write the backend block of `payload` with tag `t` into `out`
        (exactly its size): the header, then the ciphertext encrypted in place."""
        out[0] = VERSION
        out[1] = flags
        out[2:HEADER] = t
        self._aead.encrypt_into(t[:12], payload, out[:HEADER], out[HEADER:])

    def seal(self, h: HashCode, data, try_zstd: bool = True) -> bytes:
        """The backend block for plaintext `data` whose hashcode is `h`."""
        flags, payload = self._payload(data, try_zstd)
        out = bytearray(OVERHEAD + len(payload))
        self._seal_into(memoryview(out), self.tag(h), flags, payload)
        return bytes(out)

    def seal_many(self, items, try_zstd: bool = True, tags=None) -> list:
        """The backend blocks of `(h, data)` pairs (`tags`: theirs, if known).
        When the backend copies what it is given (`add_copies`), they are views
        of one buffer that this thread reuses for its next batch: no fresh
        memory to fault in per block."""
        if try_zstd and self.compress:
            parts = [self._payload(data, True) for _, data in items]
        else:
            parts = [(0, data) for _, data in items]
        if tags is None:
            tags = self._tags([h for h, _ in items])
        if _cryptblocks is not None:  # bytes the backend keeps without a copy
            flags = bytes(f for f, _ in parts)
            return _cryptblocks.seal_many(self._block_key, tags, flags, [p for _, p in parts])
        total = sum(len(p) for _, p in parts) + OVERHEAD * len(parts)
        loc = self._local
        arena = getattr(loc, "arena", None)
        if arena is None or len(arena) < total:
            arena = loc.arena = bytearray(max(total, 1 << 20))
        mv = memoryview(arena)
        enc = self._aead.encrypt_into
        heads = (bytes((VERSION, 0)), bytes((VERSION, F_ZSTD)))
        out = []
        off = 0
        # the hot loop of adding: one header and one cipher call per block
        for (flags, payload), t in zip(parts, tags, strict=True):
            head = heads[flags] + t
            end = off + OVERHEAD + len(payload)
            arena[off : off + HEADER] = head
            enc(t[:12], payload, head, mv[off + HEADER : end])
            out.append(mv[off:end])
            off = end
        if not getattr(self.backend, "add_copies", False):
            return [bytes(v) for v in out]  # the backend may keep what it is given
        return out

    def unseal(self, h: HashCode, blob) -> bytes:
        """The plaintext of backend block `blob` for `h`, or `CorruptBlockError`."""
        payload = self._decrypt(h, blob)
        if not h.check(payload):
            raise CorruptBlockError(h, _NOT_ITS_HASH)
        return payload

    def _decrypt(self, h: HashCode, blob, t: bytes | None = None) -> bytes:
        """`unseal` without the final hash check (the caller does it); `t`:
        `h`'s tag, if known."""
        if len(blob) < OVERHEAD:
            raise CorruptBlockError(h, "backend block too short for an encrypted block")
        mv = memoryview(blob)
        if mv[0] != VERSION or mv[1] & ~F_ZSTD:
            raise CorruptBlockError(h, f"not an encrypted block (version {mv[0]})")
        head = bytes(mv[:HEADER])
        if not hmac.compare_digest(head[2:], t or self.tag(h)):
            raise CorruptBlockError(
                h, "the backend block belongs to another block (moved or swapped), or another key"
            )
        try:
            payload = self._aead.decrypt(head[2:14], mv[HEADER:], head)
        except InvalidTag:
            raise CorruptBlockError(h, _TAMPERED) from None
        return self._unzstd(h, payload) if head[1] & F_ZSTD else payload

    def _unzstd(self, h: HashCode, payload) -> bytes:
        """The zstd frame of an authenticated block, decompressed (bounded)."""
        import zstandard

        try:
            return self._zstd().d.decompress(payload, max_output_size=MAX_PLAIN)
        except zstandard.ZstdError as e:
            raise CorruptBlockError(h, f"does not decompress: {e}") from None

    def _open_many(self, hs, blobs, tags, split: bool = True) -> list:
        """`_decrypt` of a batch, the common case inline (the hot loop of
        reading); any block that is not plainly well-formed goes through
        `_decrypt`, which says what is wrong with it.  `split`: the native
        batch may take two threads."""
        if _cryptblocks is not None:
            out = _cryptblocks.open_many(self._block_key, blobs, tags, split)
            for i, (h, b, t, p) in enumerate(zip(hs, blobs, tags, out, strict=True)):
                if type(p) is int:
                    self._decrypt(h, b, t)  # raises, saying what is wrong
                    raise CorruptBlockError(h, f"encrypted block refused ({p})")  # not reached
                if b[1] & F_ZSTD:
                    out[i] = self._unzstd(h, p)
            return out
        dec = self._aead.decrypt
        out = []
        for h, b, t in zip(hs, blobs, tags, strict=True):
            if len(b) < OVERHEAD or b[0] != VERSION or b[1] != 0 or b[2:HEADER] != t:
                out.append(self._decrypt(h, b, t))  # compressed, or wrong: raises
                continue
            try:
                out.append(dec(t[:12], memoryview(b)[HEADER:], b[:HEADER]))
            except InvalidTag:
                raise CorruptBlockError(h, _TAMPERED) from None
        return out

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
        if self.format == 2:
            return self._add_named(datas, tree)
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

    def _hash_batch(self, datas: list) -> list[HashCode]:
        """The plaintext hashcodes of a batch; a large blake3 batch is hashed
        half on a thread of this store's (native BLAKE3 runs without the GIL),
        so the calling thread, which bounds adding, hashes only half."""
        hc = self.hashclass
        if hc is not Hash_BLAKE3 or len(datas) < HASH_SPLIT_MIN:
            return hc.from_data_many(datas)
        half = len(datas) // 2
        later = self._helper().submit(hc.from_data_many, datas[half:])
        return hc.from_data_many(datas[:half]) + later.result()

    def _helper(self):
        """The store's second thread (made on first use, stopped at close)."""
        with self._lock:
            if self._hasher is None:
                from concurrent.futures import ThreadPoolExecutor

                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="vt-crypt-hash")
            return self._hasher

    def _fast_path(self, datas: list) -> bool:
        """Whether `_hash_and_seal` takes this batch: format 2 over native
        BLAKE3 and `_cryptblocks`, batches coming all new, no zstd to try."""
        return (
            self._all_new >= 4
            and _cryptblocks is not None
            and _blake3 is not None
            and self.hashclass is Hash_BLAKE3
            and not self._worth_compressing(datas)
        )

    def _hash_and_seal(self, datas: list) -> tuple[list[HashCode], list]:
        """The hashcodes and sealed blocks of a batch of new blocks: each half
        hashed, tagged and sealed on a thread of its own (this one and the
        store's second), a block sealed while its octets are still in cache
        from hashing, with one hand-over per batch (`_hash_batch` then
        `seal_many` need two, with the tags between them on this thread)."""
        cb = _cryptblocks
        keys = (self._block_key, self._name_key, self._hname)
        hc = self.hashclass

        def part(ds: list, split: bool):
            return cb.seal_hashed(*keys, _blake3.digest_list(ds), hc, bytes(len(ds)), ds, split)

        if len(datas) < HASH_SPLIT_MIN:
            return part(datas, True)
        half = len(datas) // 2
        later = self._helper().submit(part, datas[half:], False)
        hs, sealed = part(datas[:half], False)
        hs2, sealed2 = later.result()
        return hs + hs2, sealed + sealed2

    def _add_named(self, datas: list, tree: bool) -> tuple[list[HashCode], list[bool]]:
        """Format 2: the backend stores each sealed block under its tag."""
        b = self.backend
        add = b.add_tree_many_reporting if tree else b.add_many_reporting
        if self._fast_path(datas):
            # all sealed, duplicates too: the backend says which were new
            hs, sealed = self._hash_and_seal(datas)
            flags = add(sealed)[1]
            if self._listing is not None:
                self._listed([h for h, f in zip(hs, flags, strict=True) if f])
            self._all_new = self._all_new + 1 if all(flags) else 0
            return hs, flags
        hs = self._hash_batch(datas)
        names = self._names(hs)
        # while batches come all new, skip asking first: sealing the rare
        # block the backend has already costs less than asking for all
        if self._all_new < 4:
            have = self.backend.contains_many(names)
        else:
            have = [False] * len(names)
        new_at: dict[HashCode, int] = {}
        for i, (h, p) in enumerate(zip(hs, have, strict=True)):
            if not p and h not in new_at:
                new_at[h] = i
        flags = [False] * len(hs)
        if new_at:
            at = list(new_at.values())
            z = self._worth_compressing([datas[i] for i in at])
            sealed = self.seal_many([(hs[i], datas[i]) for i in at], z, tags=[names[i] for i in at])
            fresh = add(sealed)[1]
            for i, f in zip(at, fresh, strict=True):
                flags[i] = f
            self._listed([hs[i] for i, f in zip(at, fresh, strict=True) if f])
        if all(flags):
            self._all_new += 1
        else:
            self._all_new = 0
        return hs, flags

    # -- reading -------------------------------------------------------------------

    def _backend_name(self, h: HashCode):
        if self.format == 2:
            return self._names((h,))[0]
        n = self.index.map.get(h)
        if n is None and self.index.refresh():
            n = self.index.map.get(h)
        return None if n is None else self.backend.hashclass(n)

    def _get(self, h: HashCode) -> bytes | None:
        n = self._backend_name(h)
        if n is None:
            return None
        try:
            blob = self.backend.get(n)
        except CorruptBlockError as e:  # name the plaintext hashcode, not the backend's
            raise CorruptBlockError(h, f"backend block {n}: {e.detail}") from None
        if blob is None:
            if self.format == 1:
                log.warning(
                    "crypt store %s: %s is indexed but its backend block is gone", self.name, h
                )
            return None
        return self.unseal(h, blob)

    def get_many(self, hashcodes) -> list[bytes]:
        """The plaintext of each hashcode, in order; raises on the first
        missing or corrupt one.  The plaintexts are checked against their
        hashcodes in one batch (one native call for the lot)."""
        self._check_open()
        hs = [self.check_hashcode(h) for h in hashcodes]
        if self.format == 2:
            return self._get_named(hs)
        names = []
        for h in hs:
            n = self._backend_name(h)
            if n is None:
                raise MissingBlockError(h, self.name)
            names.append(n)
        blobs = self._backend_get(hs, names)
        if self._one_call:
            return self._open_checked(hs, self._tags(hs), blobs)
        dec = self._decrypt
        out = [dec(h, b) for h, b in zip(hs, blobs, strict=True)]
        self._check_plain(hs, out)
        return out

    def _backend_get(self, hs: list, names: list) -> list:
        """The backend blocks `names` of plaintext `hs`, in one batch (the
        backend's fast path); an error names the plaintext hashcode."""
        try:
            return self.backend.get_many(names)
        except (MissingBlockError, CorruptBlockError) as e:
            h = next((h for h, n in zip(hs, names, strict=True) if n == e.hashcode), hs[0])
            if isinstance(e, MissingBlockError):
                raise MissingBlockError(h, self.name) from None
            raise CorruptBlockError(h, f"backend block {e.hashcode}: {e.detail}") from None

    def _get_named(self, hs: list) -> list:
        """Format 2 `get_many`: the backend blocks read in one batch; a large
        batch then natively in two halves, each opened and checked on a thread
        of its own (this one and the store's second), with one hand-over
        (`_opened`); a BLAKE3 store with `_cryptblocks` in one call instead
        (`_open_checked`).
        (Reading the second part while the first is opened measured no
        better: two backend calls cost what the overlap saved.)"""
        names = self._names(hs)
        blobs = self._backend_get(hs, names)
        if self._one_call:
            return self._open_checked(hs, names, blobs)
        n = len(hs)
        if n < HASH_SPLIT_MIN or _cryptblocks is None:
            return self._opened(hs, names, blobs, 0, n)
        half = n // 2
        later = self._helper().submit(self._opened, hs, names, blobs[half:], half, n, False)
        first = self._opened(hs, names, blobs[:half], 0, half, False)  # the first bad one first
        return first + later.result()

    def _open_checked(self, hs: list, tags: list, blobs: list) -> list:
        """The plaintexts of `blobs`, the backend blocks of BLAKE3 `hs` (whose
        tags are `tags`), opened and checked in one native call
        (`_cryptblocks.open_checked`): a group of blocks decrypted, then hashed
        while in the core's cache, without the GIL, this thread and the
        extension's pool thread taking groups as they come (so a busy second
        core never makes this thread wait).  Python sees only what the call
        left: a compressed payload (decompressed, then checked) or a refused
        block (the first raises, saying what is wrong).

        `blobs` is spent: each block the list alone holds is decrypted in its
        own buffer and becomes its plaintext, so a read faults in no new
        memory for the plaintexts."""
        out, todo = _cryptblocks.open_checked(
            self._block_key, blobs, tags, b"".join(hs), True, True
        )
        for i in todo:
            h, p = hs[i], out[i]
            if type(p) is int:
                if p in _REFUSED:  # its octets are spent: say it from the code
                    raise CorruptBlockError(h, _REFUSED[p])
                self._decrypt(h, blobs[i], tags[i])  # untouched: says what is wrong
                raise CorruptBlockError(h, f"encrypted block refused ({p})")  # not reached
            out[i] = self._unzstd(h, p)
            self._check_plain([h], [out[i]])
        return out

    def _opened(self, hs: list, names: list, blobs: list, a: int, b: int, split=True) -> list:
        """The plaintexts of `blobs`, the backend blocks of `hs[a:b]`, opened
        (`_open_many`) and checked (`_check_plain`)."""
        out = self._open_many(hs[a:b], blobs, names[a:b], split)
        self._check_plain(hs[a:b], out)
        return out

    def _check_plain(self, hs: list, out: list) -> None:
        """`CorruptBlockError` for the first of the plaintexts `out` that does
        not hash to its hashcode (GCM authenticated what a key holder sealed;
        this makes sure it sealed the block asked for)."""
        if (
            _blake3 is not None
            and self.hashclass is Hash_BLAKE3
            and _blake3.digest_list(out) == b"".join(hs)
        ):
            return  # no hashcode objects to make
        for h, got in zip(hs, self.hashclass.from_data_many(out), strict=True):
            if got != h:
                raise CorruptBlockError(h, _NOT_ITS_HASH)

    def _contains(self, h: HashCode) -> bool:
        n = self._backend_name(h)
        return n is not None and (self.format == 1 or n in self.backend)

    def contains_many(self, hashcodes) -> list[bool]:
        """For each hashcode, whether the store holds it (one index refresh, or
        one batch of backend names)."""
        self._check_open()
        hs = list(hashcodes)
        hc = self.hashclass
        ok = [type(h) is hc for h in hs]
        if self.format == 2:
            found = iter(
                self.backend.contains_many(self._names(h for h, g in zip(hs, ok, strict=True) if g))
            )
            return [g and next(found) for g in ok]
        m = self.index.map
        out = [g and h in m for h, g in zip(hs, ok, strict=True)]
        if not all(out) and self.index.refresh():
            out = [g and h in m for h, g in zip(hs, ok, strict=True)]
        return out

    def __len__(self) -> int:
        self._check_open()
        if self.format == 2:
            return len(self.backend)  # blocks of another key in it count too
        self.index.refresh()
        return len(self.index.map)

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        if self.format == 2:
            keys = self._listing_keys()
        else:
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
        if self.index is not None:
            self.index.flush()

    def _close(self) -> None:
        from vtstore.archive import line_codec_for, register_line_codec

        for p in self._archives:
            if line_codec_for(p) is self._codec:
                register_line_codec(p, None)
        self._archives.clear()
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None
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

    def archive_names(self) -> list[str]:
        """The names of the backend's archives (`vtstore.named_archives`)."""
        from vtstore.stores.backends.layout import LayoutStore

        if isinstance(self.backend, LayoutStore):
            return self.backend.archive_names()
        if getattr(self.backend, "archive_path", None) is None:
            return []  # a block server: its archives cannot be kept encrypted
        return sorted(n for n, v in self.exports.items() if isinstance(v, str | os.PathLike))

    def named_archive(self, name: str, create: bool = False):
        """Archive `name` of the backend, its lines encrypted: an object store's
        archive objects, or a datadir's `NAME.vt`."""
        from vtstore.archive import archive_in
        from vtstore.stores.backends.layout import LayoutStore

        if isinstance(self.backend, LayoutStore):
            return self.backend.named_archive(name, create, codec=self._codec)

        return archive_in(str(self.archive_path(name)), self)

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

    def scan(self, progress=None) -> Iterator[tuple[object, HashCode | None, int, str | None]]:
        """Every backend block, decrypted and checked: `(name, h, size, error)`;
        see `maintenance.scan`."""
        from vtstore.stores.crypt.maintenance import scan

        return scan(self, progress)

    def _listing_keys(self) -> list[bytes]:
        """Format 2: the sorted plaintext digests, found by decrypting every
        backend block once (nothing else tells them: tags are one-way), kept
        while the backend's count says no other store added blocks."""
        n = len(self.backend)
        with self._lock:
            if self._listing is not None and self._listing[0] == n:
                return self._listing[1]
        found = sorted({bytes(h) for _, h, _, _ in self.scan() if h is not None})
        with self._lock:
            self._listing = (n, found)
        return found

    def _listed(self, hs: list) -> None:
        """Blocks this store added itself: kept in the listing, if one was made."""
        if not hs or self._listing is None:
            return
        with self._lock:
            if self._listing is not None:
                n, keys = self._listing
                self._listing = (n + len(hs), sorted(set(keys).union(map(bytes, hs))))

    def reindex(self, progress=None):
        """Format 1: rebuild the index from the backend alone; format 2 has
        none, the same pass only counts.  See `maintenance.reindex`."""
        from vtstore.stores.crypt.maintenance import reindex

        return reindex(self, progress)

    def data_bytes(self) -> int:
        """What `fsck` reads, for its progress bar: the backend's data twice
        (its own check without the key, then every block decrypted)."""
        own = getattr(self.backend, "data_bytes", None)
        return 2 * own() if own is not None else 0

    def fsck(self, repair: bool = False, progress=None):
        """The backend's own check without the key, then every block
        decrypted; see `maintenance.fsck`."""
        from vtstore.stores.crypt.maintenance import fsck

        return fsck(self, repair, progress)

    def info(self) -> dict:
        """A description for `vt info`."""
        from vtstore.stores.spec import store_info

        d = {
            "type": "crypt",
            "name": self.name,
            "format": self.format,
            "hashclass": self.hashclass.hashname,
            "key_id": self.key_id,
            "key_file": self.key_file,
        }
        if self.index is not None:
            d.update(index=str(self.index.path), index_damaged_batches=self.index.damaged)
        d.update(blocks=len(self), compress=self.compress, backend=store_info(self.backend))
        return d
