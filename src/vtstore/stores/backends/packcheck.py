"""Checking and repairing a `PackStore`: every pack against its index object.

Each index object must parse; its pack must exist and be as long as the index
says; every record of the pack must be intact (CRC, zstd); every block the
index names must be where it says and hash to its name.  A pack without an
index object is a note, not damage: an upload cut off by a crash (its blocks
were never acknowledged) or one in progress.  The local index cache is checked
too: it must read (an LMDB probe in a child), name no pack that is gone, and
hold every indexed block.

`repair=True` (`vt fsck --repair`) makes the store whole again with what can
still be read, and says what could not:

- an index object that is damaged, of a pack that is intact: rebuilt from the
  pack (its records name their blocks' places; the blocks are hashed);
- a pack with damaged records, or truncated: *set aside* (copied to
  `damaged/ID`, its index object to `damaged/ID.index`), its readable blocks
  written again into a new pack (acknowledged before the damaged pack's
  objects are deleted), the blocks no other pack holds reported lost;
- an index object whose pack is gone: set aside; its blocks reported lost
  unless another pack holds them;
- a pack without an index object: indexed if it is intact (its blocks are
  whole; a writer finishing its upload meanwhile finds the index there and
  goes on), else salvaged as above;
- the local index cache: rebuilt from the index objects.

Every step is safe to interrupt: the good blocks of a damaged pack are in a
new pack before the damaged pack's data object goes, and a damaged pack whose
index object went first is a pack without an index object to the next repair.
Damage that is gone for good is cured by pushing the blocks again from another
copy (`vt push`).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from vtstore.errors import FormatError
from vtstore.stores.backends.packindex import decode_pack_index, encode_pack_index
from vtstore.stores.fsck import FsckReport, Problem
from vtstore.stores.index import IndexEntry
from vtstore.stores.lmdbenv import probe_index
from vtstore.stores.recovery import walk_file
from vtstore.stores.vtd import TYPE_BLOCKS, TYPE_MASK, decode_payload, parse_record_at, read_header

log = logging.getLogger(__name__)

#: what `check_pack` found
OK, NO_INDEX, BAD_INDEX, NO_DATA, DAMAGED = "ok", "no index", "bad index", "no data", "damaged"


def _records(buf) -> tuple[dict[int, tuple[int, int, int]], str | None]:
    """Payload offset -> (flags, payload length, record end) of every record
    after the header; and why the walk stopped early, if it did."""
    out = {}
    try:
        _, pos = read_header(buf)
    except FormatError as e:
        return out, f"bad header: {e}"
    while pos < len(buf):
        r = parse_record_at(buf, pos, len(buf))
        if isinstance(r, str):
            return out, f"at {pos}: {r}"
        if r.flags & TYPE_MASK == TYPE_BLOCKS:
            out[r.payload_offset] = (r.flags, r.payload_length, r.end)
        pos = r.end
    return out, None


def check_pack(store, pid: str, body: bytes | None, rep: FsckReport) -> tuple[str, int]:
    """Check one pack and its index object; return what was found (`OK`,
    `BAD_INDEX`, `NO_DATA`, `DAMAGED`) and the octets read."""
    hc = store.hashclass
    where = f"{store.backend.url}/index/{pid}"
    if body is None:  # deleted since the listing (a gc)
        return OK, 0
    try:
        pairs, size = decode_pack_index(body, hc.digest_size)
    except FormatError as e:
        rep.problems.append(Problem(where, str(e)))
        return BAD_INDEX, 0
    rep.files += 1
    rep.index_entries += len(pairs)
    data = store.backend.get(f"data/{pid}")
    dwhere = f"{store.backend.url}/data/{pid}"
    if data is None:
        rep.problems.append(Problem(dwhere, f"missing ({len(pairs)} blocks indexed in it)"))
        return NO_DATA, 0
    nproblems = len(rep.problems)
    if len(data) != size:
        rep.problems.append(Problem(dwhere, f"{len(data)} octets, its index says {size}"))
    recs, why = _records(data)
    rep.records += len(recs)
    if why is not None:
        rep.problems.append(Problem(dwhere, why))
    payloads: dict[int, bytes | None] = {}
    for d, v in pairs:
        h = hc(d)
        e = IndexEntry.decode(v)
        if e.payload_offset not in recs:
            rep.problems.append(Problem(dwhere, f"no intact record at {e.payload_offset}", h))
            continue
        if e.payload_offset not in payloads:
            flags, plen, _ = recs[e.payload_offset]
            try:
                payloads[e.payload_offset] = decode_payload(
                    flags, data[e.payload_offset : e.payload_offset + plen]
                )
            except FormatError as x:
                payloads[e.payload_offset] = None
                rep.problems.append(Problem(dwhere, f"record at {e.payload_offset}: {x}"))
        payload = payloads[e.payload_offset]
        if payload is None:
            continue
        block = payload[e.data_offset : e.data_offset + e.data_length]
        if len(block) != e.data_length or not h.check(block):
            rep.problems.append(Problem(dwhere, "block does not match its hash", h))
            continue
        rep.blocks += 1
        rep.bytes += len(block)
    missing = [
        d
        for d, ok in zip(pairs, store.index.contains_many(d for d, _ in pairs), strict=True)
        if not ok
    ]
    if missing:
        rep.notes.append(f"{where}: {len(missing)} blocks not in the local index yet")
    return (DAMAGED if len(rep.problems) > nproblems else OK), len(data)


def check_packs(store, repair: bool = False, progress=None) -> FsckReport:
    """Check the whole store; with `repair`, repair it (see the module docstring)."""
    rep = FsckReport(store.name)
    if repair:
        store._check_writable()
    store.flush()
    packs = {o.name[5:] for o in store.backend.list("data/")}
    indexes = [o.name[6:] for o in store.backend.list("index/")]
    found: dict[str, str] = {}
    for pid in sorted(packs - set(indexes)):
        rep.notes.append(
            f"{store.backend.url}/data/{pid}: a pack without an index object"
            " (an upload cut off, or in progress); its blocks were never acknowledged"
        )
        found[pid] = NO_INDEX
    with ThreadPoolExecutor(max_workers=4) as ex:
        bodies = ex.map(lambda p: (p, store.backend.get(f"index/{p}")), indexes)
        for pid, body in bodies:
            found[pid], n = check_pack(store, pid, body, rep)
            if progress:
                progress(n)
    cache_bad = _check_cache(store, rep, set(indexes))
    if repair:
        _repair(store, rep, found, cache_bad)
    return rep


def _check_cache(store, rep: FsckReport, indexes: set[str]) -> bool:
    """Check the local index cache; return whether it wants rebuilding."""
    path = os.path.join(store.cache_dir, "index")
    why = probe_index(path)
    if why is not None:
        rep.problems.append(Problem(path, f"local index cache damaged: {why}"))
        return True
    gone = [fi.uuid for fi in store.index.files().values() if fi.uuid not in indexes]
    if gone:
        rep.notes.append(f"{path}: the local index names {len(gone)} packs that are gone")
        return True
    return any("not in the local index" in n for n in rep.notes)


def _repair(store, rep: FsckReport, found: dict[str, str], cache_bad: bool) -> None:
    b = store.backend
    hc = store.hashclass
    suspects: set[bytes] = set()  # blocks of damaged packs: lost unless found again
    salvage: dict[str, list] = {}  # pack -> its readable blocks, to write again
    for pid, what in sorted(found.items()):
        if what == OK:
            continue
        body = b.get(f"index/{pid}")
        if body is not None:
            try:
                suspects.update(d for d, _ in decode_pack_index(body, hc.digest_size)[0])
            except FormatError:
                pass
        if what == NO_DATA:
            _set_aside(store, rep, pid, None, body)
            continue
        data = b.get(f"data/{pid}")
        if data is None:  # gone meanwhile
            continue
        pairs, blocks, clean = _walk(store, pid, data)
        if clean and what in (NO_INDEX, BAD_INDEX):
            new = encode_pack_index(pairs, len(data))
            if what == NO_INDEX:
                b.put_if_absent(f"index/{pid}", new)
            else:
                b.put(f"index/{pid}", new)
            rep.repaired.append(f"{b.url}/index/{pid}: written from its pack ({len(pairs)} blocks)")
            continue
        suspects.update(d for d, _ in pairs)
        # the damaged pack is kept aside before anything else changes
        _set_aside(store, rep, pid, data, body)
        salvage[pid] = blocks
    if cache_bad or any(w != OK for w in found.values()):
        n = store.rebuild_cache()
        rep.repaired.append(f"{store.cache_dir}: local index rebuilt from {n} index objects")
    for pid, blocks in salvage.items():
        if blocks:
            store.add_many([data for _, data in blocks])
            store.flush()  # the good blocks are in a new pack before the old one goes
            rep.repaired.append(
                f"{b.url}/data/{pid}: {len(blocks)} readable blocks written into a new pack"
            )
        b.delete(f"data/{pid}")
    if suspects:
        hs = [hc(d) for d in sorted(suspects)]
        lost = [h for h, ok in zip(hs, store.contains_many(hs), strict=True) if not ok]
        for h in lost:
            rep.problems.append(Problem(b.url, "block lost (no intact copy in the store)", h))
        rep.repaired.append(
            f"{len(lost)} blocks lost for good (listed as damage; push them again from"
            " another copy with vt push)"
            if lost
            else "no block lost"
        )


def _walk(store, pid: str, data: bytes):
    """The blocks of pack `pid` that its intact records hold: `(index pairs,
    [(digest, data)], whether the pack is intact throughout)`."""
    try:
        meta, start = read_header(data)
        clean = meta.get("uuid") in (pid, None)
    except FormatError:
        start, clean = 0, False
    pairs = []
    blocks = []
    for kind, rec, found in walk_file(data, 0, store.hashclass, start, len(data)):
        if kind != "blocks":
            clean = False
            continue
        payload = decode_payload(
            rec.flags, data[rec.payload_offset : rec.payload_offset + rec.payload_length]
        )
        for d, e in found:
            pairs.append((bytes(d), e.encode()))
            blocks.append((bytes(d), payload[e.data_offset : e.data_offset + e.data_length]))
    return pairs, blocks, clean


def _set_aside(store, rep: FsckReport, pid: str, data: bytes | None, body: bytes | None) -> None:
    """Copy a damaged pack and its index object under `damaged/`, then delete
    the index object (the data object goes once its good blocks are saved)."""
    b = store.backend
    if data is not None:
        b.put(f"damaged/{pid}", data)
    if body is not None:
        b.put(f"damaged/{pid}.index", body)
    b.delete(f"index/{pid}")
    rep.repaired.append(f"{b.url}/data/{pid}: set aside as {b.url}/damaged/{pid}")
