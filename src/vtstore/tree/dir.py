"""Directories: sorted entries, chunked at entry boundaries.

Encoding (the data under a directory dirent's block)::

    dirdata := varint(version = 1) varint(flags) [lbytes(salt) if flags & SALTED] entry*
    entry   := lbytes(dirent)                 a dirent in binary form
             | 00 lbytes(chaff)               chaff: skipped by readers

Entries are sorted by the UTF-8 (surrogate-escaped) octets of their names and
names are unique.  The data is cut into leaf blocks only between entries, after
an entry whose name hashes to a boundary value (about one cut per 32 entries)
once the leaf holds at least `MIN_PIECE` octets, so changing one entry of a huge
directory rewrites its leaf and the path to the top, while a small directory is
one block (without the minimum, names that recur in every directory, like
`__init__.py`, split most small directories into two leaves and an indirect
block: three blocks to store, index and read instead of one).
A salted directory starts every leaf with chaff derived from the salt and the
leaf's first name: the salt keeps the directory's hash from being confirmed by
guessing its listing, and being deterministic keeps unchanged leaves identical.

Reading is bounded: directory data over `MAX_DIR_DATA` octets, or holding a
run (an RLE leaf, which valid directory data never is), is a `FormatError`
before anything is allocated; `walk` keeps its own stack, so depth is no limit.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator

import blake3

from vtstore.blocks import (
    DEFAULT_MAX_BLOCK_SIZE,
    Block,
    IndirectBuilder,
    LiteralBlock,
    RLEBlock,
    block_for,
)
from vtstore.codec import Reader, encode_bytes, encode_varint
from vtstore.errors import FormatError, VTError
from vtstore.tree.dirent import T_DIR, Dirent, check_name, decode_dirent, fsdec, fsenc
from vtstore.tree.meta import Meta

DIR_VERSION = 1
DF_SALTED = 0x01
_CUT_MASK = 0x1F  # a cut after ~1 in 32 entries
#: no cut at a boundary name before a leaf holds this many octets
MIN_PIECE = 4096
#: the most octets of directory data a reader takes (about ten million entries)
MAX_DIR_DATA = 1 << 30


def _chaff(salt: bytes, first_name: bytes) -> bytes:
    return blake3.blake3(salt + b"\0" + first_name).digest()[:16]


def encode_dir_block(
    entries: Iterable[Dirent],
    store,
    salt: bytes | None = None,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
) -> Block:
    """Store the directory of `entries` (any order) and return its top block."""
    encoded = []
    for e in entries:
        check_name(e.name, allow_empty=False)
        encoded.append((fsenc(e.name), e.encode()))
    return encode_dir_entries(encoded, store, salt, max_block_size)


def encode_dir_entries(
    encoded: Iterable[tuple[bytes, bytes]],
    store,
    salt: bytes | None = None,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
) -> Block:
    """Store a directory given as `(name octets, binary dirent)` pairs (any order).

    The pairs are trusted to agree (the name is the dirent's, checked by the
    caller): this is how the importer writes back unchanged entries in the
    octets they were read as, without decoding and encoding them again.
    """
    byname: dict[bytes, bytes] = {}
    for key, raw in encoded:
        if key in byname:
            raise FormatError(f"duplicate name {fsdec(key)!r} in directory")
        byname[key] = raw
    header = encode_varint(DIR_VERSION) + encode_varint(DF_SALTED if salt else 0)
    if salt:
        header += encode_bytes(salt)
    # directory blocks go where the store keeps tree blocks (their own frames)
    tree_view = getattr(store, "tree_view", None)
    store = tree_view() if tree_view is not None else store
    builder = IndirectBuilder(store, max_block_size)
    piece = bytearray(header)
    target = max_block_size // 2
    start_piece = True
    crc32 = zlib.crc32
    for key in sorted(byname):
        if start_piece and salt:
            piece += b"\0" + encode_bytes(_chaff(salt, key))
        start_piece = False
        raw = byname[key]
        piece += encode_varint(len(raw))
        piece += raw
        if len(piece) >= target or (len(piece) >= MIN_PIECE and (crc32(key) & _CUT_MASK) == 0):
            builder.add(block_for(bytes(piece), store, max_block_size))
            piece = bytearray()
            start_piece = True
    if piece:
        builder.add(block_for(bytes(piece), store, max_block_size))
    return builder.close()


def decode_dir_data(data) -> tuple[list[Dirent], bytes | None]:
    """Decode directory data into `(entries, salt)`, checking order and names."""
    r = Reader(data)
    version = r.varint()
    if version != DIR_VERSION:
        raise FormatError(f"unknown directory format version {version}")
    flags = r.varint()
    if flags & ~DF_SALTED:
        raise FormatError(f"unknown directory flags 0x{flags:x} at offset 1")
    salt = bytes(r.lbytes()) if flags & DF_SALTED else None
    entries = []
    last = None
    while not r.at_end():
        pos = r.pos
        raw = r.lbytes()
        if not raw:
            r.lbytes()  # chaff
            continue
        try:
            e = decode_dirent(raw)
        except FormatError as err:
            raise FormatError(f"directory entry at offset {pos}: {err}") from None
        if not e.name:
            raise FormatError(f"directory entry without a name at offset {pos}")
        key = fsenc(e.name)
        if last is not None and key <= last:
            raise FormatError(f"directory entries out of order or repeated at offset {pos}")
        last = key
        entries.append(e)
    return entries, salt


def read_dir_data(block: Block, store) -> bytes:
    """The directory data under `block`, refusing what no writer makes.

    A ref can claim any span for free (`RLE{span:99999999999999,octet:1}`, an
    indirect block repeating one leaf): data over `MAX_DIR_DATA`, or with a run
    in it (valid directory data is never one repeated octet), is a `FormatError`
    before it is allocated.
    """
    if block.span > MAX_DIR_DATA:
        raise FormatError(
            f"directory data of {block.span} octets is over the limit of {MAX_DIR_DATA}"
        )
    parts = []
    for leaf, start, end in block.slices(store):
        if type(leaf) is RLEBlock and end - start > 64:
            raise FormatError(f"directory data holds a run of {end - start} octets")
        parts.append(leaf.leaf_data(store, start, end))
    return b"".join(parts)


def dir_entries(d: Dirent, store) -> list[Dirent]:
    """The entries of directory dirent `d`, sorted by name."""
    if d.type != T_DIR:
        raise FormatError(f"{d.name or 'dirent'} is a {d.type_name}, not a directory")
    if d.block is None:
        return []
    return decode_dir_data(read_dir_data(d.block, store))[0]


def make_dir(
    entries: Iterable[Dirent],
    store,
    name: str = "",
    meta: Meta | None = None,
    salt: bytes | None = None,
    **kw,
) -> Dirent:
    """A directory dirent holding `entries`."""
    entries = list(entries)
    block = (
        encode_dir_block(entries, store, salt=salt)
        if entries or salt
        else LiteralBlock(encode_varint(DIR_VERSION) + encode_varint(0))
    )
    return Dirent(T_DIR, name=name, meta=meta, block=block, **kw)


def new_salt() -> bytes:
    """A fresh random directory salt."""
    return os.urandom(16)


def salt_of(d: Dirent | None, store) -> bytes | None:
    """The salt of directory dirent `d`'s block (None: unsalted, not a directory, unreadable).

    `vt pack --salt-dirs` and `vt mount --salt-dirs` keep an archive's salt from
    one state to the next, so unchanged directories keep their blocks.
    """
    if d is None or not d.is_dir or d.block is None:
        return None
    try:
        return decode_dir_data(read_dir_data(d.block, store))[1]
    except (VTError, KeyError):
        return None


def split_path(path: str) -> list[str]:
    """Split a relative path into safe components (empty and `.` parts dropped)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for p in parts:
        if p == "..":
            raise FormatError(f"path {path!r} climbs out with '..'")
        check_name(p)
    return parts


def resolve(root: Dirent, path: str, store) -> Dirent:
    """The dirent at `path` below directory `root`."""
    e = root
    for part in split_path(path):
        if not e.is_dir:
            raise FormatError(f"{e.name or 'top'} is not a directory (looking up {path!r})")
        for sub in dir_entries(e, store):
            if sub.name == part:
                e = sub
                break
        else:
            raise FormatError(f"no such entry {part!r} in {path!r}")
    return e


def walk(root: Dirent, store, prefix: str = "", entries=None) -> Iterator[tuple[str, Dirent]]:
    """Depth-first `(relative path, dirent)` in name order, each dir before its entries.

    An explicit stack of open directories, not recursion: any depth walks.
    `entries(dirent, path)` lists a directory (default: `dir_entries`, which
    raises on damage; a restore passes one that salvages and reports).
    """
    if entries is None:

        def entries(d, _path):
            return dir_entries(d, store)

    yield prefix, root
    if not root.is_dir:
        return
    stack = [(prefix, iter(entries(root, prefix)))]
    while stack:
        path, listing = stack[-1]
        e = next(listing, None)
        if e is None:
            stack.pop()
            continue
        sub = f"{path}/{e.name}" if path else e.name
        yield sub, e
        if e.is_dir:
            stack.append((sub, iter(entries(e, sub))))


def tree_stats(root: Dirent, store) -> dict:
    """Counts of a tree: files, dirs, others, total file bytes."""
    files = dirs = other = nbytes = 0
    for _, e in walk(root, store):
        if e.is_file:
            files += 1
            nbytes += e.size
        elif e.is_dir:
            dirs += 1
        else:
            other += 1
    return {"files": files, "dirs": dirs, "other": other, "bytes": nbytes}
