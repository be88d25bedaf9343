"""Checking a `PackStore`: every pack against its index object.

Each index object must parse; its pack must exist and be as long as the index
says; every record of the pack must be intact (CRC, zstd); every block the
index names must be where it says and hash to its name.  A pack without an
index object is a note, not damage: an upload cut off by a crash (its blocks
were never acknowledged) or one in progress.  The local index cache is checked
to hold every indexed block.  Nothing is repaired: damage in a bucket is cured
by pushing the blocks again from another copy (`vt push`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from vtstore.errors import FormatError
from vtstore.stores.backends.packindex import decode_pack_index
from vtstore.stores.fsck import FsckReport, Problem
from vtstore.stores.index import IndexEntry
from vtstore.stores.vtd import TYPE_BLOCKS, TYPE_MASK, decode_payload, parse_record_at, read_header


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


def check_pack(store, pid: str, body: bytes | None, rep: FsckReport) -> int:
    """Check one pack and its index object; return the octets read."""
    hc = store.hashclass
    where = f"{store.backend.url}/index/{pid}"
    if body is None:
        return 0
    try:
        pairs, size = decode_pack_index(body, hc.digest_size)
    except FormatError as e:
        rep.problems.append(Problem(where, str(e)))
        return 0
    rep.files += 1
    rep.index_entries += len(pairs)
    data = store.backend.get(f"data/{pid}")
    dwhere = f"{store.backend.url}/data/{pid}"
    if data is None:
        rep.problems.append(Problem(dwhere, f"missing ({len(pairs)} blocks indexed in it)"))
        return 0
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
    return len(data)


def check_packs(store, repair: bool = False, progress=None) -> FsckReport:
    """Check the whole store (see the module docstring)."""
    rep = FsckReport(store.name)
    store.flush()
    packs = {o.name[5:] for o in store.backend.list("data/")}
    indexes = [o.name[6:] for o in store.backend.list("index/")]
    for pid in sorted(packs - set(indexes)):
        rep.notes.append(
            f"{store.backend.url}/data/{pid}: a pack without an index object"
            " (an upload cut off, or in progress); its blocks were never acknowledged"
        )
    with ThreadPoolExecutor(max_workers=4) as ex:
        bodies = ex.map(lambda p: (p, store.backend.get(f"index/{p}")), indexes)
        for pid, body in bodies:
            n = check_pack(store, pid, body, rep)
            if progress:
                progress(n)
    if repair and rep.problems:
        rep.notes.append("a damaged pack store is not repaired in place: push the blocks again")
    return rep
