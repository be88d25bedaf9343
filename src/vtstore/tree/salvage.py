"""Reading a stored tree past damage: file content range by range, directories
entry by entry, and the size of a tree without expanding shared directories.

A restore (`vtstore.tree.fsexport`, `vtstore.tree.tar`) reads through these so
that a missing or corrupt block costs exactly what it covers: `iter_content`
yields the readable ranges of a file and marks the unreadable ones,
`read_entries` salvages the decodable entries of a damaged directory, and
`tree_totals` measures a tree (for --max-files/--max-size) reading each distinct
directory block once, so a DAG bomb is refused in a few reads.  Every walk is
iterative: hostile nesting cannot exhaust the stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from vtstore.blocks import HashCodeBlock, IndirectBlock, RLEBlock, SubBlock
from vtstore.codec import Reader, encode_varint
from vtstore.errors import CorruptBlockError, FormatError, MissingBlockError, VTError
from vtstore.tree.dir import DIR_VERSION, MAX_DIR_DATA, decode_dir_data, read_dir_data
from vtstore.tree.dirent import T_DIR, T_FILE, Dirent, decode_dirent
from vtstore.tree.dirscan import scan_dir_data

#: what a damaged store raises; restores go on past these
DAMAGE = (MissingBlockError, CorruptBlockError, FormatError)


class LimitError(VTError):
    """A restore would exceed its --max-files or --max-size limit."""


@dataclass
class Damage:
    """One object a restore could not restore whole: its path and what was wrong."""

    path: str
    what: list[str]
    kind: str = "file"  # "file": written as NAME.vt-damaged; "dir": entries lost
    lost_bytes: int = 0

    def line(self) -> str:
        more = f" and {len(self.what) - 2} more" if len(self.what) > 2 else ""
        return f"{self.path} ({'; '.join(self.what[:2])}{more})"


def damage_text(err: Exception) -> str:
    """What a damage error says, without the store's name (the same in every line)."""
    h = getattr(err, "hashcode", None)
    if isinstance(err, MissingBlockError):
        return f"missing block {h}"
    return str(err)


# -- reading past damage -------------------------------------------------------

DATA, ZEROS, FILL, BAD, LEAF = range(5)


def iter_content(block, store, fetch_leaves: bool = True) -> Iterator[tuple]:
    """The content of `block` as `(kind, length, value)` pieces, in order, past damage.

    Kinds: `DATA` (value: the bytes), `ZEROS` (an RLE run of zeros), `FILL` (an
    RLE run of the octet `value`), `BAD` (value: the damage error; the range
    cannot be read), and with `fetch_leaves=False` `LEAF` (value: `(leaf, start,
    end)`, a stored leaf not read).  The walk is iterative, so a hostile chain of
    indirect blocks cannot exhaust the stack, and a damaged indirect block costs
    exactly the range it covers.
    """
    if block is None:
        return
    stack = [(block, 0, block.span)]
    while stack:
        b, s, e = stack.pop()
        if s >= e:
            continue
        if isinstance(b, IndirectBlock):
            try:
                subs = b.subblocks(store)
            except DAMAGE as err:
                yield BAD, e - s, err
                continue
            todo = []
            off = 0
            for sub in subs:
                end = off + sub.span
                if end > s and off < e:
                    todo.append((sub, max(s, off) - off, min(e, end) - off))
                off = end
            todo.reverse()
            stack.extend(todo)
        elif isinstance(b, SubBlock):
            stack.append((b.superblock, b.offset + s, b.offset + e))
        elif isinstance(b, RLEBlock):
            yield (ZEROS, e - s, 0) if b.octet == 0 else (FILL, e - s, b.octet)
        elif not fetch_leaves and hasattr(b, "hashcode"):
            yield LEAF, e - s, (b, s, e)
        else:
            try:
                data = b.leaf_data(store, s, e)
            except DAMAGE as err:
                yield BAD, e - s, err
                continue
            yield DATA, e - s, data


def fetch_leaves(store, hashcodes) -> dict:
    """`{hashcode: data or the damage error}` for `hashcodes`, read with one
    `store.get_many` (duplicates asked once).

    `get_many` stops at the first missing or corrupt block, so when it raises
    a damage error the batch is read again leaf by leaf: one bad leaf costs its
    own range, never its neighbours'.  Errors that are not damage (the store's
    I/O) propagate.
    """
    uniq = list(dict.fromkeys(hashcodes))
    if not uniq:
        return {}
    try:
        return dict(zip(uniq, store.get_many(uniq), strict=True))
    except DAMAGE:
        pass
    out: dict = {}
    for h in uniq:
        try:
            out[h] = store[h]
        except DAMAGE as err:
            out[h] = err
    return out


def leaf_piece(leaf: HashCodeBlock, start: int, end: int, got) -> tuple:
    """The `(kind, length, value)` piece `[start:end)` of a stored `leaf`, given
    what `fetch_leaves` found for it: `DATA` with a memoryview (no copy), or `BAD`
    (also when the stored length is not the ref's span, as `leaf_data` checks)."""
    n = end - start
    if isinstance(got, Exception):
        return BAD, n, got
    if len(got) != leaf.span:
        err = CorruptBlockError(
            leaf.hashcode, f"stored length {len(got)} but the ref says {leaf.span}"
        )
        return BAD, n, err
    if start == 0 and end == leaf.span:
        return DATA, n, got
    return DATA, n, memoryview(got)[start:end]


def read_entries(d: Dirent, store) -> tuple[list[Dirent], list[str]]:
    """The entries of directory `d` that can be read, and what could not be.

    An intact directory decodes as one (order and names checked).  A damaged one
    is salvaged run by run: each readable stretch of its data is decoded entry
    by entry until it stops making sense, so one lost leaf of a large directory
    loses only the entries in that leaf (and perhaps one beside it).
    """
    if d.type != T_DIR:
        raise FormatError(f"{d.name or 'dirent'} is a {d.type_name}, not a directory")
    if d.block is None:
        return [], []
    if d.block.span > MAX_DIR_DATA:  # a ref claims any span for free; no writer makes this
        return [], [f"directory data of {d.block.span:,} octets is over the limit"]
    problems: list[str] = []
    runs: list[bytearray] = [bytearray()]
    for kind, n, value in iter_content(d.block, store):
        if kind == BAD:
            problems.append(damage_text(value))
            runs.append(bytearray())
        elif kind == DATA:
            runs[-1] += value
        else:  # an RLE run in a directory is nonsense; treat it as a gap
            problems.append(f"{n} octets of run-length data")
            runs.append(bytearray())
    if not problems:
        try:
            return decode_dir_data(runs[0])[0], []
        except FormatError as err:
            problems.append(f"directory data: {err}")
    entries: list[Dirent] = []
    for i, run in enumerate(runs):
        if i == 0:
            r = Reader(run)
            try:
                if r.varint() != DIR_VERSION:
                    raise FormatError("unknown directory version")
                if r.varint() & 1:
                    r.lbytes()
            except FormatError:
                continue
            start = r.pos
        else:
            start = 0
        entries.extend(_salvage_entries(memoryview(run)[start:]))
    seen = set()
    out = []
    for e in entries:  # a salvaged run can repeat a name; keep the first
        if e.name not in seen:
            seen.add(e.name)
            out.append(e)
    return out, problems


def _salvage_entries(data) -> list[Dirent]:
    r = Reader(encode_varint(DIR_VERSION) + encode_varint(0) + bytes(data))
    r.varint()
    r.varint()
    out = []
    try:
        while not r.at_end():
            raw = r.lbytes()
            if not raw:
                r.lbytes()  # chaff
                continue
            e = decode_dirent(raw)
            if not e.name:
                break
            out.append(e)
    except FormatError:
        pass
    return out


def tree_totals(
    root: Dirent, store, max_entries: int | None = None, max_bytes: int | None = None
) -> tuple[int, int]:
    """`(entries, file bytes)` below `root` (itself included), without expanding shared
    directories: each distinct directory block is read once and its totals reused,
    so a DAG that expands to 10^8 files is measured in a few reads.

    Raises `LimitError` as soon as some subtree alone exceeds a limit.  Unreadable
    directories count as empty (the restore reports them).
    """
    if not root.is_dir:
        return 1, root.size
    if root.block is None:
        return 1, 0
    memo: dict = {}

    def frame(block):
        # the quick scanner reads type, span and blockref without building dirents
        try:
            scanned = scan_dir_data(read_dir_data(block, store))[0]
            entries = [
                (x.type, x.span or 0, x.block() if x.type == T_DIR else None) for x in scanned
            ]
        except DAMAGE:
            try:
                found = read_entries(Dirent(T_DIR, block=block), store)[0]
            except DAMAGE:
                found = []
            entries = [(x.type, x.size, x.block) for x in found]
        return [block, entries, 0, 0, 0]  # block, entries, next, entries, bytes

    def check(n: int, b: int) -> None:
        if max_entries is not None and n > max_entries:
            raise LimitError(
                f"the tree has more than {max_entries:,} entries (--max-files);"
                " lift the limit if that is meant"
            )
        if max_bytes is not None and b > max_bytes:
            raise LimitError(
                f"the tree holds more than {max_bytes:,} bytes of files (--max-size);"
                " lift the limit if that is meant"
            )

    stack = [frame(root.block)]
    while stack:
        f = stack[-1]
        entries = f[1]
        if f[2] < len(entries):
            etype, span, block = entries[f[2]]
            if etype == T_DIR and block is not None:
                sub = memo.get(block)
                if sub is None:
                    stack.append(frame(block))
                    continue
                f[3] += sub[0]
                f[4] += sub[1]
            elif etype == T_FILE:
                f[4] += span
            f[2] += 1
            f[3] += 1
            check(f[3], f[4])
        else:
            memo[f[0]] = (f[3], f[4])
            stack.pop()
    n, b = memo[root.block]
    check(n + 1, b)
    return n + 1, b
