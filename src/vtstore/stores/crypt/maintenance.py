"""Whole-store passes over a crypt store's backend: `scan` (every block
decrypted and checked), `reindex` and `fsck`.

Format 2 keeps no index, so listing a store's plaintext hashcodes, rebuilding
or checking it means decrypting every backend block: the tag a block carries
is a keyed one-way hash of its plaintext hashcode, and only the plaintext
tells the hashcode.  The backend's own check (`vt fsck` of the datadir) needs
no key: it sees framing, CRCs and that each block sits under its own tag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from vtstore.errors import CorruptBlockError, MissingBlockError
from vtstore.hashes import HashCode
from vtstore.stores.fsck import FsckReport, Problem, check_generic

log = logging.getLogger(__name__)

#: backend blocks read per batch
SCAN_BATCH = 256


@dataclass
class CryptReindexReport:
    """What `CryptStore.reindex` found (the shape `vt reindex` prints)."""

    index: str
    blocks: int = 0
    foreign: int = 0
    unreadable: int = 0
    #: 2: nothing was indexed, the blocks were only decrypted and counted
    format: int = 1

    @property
    def ok(self) -> bool:
        """No backend block was unreadable."""
        return not self.unreadable

    def as_dict(self) -> dict:
        """The counts."""
        return {"blocks": self.blocks, "foreign": self.foreign, "unreadable": self.unreadable}

    def lines(self) -> list[str]:
        """One line for `vt reindex` and `vt crypt reindex`."""
        did = "indexed" if self.format == 1 else "decrypted and checked (format 2: no crypt index)"
        return [
            f"{self.index}: {self.blocks} blocks {did}, {self.foreign} blocks of another key"
            f" or not encrypted, {self.unreadable} unreadable"
        ]


def scan(store, progress=None) -> Iterator[tuple[object, HashCode | None, int, str | None]]:
    """Every backend block, decrypted and checked: `(name, h, size, error)`;
    `h` is None for a block this key did not make, or one stored under a
    name that is not its own; `error` says why a block could not be read.
    `progress(n)` is called with the octets of each block read."""
    b = store.backend
    names = list(b.hashcodes())
    for i in range(0, len(names), SCAN_BATCH):
        part = names[i : i + SCAN_BATCH]
        try:
            blobs = b.get_many(part)
        except (CorruptBlockError, MissingBlockError, KeyError):
            blobs = None  # one at a time, to say which
        for j, n in enumerate(part):
            try:
                blob = blobs[j] if blobs is not None else b[n]
            except (CorruptBlockError, KeyError) as e:
                yield n, None, 0, str(getattr(e, "detail", None) or e)
                continue
            h = store._open_foreign(blob)
            if h is not None and store.format == 2 and store._names((h,))[0] != n:
                h = None  # a block of this key under another name
            if progress is not None:
                progress(len(blob))
            yield n, h, len(blob), None


def reindex(store, progress=None) -> CryptReindexReport:
    """Format 1: rebuild the index from the backend alone: decrypt every
    backend block, keep those this key made and that check.  Format 2 has
    no index to rebuild: the same pass only counts.  `progress(n)` is
    called with the octets of each block read."""
    store._check_writable()
    store.flush()
    entries: dict[bytes, bytes] = {}
    where = str(store.index.path) if store.index is not None else store.name
    rep = CryptReindexReport(where, format=store.format)
    for n, h, _, err in store.scan(progress):
        if err is not None:
            log.warning("crypt reindex: backend block %s: %s", n, err)
            rep.unreadable += 1
        elif h is None:
            rep.foreign += 1
        else:
            entries[bytes(h)] = bytes(n)
    if store.index is not None:
        store.index.replace(entries)
    rep.blocks = len(entries)
    with store._lock:
        store._sorted = []
        store._listing = None
    return rep


def fsck(store, repair: bool = False, progress=None):
    """Check the backend without the key (a datadir: framing, CRC, names;
    `repair` is its repair), then, with the key, decrypt and authenticate
    every backend block and hash its plaintext (format 2), or every block the
    index names (format 1); one `FsckReport`."""
    own = getattr(store.backend, "fsck", None)
    rep = own(repair=repair, progress=progress) if own is not None else FsckReport(store.name)
    rep.store = store.name
    if store.format == 1:  # the index's blocks, each decrypted and hashed
        gen = check_generic(store, progress)
        rep.problems += gen.problems
        rep.notes.append(f"{gen.blocks} indexed blocks decrypted and checked")
        return rep
    ok = foreign = 0
    for n, h, _, err in store.scan(progress):
        if err is not None:
            rep.problems.append(Problem(store.name, f"backend block {n}: {err}"))
        elif h is None:
            foreign += 1
        else:
            ok += 1
    rep.notes.append(f"{ok} blocks decrypted and checked (AES-GCM and the plaintext hash)")
    if foreign:
        rep.problems.append(
            Problem(
                store.name,
                f"{foreign} backend blocks fail authentication under this key"
                " (tampered, another key's, or stored under another block's name)",
            )
        )
    return rep
