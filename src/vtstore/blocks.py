"""Block values and binary blockrefs.

A block is an immutable reference to a run of bytes (its `span`):

- `HashCodeBlock(hashcode, span)`: a leaf whose data is stored under `hashcode`;
- `IndirectBlock(hashcode, span)`: the stored data is the concatenation of the
  binary refs of its children, and its content is theirs end to end;
- `RLEBlock(span, octet)`: `span` copies of one octet (zeros become holes);
- `LiteralBlock(data)`: small data carried inline in the ref itself;
- `SubBlock(superblock, offset, span)`: a byte range of another block.

Blocks hold no store: reading takes the store explicitly.  Two blocks are equal
when they are the same value (same kind and fields), whichever object built them.

Binary blockref (see docs/FORMATS.md)::

    blockref := varint(len(body)) body
    body     := varint(flags) varint(span) [varint(type)] type-body
    flags    : bit 0 INDIRECT, bit 1 TYPED (a type varint follows); others reserved
    type     : 0 hashcode (default when not TYPED), 1 RLE, 2 literal, 3 sub-block

The outer length lets a future reader skip fields it does not know.

Limits (hostile input meets them as a `FormatError`, never a traceback): spans
and offsets are below 2**64 (`MAX_SPAN`); sub-blocks nest at most
`MAX_SUBBLOCK_DEPTH` deep (the writer makes depth 1: a range of a leaf); a walk
through indirect blocks goes at most `MAX_INDIRECT_DEPTH` levels down (a
`CorruptBlockError` past it: a tree of 2**64 octets is under 30 levels even at
the smallest block size).  Walks are iterative, and `chunks` yields pieces of at
most `CHUNK_SIZE` octets of a run, so a ref claiming an exabyte streams rather
than allocates.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from threading import Lock

from vtstore.codec import Reader, encode_varint
from vtstore.errors import CorruptBlockError, FormatError
from vtstore.hashes import HashCode, read_hashcode

F_INDIRECT = 0x01
F_TYPED = 0x02
_KNOWN_FLAGS = F_INDIRECT | F_TYPED

T_HASHCODE = 0
T_RLE = 1
T_LITERAL = 2
T_SUBBLOCK = 3

#: Data up to this length is carried inline as a `LiteralBlock`.
MAX_LITERAL = 32
#: The default maximum size of a stored block, also the fan-out limit of indirect blocks.
DEFAULT_MAX_BLOCK_SIZE = 65536
#: Spans, offsets and sizes are below 2**64: what a u64 holds, and far beyond any file.
MAX_SPAN = (1 << 64) - 1
#: Sub-blocks of sub-blocks nest at most this deep (the writer makes depth 1).
MAX_SUBBLOCK_DEPTH = 64
#: A walk through indirect blocks goes at most this many levels down.
MAX_INDIRECT_DEPTH = 64
#: `chunks` yields runs (RLE) in pieces of at most this many octets.
CHUNK_SIZE = 1 << 20
#: `chunks` reads stored leaves in batches of about this many octets ...
READ_BATCH = 4 << 20
#: ... starting with one of this many (the first piece of a stream comes soon).
FIRST_READ_BATCH = 256 << 10


def _check_span(value: int, what: str = "span") -> int:
    if value < 0:
        raise ValueError(f"negative {what} {value}")
    if value > MAX_SPAN:
        raise ValueError(f"{what} {value} is not below 2**64")
    return value


class Block:
    """Base of the block values; see the module docstring."""

    __slots__ = ()

    span: int
    indirect = False

    def __len__(self) -> int:
        return self.span

    def __bool__(self) -> bool:
        # a zero-span block is still a block, not "false"
        return True

    # -- reading ----------------------------------------------------------

    def data(self, store) -> bytes:
        """All the bytes of this block, read through `store`."""
        return b"".join(self.chunks(store))

    def chunks(
        self, store, start: int = 0, end: int | None = None, joined: bool = False
    ) -> Iterator[bytes]:
        """The bytes of `[start:end)` as a sequence of leaf pieces (no joining;
        `joined`: each batch read comes as one piece, for a reader that would
        join them anyway: a stream sent or written out).

        A run (RLE) comes in pieces of at most `CHUNK_SIZE` octets, so memory
        stays bounded whatever span a ref claims; stored leaves come whole.
        Consecutive stored leaves are read in batches (`store.get_many`: a
        datadir reads a batch in a few coalesced preads), the first of about
        `FIRST_READ_BATCH` octets so the first piece comes soon, then doubling
        up to `READ_BATCH`: what a read holds at once.

        `joined` from a store with `block_pieces(block, start, end)` (the
        HTTP client store): that store's own large pieces, read in the runs
        it fetched ahead.
        """
        pieces = getattr(store, "block_pieces", None) if joined else None
        if pieces is not None:
            start, end = _clip(self.span, start, end)
            if start < end:
                yield from pieces(self, start, end)
            return
        run: list = []  # consecutive stored leaves, read with one get_many
        size = 0
        want = FIRST_READ_BATCH
        for leaf, lstart, lend in self.slices(store, start, end):
            if type(leaf) is HashCodeBlock:
                run.append((leaf, lstart, lend))
                size += leaf.span
                if size >= want:
                    yield from _read_run(run, store, joined)
                    run, size, want = [], 0, min(2 * want, READ_BATCH)
                continue
            if run:
                yield from _read_run(run, store, joined)
                run, size = [], 0
            if lend - lstart > CHUNK_SIZE and type(leaf) is RLEBlock:
                yield from leaf.pieces(lstart, lend)
            else:
                yield leaf.leaf_data(store, lstart, lend)
        if run:
            yield from _read_run(run, store, joined)

    def read(self, store, start: int = 0, end: int | None = None) -> bytes:
        """The bytes `[start:end)` of this block."""
        return b"".join(self.chunks(store, start, end))

    def leaf_data(self, store, start: int, end: int) -> bytes:  # pragma: no cover
        """For a leaf: its bytes `[start:end)`."""
        raise NotImplementedError

    def leaves(self, store) -> Iterator[Block]:
        """The leaf blocks whose data, end to end, is this block's data."""
        yield self

    def slices(self, store, start: int = 0, end: int | None = None):
        """Yield `(leaf, leaf_start, leaf_end)` covering `[start:end)` of this block.

        Subtrees wholly outside the range are skipped without being fetched.  The
        walk keeps its own stack (no recursion), at most `MAX_INDIRECT_DEPTH`
        indirect blocks deep.
        """
        start, end = _clip(self.span, start, end)
        if start < end:
            yield from _walk_slices(self, store, start, end)

    # -- binary form -------------------------------------------------------

    def encode(self) -> bytes:
        """The binary blockref, with its outer length prefix."""
        body = self._encode_body()
        return encode_varint(len(body)) + body

    def _encode_body(self) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def __str__(self) -> str:
        from vtstore.transcribe import transcribe

        return transcribe(self)


def _read_run(run: list, store, joined: bool = False) -> Iterator[bytes]:
    """The data of `(leaf, start, end)` slices of stored leaves, read in one
    `get_many` (one leaf: one plain read); `joined`: as one piece."""
    if len(run) == 1:
        leaf, s, e = run[0]
        yield leaf.leaf_data(store, s, e)
        return
    get_many = getattr(store, "get_many", None)
    if get_many is None:  # a minimal mapping standing in for a store
        for leaf, s, e in run:
            yield leaf.leaf_data(store, s, e)
        return
    read_joined = getattr(store, "read_joined", None) if joined else None
    try:
        if read_joined is not None:
            # one buffer for the run, checked natively (no bytes per leaf, no join)
            data, lens = read_joined([leaf.hashcode for leaf, _, _ in run], lengths=True)
            if all(n == leaf.span for (leaf, _, _), n in zip(run, lens, strict=True)):
                first, last = run[0], run[-1]
                end = len(data) - (last[0].span - last[2])
                yield data if first[1] == 0 and end == len(data) else data[first[1] : end]
                return
            # a leaf of the wrong length: the per-leaf path below names it
        datas = get_many([leaf.hashcode for leaf, _, _ in run])
    except (KeyError, CorruptBlockError):
        # a missing or damaged leaf: read one by one, so that everything
        # before it still comes out and the error is raised where it was
        for leaf, s, e in run:
            yield leaf.leaf_data(store, s, e)
        return
    out = []
    for (leaf, s, e), data in zip(run, datas, strict=True):
        if len(data) != leaf.span:
            if out:  # what comes before the bad leaf still comes out
                yield b"".join(out)
            raise CorruptBlockError(
                leaf.hashcode, f"stored length {len(data)} but the ref says {leaf.span}"
            )
        piece = data if s == 0 and e == leaf.span else data[s:e]
        if joined:
            out.append(piece)
        else:
            yield piece
    if out:
        yield b"".join(out)


def _child_ranges(subs, start: int, end: int):
    """`(child, child_start, child_end)` of the children overlapping `[start:end)`."""
    offset = 0
    for sub in subs:
        sub_end = offset + sub.span
        if sub_end > start:
            if offset >= end:
                return
            yield sub, max(start, offset) - offset, min(end, sub_end) - offset
        offset = sub_end


def _leaves_of(block: Block, store) -> Iterator[Block]:
    """The leaves of an indirect or sub-block: a leaf only partly covered comes
    as a `SubBlock` of it."""
    for leaf, s, e in block.slices(store):
        yield leaf if (s == 0 and e == leaf.span) else SubBlock(leaf, s, e - s)


def _walk_slices(block: Block, store, start: int, end: int):
    """The leaf slices of `block[start:end)`, depth first with an explicit stack."""
    stack: list = []
    cur = (block, start, end)
    while True:
        b, s, e = cur
        while type(b) is SubBlock:  # a range of a range: shift, no frame per level
            s += b.offset
            e += b.offset
            b = b.superblock
        if b.indirect:
            if len(stack) >= MAX_INDIRECT_DEPTH:
                raise CorruptBlockError(
                    b.hashcode, f"indirect blocks nested more than {MAX_INDIRECT_DEPTH} deep"
                )
            stack.append(_child_ranges(b.subblocks(store), s, e))
        else:
            yield b, s, e
        while stack:
            nxt = next(stack[-1], None)
            if nxt is not None:
                cur = nxt
                break
            stack.pop()
        else:
            return


def _clip(span: int, start: int, end: int | None) -> tuple[int, int]:
    if end is None or end > span:
        end = span
    if start < 0:
        raise ValueError(f"negative start {start}")
    return start, max(start, end)


class _HashRef(Block):
    """Shared part of the two blocks that refer to stored data by hashcode."""

    __slots__ = ("hashcode", "span")

    def __init__(self, hashcode: HashCode, span: int):
        if not isinstance(hashcode, HashCode):
            raise TypeError(f"not a hashcode: {hashcode!r}")
        _check_span(span)
        object.__setattr__(self, "hashcode", hashcode)
        object.__setattr__(self, "span", span)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self.span == other.span
            and self.hashcode == other.hashcode
        )

    def __hash__(self):
        return hash((type(self).__name__, self.hashcode, self.span))

    def __repr__(self):
        return f"{type(self).__name__}({self.hashcode}, span={self.span})"

    def stored_data(self, store) -> bytes:
        """The stored bytes under this block's hashcode."""
        return store[self.hashcode]

    def _encode_body(self) -> bytes:
        flags = F_INDIRECT if self.indirect else 0
        return encode_varint(flags) + encode_varint(self.span) + self.hashcode.encode()


class HashCodeBlock(_HashRef):
    """A leaf block: `span` bytes stored under `hashcode`."""

    __slots__ = ()

    def leaf_data(self, store, start: int, end: int) -> bytes:
        data = store[self.hashcode]
        if len(data) != self.span:
            raise CorruptBlockError(
                self.hashcode, f"stored length {len(data)} but the ref says {self.span}"
            )
        if start == 0 and end == self.span:
            return data
        return data[start:end]


# Decoded children of recently used indirect blocks, keyed by hashcode.  Content
# addressing makes this store-independent: the same hashcode always decodes to
# the same children.  Bounded so long walks do not grow memory.
_SUBBLOCK_CACHE: OrderedDict[HashCode, tuple[tuple, int]] = OrderedDict()
_SUBBLOCK_CACHE_MAX = 512
_SUBBLOCK_LOCK = Lock()


class IndirectBlock(_HashRef):
    """An interior block: the data under `hashcode` is the refs of its children."""

    __slots__ = ()
    indirect = True

    def subblocks(self, store) -> tuple[Block, ...]:
        """The child blocks, in order (decoded once, then cached).

        Their spans must add up to this ref's span, cached or not: a ref
        claiming another span for the same hashcode is a `CorruptBlockError`,
        not short output.
        """
        h = self.hashcode
        with _SUBBLOCK_LOCK:
            hit = _SUBBLOCK_CACHE.get(h)
            if hit is not None:
                _SUBBLOCK_CACHE.move_to_end(h)
        if hit is None:
            raw = store[h]
            try:
                subs = _decode_hash_refs(raw) or tuple(decode_blockrefs(raw))
            except FormatError as e:
                raise CorruptBlockError(h, f"indirect block does not decode: {e}") from None
            hit = (subs, sum(b.span for b in subs))
            with _SUBBLOCK_LOCK:
                _SUBBLOCK_CACHE[h] = hit
                if len(_SUBBLOCK_CACHE) > _SUBBLOCK_CACHE_MAX:
                    _SUBBLOCK_CACHE.popitem(last=False)
        subs, total = hit
        if total != self.span:
            raise CorruptBlockError(h, f"children span {total} but the ref says {self.span}")
        return subs

    def leaves(self, store) -> Iterator[Block]:
        return _leaves_of(self, store)


class RLEBlock(Block):
    """`span` copies of the octet `octet`; costs no storage whatever its length."""

    __slots__ = ("span", "octet")

    def __init__(self, span: int, octet: int = 0):
        _check_span(span)
        if not 0 <= octet <= 255:
            raise ValueError(f"RLE octet must be 0..255, got {octet}")
        object.__setattr__(self, "span", span)
        object.__setattr__(self, "octet", octet)

    def __setattr__(self, name, value):
        raise AttributeError("RLEBlock is immutable")

    def __eq__(self, other):
        return type(other) is RLEBlock and (self.span, self.octet) == (other.span, other.octet)

    def __hash__(self):
        return hash(("RLE", self.span, self.octet))

    def __repr__(self):
        return f"RLEBlock({self.span}, 0x{self.octet:02x})"

    def leaf_data(self, store, start: int, end: int) -> bytes:
        return bytes((self.octet,)) * (end - start)

    def pieces(self, start: int, end: int, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The octets `[start:end)` in pieces of at most `size` (one buffer reused)."""
        n = end - start
        if n <= 0:
            return
        full = bytes((self.octet,)) * min(size, n)
        while n >= size:
            yield full
            n -= size
        if n:
            yield full[:n]

    def _encode_body(self) -> bytes:
        return (
            encode_varint(F_TYPED)
            + encode_varint(self.span)
            + encode_varint(T_RLE)
            + bytes((self.octet,))
        )


class LiteralBlock(Block):
    """Small data carried inside the ref itself."""

    __slots__ = ("_data",)

    def __init__(self, data):
        object.__setattr__(self, "_data", bytes(data))

    def __setattr__(self, name, value):
        raise AttributeError("LiteralBlock is immutable")

    @property
    def span(self) -> int:
        return len(self._data)

    @property
    def literal(self) -> bytes:
        """The inline bytes."""
        return self._data

    def __eq__(self, other):
        return type(other) is LiteralBlock and self._data == other._data

    def __hash__(self):
        return hash(("LB", self._data))

    def __repr__(self):
        return f"LiteralBlock({self._data!r})"

    def leaf_data(self, store, start: int, end: int) -> bytes:
        return self._data[start:end]

    def data(self, store=None) -> bytes:
        return self._data

    def _encode_body(self) -> bytes:
        return (
            encode_varint(F_TYPED)
            + encode_varint(len(self._data))
            + encode_varint(T_LITERAL)
            + self._data
        )


class SubBlock(Block):
    """The bytes `[offset:offset+span)` of `superblock`."""

    __slots__ = ("superblock", "offset", "span")

    def __init__(self, superblock: Block, offset: int, span: int):
        if offset < 0 or span < 0 or offset + span > superblock.span:
            raise ValueError(
                f"sub-block {offset}+{span} outside its superblock of span {superblock.span}"
            )
        depth, b = 1, superblock
        while type(b) is SubBlock:
            depth += 1
            b = b.superblock
        if depth > MAX_SUBBLOCK_DEPTH:
            raise ValueError(f"sub-blocks nested more than {MAX_SUBBLOCK_DEPTH} deep")
        object.__setattr__(self, "superblock", superblock)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "span", span)

    def __setattr__(self, name, value):
        raise AttributeError("SubBlock is immutable")

    def __eq__(self, other):
        return type(other) is SubBlock and (self.superblock, self.offset, self.span) == (
            other.superblock,
            other.offset,
            other.span,
        )

    def __hash__(self):
        return hash(("SubB", self.superblock, self.offset, self.span))

    def __repr__(self):
        return f"SubBlock({self.superblock!r}, {self.offset}, {self.span})"

    def leaves(self, store) -> Iterator[Block]:
        return _leaves_of(self, store)

    def _encode_body(self) -> bytes:
        return (
            encode_varint(F_TYPED)
            + encode_varint(self.span)
            + encode_varint(T_SUBBLOCK)
            + encode_varint(self.offset)
            + self.superblock.encode()
        )


# -- decoding ------------------------------------------------------------------


def read_blockref(r: Reader) -> Block:
    """Read one binary blockref from a `Reader`.

    Nested sub-blocks are read with a loop, not recursion: a ref nesting them
    deeper than `MAX_SUBBLOCK_DEPTH` is a `FormatError`, as is any span or
    offset not below 2**64.  Octets after a body's known fields are skipped
    (the outer length is there for fields a later version adds).
    """
    chain: list[tuple[int, int, int]] = []  # enclosing sub-blocks: (offset, span, at)
    base = 0  # where position 0 of `r` is in the outermost input, for messages
    while True:
        start = r.pos
        body = r.lbytes()
        at = base + r.pos - len(body)
        br = Reader(body)
        try:
            got = _decode_body(br, at)
        except FormatError:
            raise
        except ValueError as e:
            raise FormatError(f"bad blockref at offset {base + start}: {e}") from None
        if not isinstance(got, tuple):
            block = got
            break
        if len(chain) >= MAX_SUBBLOCK_DEPTH:
            raise FormatError(
                f"sub-blocks nested more than {MAX_SUBBLOCK_DEPTH} deep at offset {at}"
            )
        chain.append((got[0], got[1], at))
        r, base = br, at  # the superblock's ref follows in this body
    for offset, span, at in reversed(chain):
        if offset + span > block.span:
            raise FormatError(
                f"sub-block {offset}+{span} outside its superblock of span {block.span}"
                f" at offset {at}"
            )
        block = SubBlock(block, offset, span)
    return block


def _decode_body(r: Reader, base: int) -> Block | tuple[int, int]:
    """One body: a block, or for a sub-block `(offset, span)` with `r` left at
    the superblock's ref."""
    flags = r.varint()
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"unknown blockref flags 0x{flags:x} at offset {base}")
    span = r.varint()
    if span > MAX_SPAN:
        raise FormatError(f"span {span} at offset {base} is not below 2**64")
    btype = T_HASHCODE
    if flags & F_TYPED:
        tpos = base + r.pos
        btype = r.varint()
        if btype not in (T_HASHCODE, T_RLE, T_LITERAL, T_SUBBLOCK):
            raise FormatError(f"unknown block type {btype} at offset {tpos}")
    if flags & F_INDIRECT and btype != T_HASHCODE:
        raise FormatError(f"indirect flag on a type {btype} block at offset {base}")
    if btype == T_HASHCODE:
        h = read_hashcode(r)
        return IndirectBlock(h, span) if flags & F_INDIRECT else HashCodeBlock(h, span)
    if btype == T_RLE:
        return RLEBlock(span, r.byte())
    if btype == T_LITERAL:
        if span > MAX_LITERAL * 64:
            raise FormatError(f"literal block of {span} octets at offset {base} is too large")
        return LiteralBlock(r.take(span))
    return r.varint(), span


def decode_blockref(data) -> Block:
    """Decode exactly one binary blockref occupying all of `data`."""
    r = Reader(data)
    b = read_blockref(r)
    if not r.at_end():
        raise FormatError(f"{r.remaining} extra octets after blockref at offset {r.pos}")
    return b


def _split_hash_refs(data, leaves_only: bool = False) -> tuple[list, list, int] | None:
    """`(hashcodes, spans, indirect)` of data made only of plain hashcode refs
    in their shortest form (what `IndirectBuilder` writes), `indirect` the
    number of them flagged INDIRECT; None for anything else (and, with
    `leaves_only`, for any indirect ref), which the general decoder then reads
    and names any fault of.  No `Block` is made: a large file has one ref a
    leaf, and this is the per-leaf cost of reading it."""
    from vtstore.hashes import _BY_ID

    hashes: list = []
    spans: list = []
    indirect = 0
    new = bytes.__new__
    limit = 0 if leaves_only else F_INDIRECT
    pos, n = 0, len(data)
    while pos < n:
        size = data[pos]
        end = pos + 1 + size
        if size >= 0x80 or end > n or size < 3:
            return None
        flags = data[pos + 1]
        if flags > limit:
            return None
        p = pos + 2
        b = data[p]
        if b == 0x80:  # non-canonical
            return None
        span = b & 0x7F
        p += 1
        while b & 0x80:
            if p - pos > 11 or p >= end:
                return None
            b = data[p]
            span = (span << 7) | (b & 0x7F)
            p += 1
        if p >= end or span > MAX_SPAN:
            return None
        hc = _BY_ID.get(data[p])
        if hc is None or p + 1 + hc.digest_size != end:
            return None
        hashes.append(new(hc, data[p + 1 : end]))
        spans.append(span)
        indirect += flags
        pos = end
    return (hashes, spans, indirect) if hashes else None


def _decode_hash_refs(data) -> tuple[Block, ...] | None:
    """`decode_blockrefs` for the common indirect block, whose refs are all
    plain hashcode refs in their shortest form; None for anything else (see
    `_split_hash_refs`).  About 4x quicker than the general path."""
    got = _split_hash_refs(data)
    if got is None:
        return None
    hashes, spans, indirect = got
    new = object.__new__
    put = object.__setattr__
    out = []
    if indirect:
        flags = list(_split_flags(data))
    for i, (h, span) in enumerate(zip(hashes, spans, strict=True)):
        blk = new(IndirectBlock if indirect and flags[i] else HashCodeBlock)
        put(blk, "hashcode", h)
        put(blk, "span", span)
        out.append(blk)
    return tuple(out)


def _split_flags(data) -> Iterator[int]:
    """The flags octet of each ref of data `_split_hash_refs` accepted."""
    pos, n = 0, len(data)
    while pos < n:
        yield data[pos + 1]
        pos += 1 + data[pos]


def leaf_refs(data) -> tuple[list, list] | None:
    """`(hashcodes, spans)` of an indirect block's data whose children are all
    stored leaves in the shortest ref form, the first level above a large
    file's leaves; None for any other data (read it with `decode_blockrefs`).

    A restore reads runs of leaves from these two lists (one `get_many` a
    run, one `pwritev`) without a `Block` a leaf."""
    got = _split_hash_refs(data, leaves_only=True)
    return None if got is None else (got[0], got[1])


def decode_blockrefs(data) -> Iterator[Block]:
    """Decode the concatenated blockrefs of an indirect block's data."""
    r = Reader(data)
    while not r.at_end():
        yield read_blockref(r)


# -- building ------------------------------------------------------------------


def leaf_block(data, store) -> Block:
    """The leaf block for `data`: a literal if tiny, RLE if one repeated octet, else stored."""
    return leaf_blocks([data], store)[0]


def is_constant(data) -> bool:
    """True when `data` is non-empty and every octet is the same."""
    n = len(data)
    if n == 0:
        return False
    first = data[0]
    if data[n - 1] != first or data[n // 2] != first:
        return False
    if not isinstance(data, bytes | bytearray):
        data = bytes(data)
    return data.count(first) == n


def leaf_blocks(datas, store) -> list[Block]:
    """The leaf blocks for each of `datas`, adding the stored ones in one batch."""
    out: list[Block | None] = []
    to_add = []
    where = []
    for data in datas:
        n = len(data)
        if n <= MAX_LITERAL:
            out.append(LiteralBlock(data))
        elif is_constant(data):
            out.append(RLEBlock(n, data[0]))
        else:
            where.append(len(out))
            out.append(None)
            to_add.append(data)
    if to_add:
        for i, h, data in zip(where, store.add_many(to_add), to_add, strict=True):
            out[i] = HashCodeBlock(h, len(data))
    return out  # type: ignore[return-value]


class IndirectBuilder:
    """Builds the indirect tree over a stream of leaf blocks, level by level.

    Each level collects encoded refs until one more would exceed `max_block_size`;
    then it stores them as an indirect block and passes that up.  Memory use is
    one partial block per level.  The shape depends only on the leaf sequence,
    so identical content always gives the identical top block.
    """

    def __init__(self, store, max_block_size: int = DEFAULT_MAX_BLOCK_SIZE):
        if max_block_size < 256:
            raise ValueError(f"max_block_size {max_block_size} is too small for indirect blocks")
        self.store = store
        self.max_block_size = max_block_size
        # per level: [encoded refs, total span, refs count, the last block]
        self._levels: list[list] = []

    def add(self, block: Block) -> None:
        """Append the next leaf."""
        self._push(0, block)

    def add_many(self, blocks: Iterable[Block]) -> None:
        """Append several leaves."""
        for b in blocks:
            self._push(0, b)

    def add_leaves(self, hashcodes: Sequence[HashCode], spans: Sequence[int]) -> None:
        """Append `HashCodeBlock(h, span)` leaves given as two parallel sequences.

        The same tree as `add_many` of those blocks, without making a block
        object per leaf: blockify's hot path (a GiB is 130,000 leaves).
        """
        if not hashcodes:
            return
        if not self._levels:
            self._levels.append([bytearray(), 0, 0, None])
        lv = self._levels[0]
        buf, total, count = lv[0], lv[1], lv[2]
        limit = self.max_block_size
        prefixes: dict = {}
        for h, span in zip(hashcodes, spans, strict=True):
            hc = type(h)
            key = (hc, span)
            head = prefixes.get(key)
            if head is None:
                if not issubclass(hc, HashCode) or span < 0:
                    raise TypeError(f"not a leaf: {h!r}, span {span!r}")
                body = b"\0" + encode_varint(span) + encode_varint(hc.hashid)
                head = prefixes[key] = encode_varint(len(body) + hc.digest_size) + body
            if count and len(buf) + len(head) + len(h) > limit:
                lv[0], lv[1], lv[2] = buf, total, count
                self._push(1, self._emit(lv))
                lv = self._levels[0]
                buf, total, count = lv[0], 0, 0
            buf += head
            buf += h
            total += span
            count += 1
        lv[0], lv[1], lv[2] = buf, total, count
        lv[3] = HashCodeBlock(hashcodes[-1], spans[-1])

    def _push(self, level: int, block: Block) -> None:
        if level == len(self._levels):
            self._levels.append([bytearray(), 0, 0, None])
        lv = self._levels[level]
        ref = block.encode()
        if lv[2] and len(lv[0]) + len(ref) > self.max_block_size:
            self._push(level + 1, self._emit(lv))
            lv = self._levels[level]
        lv[0] += ref
        lv[1] += block.span
        lv[2] += 1
        lv[3] = block

    def _emit(self, lv) -> Block:
        data = bytes(lv[0])
        block = IndirectBlock(self.store.add(data), lv[1])
        lv[0] = bytearray()
        lv[1] = 0
        lv[2] = 0
        lv[3] = None
        return block

    def close(self) -> Block:
        """Finish the tree and return its top block (an empty literal for no leaves)."""
        i = 0
        while i < len(self._levels):
            lv = self._levels[i]
            top = i == len(self._levels) - 1
            if lv[2]:
                block = lv[3] if lv[2] == 1 else self._emit(lv)
                if top:
                    self._levels = []
                    return block
                lv[0], lv[1], lv[2], lv[3] = bytearray(), 0, 0, None
                self._push(i + 1, block)
            i += 1
        self._levels = []
        return LiteralBlock(b"")


def top_block_of(
    leaves: Iterable[Block], store, max_block_size: int = DEFAULT_MAX_BLOCK_SIZE
) -> Block:
    """The top block of the indirect tree over `leaves` (a single leaf is its own top)."""
    builder = IndirectBuilder(store, max_block_size)
    builder.add_many(leaves)
    return builder.close()


def block_for(data, store, max_block_size: int = DEFAULT_MAX_BLOCK_SIZE) -> Block:
    """A block for `data`, split at fixed `max_block_size` offsets (no content-defined cuts).

    For small values (directory encodings, indirect data of known size); file
    contents go through `vtstore.chunking.blockify`.
    """
    if len(data) <= max_block_size or is_constant(data):
        return leaf_block(data, store)
    mv = memoryview(data)
    pieces = [mv[i : i + max_block_size] for i in range(0, len(mv), max_block_size)]
    return top_block_of(leaf_blocks(pieces, store), store, max_block_size)
