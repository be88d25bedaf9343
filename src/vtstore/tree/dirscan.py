"""Stored directories as the stat cache sees them: encoded entries, decoded on demand.

A re-import of an unchanged tree compares every stored entry with an `lstat`, and
needs only a few of its fields for that: name, type, mtime and ctime, a file's
size, whether it is in a hard-link group.  `scan_dir_data` checks a directory as
strictly as `decode_dir_data` (header, names, order, and every entry valid) but
keeps each entry as an `EncodedEntry`: those fields plus the entry's binary
form.  The `Dirent` is built only when it is needed, and an unchanged entry in a
changed directory is written back as the octets it was read as.

Writing the octets back is exact only for an entry in *canonical* form, the one
`Dirent.encode` writes (fields in tag order, no unknown field, sorted xattrs,
nothing after a varint, ...); `decode_dirent(raw).encode() == raw` for those.
`scan_dirent` recognises that form (all of it but the rare sub-block refs) and
returns `None` for anything else, unusual or invalid, which then goes through
the full decoder: it raises where the decoder raises, and an entry that decodes
but is not canonical is re-encoded, as it always was.  The C accelerator `_treecodec`, when built, implements the same
`scan_dirent`; the tests check that both agree with each other and with the
decoder.
"""

from __future__ import annotations

from vtstore.blocks import MAX_LITERAL, Block, decode_blockref
from vtstore.codec import decode_varint
from vtstore.errors import FormatError
from vtstore.hashes import hashclasses
from vtstore.tree.dir import DF_SALTED, DIR_VERSION
from vtstore.tree.dirent import (
    F_BLOCK,
    F_INO,
    F_META,
    F_NAME,
    Dirent,
    decode_dirent,
    fsdec,
    fsenc,
)

# digest octets by hash class id, for checking a hashcode blockref without building it
_DIGEST_SIZE = {c.hashid: c.digest_size for c in hashclasses()}
# the order Meta.encode writes its fields in (atime comes before the xattrs)
_META_RANK = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 10: 8, 8: 9, 9: 10}
_META_INT = frozenset((1, 2, 3, 6, 7, 10))
_MAX_LITERAL_SPAN = MAX_LITERAL * 64  # what decode_blockref accepts for a literal
# the ranges Dirent and Meta check (a value past one is left to the decoder to refuse)
_U64 = (1 << 64) - 1  # spans, ino, zig-zagged times
_U32 = (1 << 32) - 1  # uid, gid, device major and minor

# field bits of the `fields` summary: which dirent fields are present
FB_META = 1 << F_META
FB_BLOCK = 1 << F_BLOCK
FB_INO = 1 << F_INO
#: the fields the importer writes for a directory: name, metadata, block
PLAIN_DIR_FIELDS = (1 << F_NAME) | FB_META | FB_BLOCK


class _Defer(Exception):
    """Not the canonical form: leave the entry to the full decoder."""


def _varint_at(buf, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise _Defer
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    try:
        return decode_varint(buf, pos, end)
    except FormatError:
        raise _Defer from None


def _whole_varint(buf, pos: int, end: int) -> int:
    """The value of the one canonical varint that fills `buf[pos:end]`."""
    b = buf[end - 1] if end > pos else 0x80
    if b >= 0x80:  # empty, or the last octet says more follow
        raise _Defer
    if end - pos == 1:
        return b
    if end - pos > 10 or buf[pos] == 0x80:
        raise _Defer
    v = 0
    for c in buf[pos : end - 1]:
        if c < 0x80:
            raise _Defer
        v = (v << 7) | (c & 0x7F)
    return (v << 7) | b


def _scan_meta(buf, pos: int, end: int) -> tuple[int | None, int | None]:
    """Check a canonical metadata field list; return its (mtime_ns, ctime_ns)."""
    rank = 0
    mtime = ctime = None
    last_xattr = None
    while pos < end:
        tag = buf[pos]
        r = _META_RANK.get(tag)
        if r is None or r < rank or (r == rank and tag != 8):
            raise _Defer
        rank = r
        pos += 1
        n = buf[pos] if pos < end else 0x80
        if n < 0x80:
            pos += 1
        else:
            n, pos = _varint_at(buf, pos, end)
        vend = pos + n
        if vend > end:
            raise _Defer
        if tag in _META_INT:
            v = _whole_varint(buf, pos, vend)
            if v > (_U32 if tag in (2, 3) else _U64):
                raise _Defer
            if tag == 6:
                mtime = v >> 1 if not v & 1 else -(v >> 1) - 1
            elif tag == 7:
                ctime = v >> 1 if not v & 1 else -(v >> 1) - 1
            elif tag == 1 and v > 0o7777:
                raise _Defer
        elif tag == 8:
            xn, p = _varint_at(buf, pos, vend)
            if p + xn > vend or xn == 0 or 0 in buf[p : p + xn]:
                raise _Defer
            key = (fsdec(buf[p : p + xn]), bytes(buf[p + xn : vend]))
            if last_xattr is not None and key < last_xattr:
                raise _Defer
            last_xattr = key
        elif tag in (4, 5):  # user, group: no NUL
            if 0 in buf[pos:vend]:
                raise _Defer
        elif tag == 9:
            try:
                bytes(buf[pos:vend]).decode()
            except UnicodeDecodeError:
                raise _Defer from None
        pos = vend
    return mtime, ctime


def _scan_blockref(buf, pos: int, end: int) -> int:
    """Check one canonical blockref filling `buf[pos:end]`; return its span.

    Hashcode leaves and indirect blocks, RLE and literal blocks are recognised;
    a sub-block (rare) is left to the full decoder.
    """
    n, p = _varint_at(buf, pos, end)
    if p + n != end or p >= end:
        raise _Defer
    flags = buf[p]
    span, p = _varint_at(buf, p + 1, end)
    if span > _U64:
        raise _Defer
    if flags <= 1:  # a hashcode leaf or indirect block, untyped
        if p >= end:
            raise _Defer
        size = _DIGEST_SIZE.get(buf[p])
        if size is None or p + 1 + size != end:
            raise _Defer
        return span
    if flags == 2 and p < end:
        btype = buf[p]
        if btype == 1 and p + 2 == end:  # RLE: one octet
            return span
        if btype == 2 and span <= _MAX_LITERAL_SPAN and p + 1 + span == end:
            return span
    raise _Defer


def _scan(buf, pos: int, end: int) -> tuple:
    if pos >= end:
        raise _Defer
    dtype = buf[pos]
    if dtype > 7:
        raise _Defer
    pos += 1
    last = 0
    fields = 0
    name = None
    mtime = ctime = span = None
    bstart = bend = 0
    while pos < end:
        tag = buf[pos]
        if tag <= last or tag > 9:
            raise _Defer
        last = tag
        pos += 1
        n = buf[pos] if pos < end else 0x80
        if n < 0x80:
            pos += 1
        else:
            n, pos = _varint_at(buf, pos, end)
        vend = pos + n
        if vend > end:
            raise _Defer
        fields |= 1 << tag
        if tag == 1:
            name = bytes(buf[pos:vend])
            if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
                raise _Defer
        elif tag == 2:
            mtime, ctime = _scan_meta(buf, pos, vend)
        elif tag == 3:
            if n != 16:
                raise _Defer
        elif tag == 4:
            span = _scan_blockref(buf, pos, vend)
            bstart, bend = pos, vend
        elif tag == 5:
            _scan_blockref(buf, pos, vend)
        elif tag == 7:
            if _whole_varint(buf, pos, vend) > _U64:
                raise _Defer
        elif tag == 8:
            if n < 3 or buf[pos] not in b"cb":
                raise _Defer
            major, p = _varint_at(buf, pos + 1, vend)
            if major > _U32 or _whole_varint(buf, p, vend) > _U32:
                raise _Defer
        elif tag == 6:  # a symlink target: no NUL
            if 0 in buf[pos:vend]:
                raise _Defer
        # 9 (ext) holds any octets
        pos = vend
    if name is None:
        raise _Defer
    return dtype, name, fields, mtime, ctime, span, bstart, bend


def py_scan_dirent(buf, pos: int = 0, end: int | None = None) -> tuple | None:
    """Summarise the canonical dirent in `buf[pos:end]`, or return None.

    The summary is `(type, name, fields, mtime_ns, ctime_ns, span, bstart, bend)`:
    `name` the name octets, `fields` a bit mask of the field tags present
    (`1 << tag`), the metadata's mtime and ctime (None when absent), the span of
    the content block and the offsets of that blockref (0, 0 when absent).  None
    means the dirent is not in the canonical form with a non-empty name (see the
    module docstring), whether or not it is valid: `decode_dirent` judges it.
    `scan_dirent` is this function or its C twin `_treecodec.scan_dirent`.
    """
    if end is None:
        end = len(buf)
    if not 0 <= pos <= end <= len(buf):
        raise ValueError(f"bad bounds {pos}..{end} over {len(buf)} octets")
    try:
        return _scan(buf, pos, end)
    except _Defer:
        return None


try:
    from vtstore.tree._treecodec import scan_dirent as c_scan_dirent
except ImportError:  # not built: the pure-Python scanner does the same, slower
    c_scan_dirent = None

scan_dirent = c_scan_dirent or py_scan_dirent


class EncodedEntry:
    """One entry of a stored directory: its binary form and what the stat cache needs.

    `raw` is the binary dirent; `canonical` says whether it is the form
    `Dirent.encode` writes, so that it can be written back as it is.  `dirent()`
    decodes it fully (once), `block()` decodes just its content blockref.  The
    other attributes are those of the `scan_dirent` summary, `key` the name
    octets.  Made by `scan_dir_data`, `from_raw` or `from_dirent`.
    """

    __slots__ = (
        "key",
        "raw",
        "type",
        "fields",
        "mtime_ns",
        "ctime_ns",
        "span",
        "canonical",
        "_bstart",
        "_bend",
        "_dirent",
    )

    def __init__(
        self,
        raw: bytes,
        dtype: int,
        key: bytes,
        fields: int,
        mtime_ns: int | None,
        ctime_ns: int | None,
        span: int | None,
        bstart: int = 0,
        bend: int = 0,
        canonical: bool = True,
        dirent: Dirent | None = None,
    ):
        self.raw = raw
        self.type = dtype
        self.key = key
        self.fields = fields
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.span = span
        self._bstart = bstart
        self._bend = bend
        self.canonical = canonical
        self._dirent = dirent

    @classmethod
    def from_raw(cls, raw: bytes) -> EncodedEntry:
        """The entry of binary dirent `raw`; raises `FormatError` where `decode_dirent` does."""
        s = scan_dirent(raw, 0, len(raw))
        if s is not None:
            return cls(raw, *s)
        d = decode_dirent(raw)
        return cls.from_dirent(d, raw)

    @classmethod
    def from_dirent(cls, d: Dirent, raw: bytes | None = None) -> EncodedEntry:
        """The entry of a decoded dirent (`raw` its binary form, if it was read as one)."""
        enc = d.encode()
        if raw is None:
            raw = enc
        fields = 0
        for tag, v in enumerate(
            (None, d.name or None, d.meta, d.uuid, d.block, d.prev, d.target, d.ino, d.rdev, d.ext)
        ):
            if v is not None:
                fields |= 1 << tag
        m = d.meta
        return cls(
            raw,
            d.type,
            fsenc(d.name),
            fields,
            m.mtime_ns if m is not None else None,
            m.ctime_ns if m is not None else None,
            d.block.span if d.block is not None else None,
            canonical=enc == raw,
            dirent=d,
        )

    @property
    def name(self) -> str:
        """The name as text (undecodable octets surrogate-escaped)."""
        return fsdec(self.key)

    @property
    def has_ino(self) -> bool:
        """Whether the entry belongs to a hard-link group."""
        return bool(self.fields & FB_INO)

    def dirent(self) -> Dirent:
        """The fully decoded dirent."""
        d = self._dirent
        if d is None:
            d = self._dirent = decode_dirent(self.raw)
        return d

    def block_octets(self) -> bytes | None:
        """The content blockref as stored (`Block.encode()`), without decoding
        it; None when there is none or the entry was decoded already."""
        if self._dirent is not None or not self.fields & FB_BLOCK:
            return None
        return self.raw[self._bstart : self._bend]

    def block(self) -> Block | None:
        """The content block (a file's data, a directory's entries), if any."""
        if self._dirent is not None or not self.fields & FB_BLOCK:
            return self.dirent().block
        return decode_blockref(self.raw[self._bstart : self._bend])

    def encode(self) -> bytes:
        """The binary form `Dirent.encode` gives for this entry."""
        return self.raw if self.canonical else self.dirent().encode()

    def __repr__(self) -> str:
        return f"EncodedEntry({self.raw!r})"


def _bad_length(n: int, start: int, left: int) -> FormatError:
    return FormatError(f"length {n} at offset {start} runs past the end ({left} left)")


def _lbytes_at(buf, pos: int, end: int) -> tuple[int, int]:
    """`(start, end)` of the length-prefixed octets at `pos`, with the Reader's errors."""
    if pos >= end:
        raise FormatError(f"truncated varint at offset {pos}")
    b = buf[pos]
    if b < 0x80:
        n, p = b, pos + 1
    elif b != 0x80 and pos + 1 < end and buf[pos + 1] < 0x80:  # two octets: most entries
        n, p = ((b & 0x7F) << 7) | buf[pos + 1], pos + 2
    else:
        n, p = decode_varint(buf, pos, end)
    if n > end - p:
        raise _bad_length(n, pos, end - p)
    return p, p + n


def scan_dir_data(data) -> tuple[list[EncodedEntry], bytes | None]:
    """Check directory data like `decode_dir_data`; return `(entries, salt)` as
    `EncodedEntry`s, in name order."""
    buf = bytes(data)
    end = len(buf)
    version, pos = decode_varint(buf, 0, end)
    if version != DIR_VERSION:
        raise FormatError(f"unknown directory format version {version}")
    flags, pos = decode_varint(buf, pos, end)
    if flags & ~DF_SALTED:
        raise FormatError(f"unknown directory flags 0x{flags:x} at offset 1")
    salt = None
    if flags & DF_SALTED:
        s, pos = _lbytes_at(buf, pos, end)
        salt = buf[s:pos]
    entries: list[EncodedEntry] = []
    append = entries.append
    scan = scan_dirent
    last = b""
    while pos < end:
        epos = pos
        s, pos = _lbytes_at(buf, pos, end)
        if s == pos:
            pos = _lbytes_at(buf, pos, end)[1]  # chaff
            continue
        raw = buf[s:pos]
        summary = scan(raw, 0, pos - s)
        if summary is not None:
            e = EncodedEntry(raw, *summary)
        else:
            try:
                d = decode_dirent(raw)
            except FormatError as err:
                raise FormatError(f"directory entry at offset {epos}: {err}") from None
            if not d.name:
                raise FormatError(f"directory entry without a name at offset {epos}")
            e = EncodedEntry.from_dirent(d, raw)
        if e.key <= last:
            raise FormatError(f"directory entries out of order or repeated at offset {epos}")
        last = e.key
        append(e)
    return entries, salt
