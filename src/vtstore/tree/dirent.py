"""Dirents: the values naming filesystem objects.

A dirent has a type (file, dir, symlink, hard link, device, fifo, socket,
whiteout), an optional name and metadata, and type-specific fields: the content
block of a file, the encoded-entries block of a directory, a symlink's target, a
hard link's inode group, a device's kind and numbers.  Optional uuid, previous
version (a block holding the previous dirent's binary form) and extension data
apply to every type.

Binary form::

    dirent := varint(type) field*
    field  := varint(tag) lbytes(value)

Unknown tags are skipped, so newer writers can add fields.  Names are checked on
decode: no `/`, no NUL, not `.` or `..` -- a hostile store cannot make export
write outside its target.  Numbers are range-checked whenever a `Dirent` is made
(so by both decoders): `ino` below 2**64, device major and minor below 2**32,
no NUL in a symlink target.
"""

from __future__ import annotations

import uuid as uuidmod
from dataclasses import dataclass, replace

from vtstore.blocks import Block, decode_blockref
from vtstore.codec import Reader, encode_bytes, encode_varint
from vtstore.errors import FormatError
from vtstore.tree.meta import Meta

T_FILE = 0
T_DIR = 1
T_SYMLINK = 2
T_HARDLINK = 3
T_DEVICE = 4
T_FIFO = 5
T_SOCKET = 6
T_WHITEOUT = 7

TYPE_NAMES = {
    T_FILE: "file",
    T_DIR: "dir",
    T_SYMLINK: "symlink",
    T_HARDLINK: "hardlink",
    T_DEVICE: "device",
    T_FIFO: "fifo",
    T_SOCKET: "socket",
    T_WHITEOUT: "whiteout",
}
PREFIXES = {
    T_FILE: "F",
    T_DIR: "D",
    T_SYMLINK: "SymLink",
    T_HARDLINK: "HardLink",
    T_DEVICE: "Dev",
    T_FIFO: "Fifo",
    T_SOCKET: "Sock",
    T_WHITEOUT: "Whiteout",
}

F_NAME = 1
F_META = 2
F_UUID = 3
F_BLOCK = 4
F_PREV = 5
F_TARGET = 6
F_INO = 7
F_RDEV = 8
F_EXT = 9

#: the types that can head a hard-link group (the group's first name in walk
#: order carries `ino=G` and the object; every later name is a T_HARDLINK).
#: Files only in link-group format 1; every non-directory since format 2.
GROUP_TYPES = frozenset((T_FILE, T_SYMLINK, T_DEVICE, T_FIFO, T_SOCKET))
#: the types that are names of a hard-link group when they carry an `ino`
LINKED_TYPES = GROUP_TYPES | {T_HARDLINK}

#: hard-link group numbers are below 2**64
MAX_INO = (1 << 64) - 1
#: device major and minor numbers are below 2**32 (Linux's dev_t halves)
MAX_DEVNUM = (1 << 32) - 1


def check_name(name: str, allow_empty: bool = True) -> str:
    """Return `name` if it is a safe single path component, else raise `FormatError`."""
    if not isinstance(name, str):
        raise FormatError(f"dirent name must be text, got {type(name).__name__}")
    if name in (".", "..") or "/" in name or "\0" in name or (not name and not allow_empty):
        raise FormatError(f"unsafe dirent name {name!r}")
    return name


def fsenc(s: str) -> bytes:
    """A name or path as the filesystem's bytes."""
    return s.encode("utf-8", "surrogateescape")


def fsdec(b) -> str:
    """Filesystem bytes as text (undecodable octets surrogate-escaped)."""
    return bytes(b).decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Dirent:
    """One filesystem object; see the module docstring."""

    type: int
    name: str = ""
    meta: Meta | None = None
    block: Block | None = None
    uuid: uuidmod.UUID | None = None
    prev: Block | None = None
    target: str | None = None
    ino: int | None = None
    rdev: tuple[str, int, int] | None = None  # ("c"|"b", major, minor)
    ext: bytes | None = None

    def __post_init__(self):
        if self.type not in TYPE_NAMES:
            raise FormatError(f"unknown dirent type {self.type}")
        check_name(self.name)
        if self.rdev is not None:
            if self.rdev[0] not in ("c", "b"):
                raise FormatError(f"device kind must be 'c' or 'b', got {self.rdev[0]!r}")
            if not all(0 <= n <= MAX_DEVNUM for n in self.rdev[1:]):
                raise FormatError(f"device numbers {self.rdev[1:]} are not below 2**32")
        if self.target is not None and "\0" in self.target:
            raise FormatError("symlink target holds a NUL")
        if self.ino is not None and not 0 <= self.ino <= MAX_INO:
            raise FormatError(f"hard-link group {self.ino} is not below 2**64")

    # -- conveniences --------------------------------------------------------

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    @property
    def is_file(self) -> bool:
        return self.type == T_FILE

    @property
    def is_dir(self) -> bool:
        return self.type == T_DIR

    @property
    def is_symlink(self) -> bool:
        return self.type == T_SYMLINK

    @property
    def is_linked(self) -> bool:
        """Whether this dirent is one name of a hard-link group."""
        return self.ino is not None and self.type in LINKED_TYPES

    @property
    def size(self) -> int:
        """The content length of a file (0 for other types)."""
        if self.type == T_FILE and self.block is not None:
            return self.block.span
        if self.type == T_SYMLINK and self.target is not None:
            return len(fsenc(self.target))
        return 0

    def renamed(self, name: str) -> Dirent:
        return replace(self, name=name)

    def with_changes(self, **kw) -> Dirent:
        return replace(self, **kw)

    # -- binary --------------------------------------------------------------

    def encode(self) -> bytes:
        """The binary form."""
        out = bytearray(encode_varint(self.type))

        def put(tag: int, value: bytes) -> None:
            out.extend(encode_varint(tag))
            out.extend(encode_bytes(value))

        if self.name:
            put(F_NAME, fsenc(self.name))
        if self.meta is not None:
            put(F_META, self.meta.encode())
        if self.uuid is not None:
            put(F_UUID, self.uuid.bytes)
        if self.block is not None:
            put(F_BLOCK, self.block.encode())
        if self.prev is not None:
            put(F_PREV, self.prev.encode())
        if self.target is not None:
            put(F_TARGET, fsenc(self.target))
        if self.ino is not None:
            put(F_INO, encode_varint(self.ino))
        if self.rdev is not None:
            kind, major, minor = self.rdev
            put(F_RDEV, kind.encode() + encode_varint(major) + encode_varint(minor))
        if self.ext is not None:
            put(F_EXT, self.ext)
        return bytes(out)

    def __str__(self) -> str:
        from vtstore.transcribe import transcribe

        return transcribe(self)

    # -- text ----------------------------------------------------------------

    def to_fields(self) -> dict:
        from vtstore.transcribe import Binary

        d: dict = {}
        if self.name:
            d["name"] = self.name
        if self.meta is not None:
            d["meta"] = self.meta.to_fields()
        if self.uuid is not None:
            d["uuid"] = str(self.uuid)
        if self.block is not None:
            d["block"] = self.block
        if self.prev is not None:
            d["prev"] = self.prev
        if self.target is not None:
            d["target"] = self.target
        if self.ino is not None:
            d["ino"] = self.ino
        if self.rdev is not None:
            d["rdev"] = list(self.rdev)
        if self.ext is not None:
            d["ext"] = Binary(self.ext)
        return d


def decode_dirent(data) -> Dirent:
    """Decode a binary dirent; unknown field tags are skipped."""
    r = Reader(data)
    dtype = r.varint()
    if dtype not in TYPE_NAMES:
        raise FormatError(f"unknown dirent type {dtype} at offset 0")
    kw: dict = {"type": dtype}
    while not r.at_end():
        pos = r.pos
        tag = r.varint()
        value = r.lbytes()
        if tag == F_NAME:
            try:
                kw["name"] = check_name(fsdec(value))
            except FormatError as e:
                raise FormatError(f"{e} at offset {pos}") from None
        elif tag == F_META:
            kw["meta"] = Meta.decode(value)
        elif tag == F_UUID:
            if len(value) != 16:
                raise FormatError(f"uuid of {len(value)} octets at offset {pos}")
            kw["uuid"] = uuidmod.UUID(bytes=bytes(value))
        elif tag == F_BLOCK:
            kw["block"] = decode_blockref(value)
        elif tag == F_PREV:
            kw["prev"] = decode_blockref(value)
        elif tag == F_TARGET:
            kw["target"] = fsdec(value)
        elif tag == F_INO:
            vr = Reader(value)
            kw["ino"] = vr.varint()
        elif tag == F_RDEV:
            vr = Reader(value)
            kind = chr(vr.byte())
            if kind not in "cb":
                raise FormatError(f"bad device kind {kind!r} at offset {pos}")
            kw["rdev"] = (kind, vr.varint(), vr.varint())
        elif tag == F_EXT:
            kw["ext"] = bytes(value)
        # any other tag: a field from a newer version, skipped
    return Dirent(**kw)


def _from_fields(dtype: int):
    def build(d: dict) -> Dirent:
        from vtstore.transcribe import text_to_bytes

        known = {"name", "meta", "uuid", "block", "prev", "target", "ino", "rdev", "ext"}
        unknown = set(d) - known
        if unknown:
            raise FormatError(f"unknown dirent fields {sorted(unknown)}")
        kw: dict = {"type": dtype}
        if "name" in d:
            if not isinstance(d["name"], str):
                raise FormatError("dirent name must be a string")
            kw["name"] = d["name"]
        if "meta" in d:
            kw["meta"] = Meta.from_fields(d["meta"])
        if "uuid" in d:
            try:
                kw["uuid"] = uuidmod.UUID(d["uuid"])
            except (ValueError, TypeError, AttributeError):
                raise FormatError(f"bad uuid {d['uuid']!r}") from None
        for k in ("block", "prev"):
            if k in d:
                if not isinstance(d[k], Block):
                    raise FormatError(f"dirent {k} must be a block")
                kw[k] = d[k]
        if "target" in d:
            if not isinstance(d["target"], str):
                raise FormatError("symlink target must be a string")
            kw["target"] = d["target"]
        if "ino" in d:
            if type(d["ino"]) is not int or d["ino"] < 0:
                raise FormatError("ino must be a non-negative integer")
            kw["ino"] = d["ino"]
        if "rdev" in d:
            rd = d["rdev"]
            if not (
                isinstance(rd, list)
                and len(rd) == 3
                and rd[0] in ("c", "b")
                and all(type(x) is int and x >= 0 for x in rd[1:])
            ):
                raise FormatError('rdev must be ["c"|"b", major, minor]')
            kw["rdev"] = tuple(rd)
        if "ext" in d:
            kw["ext"] = text_to_bytes(d["ext"])
        return Dirent(**kw)

    return build


def _register() -> None:
    from vtstore import transcribe

    for dtype, prefix in PREFIXES.items():
        transcribe._PARSERS[prefix] = _from_fields(dtype)
    transcribe._PRINTERS[Dirent] = lambda e: (PREFIXES[e.type], e.to_fields())


_register()


def parse_dirent(text: str) -> Dirent:
    """Parse the text form of a dirent (`D{...}`, `F{...}`, ...)."""
    from vtstore.transcribe import parse_all

    v = parse_all(text)
    if not isinstance(v, Dirent):
        raise FormatError(f"not a dirent transcription: {text[:60]!r}")
    return v


def FileDirent(
    name: str = "", block: Block | None = None, meta: Meta | None = None, **kw
) -> Dirent:
    """A regular file."""
    return Dirent(T_FILE, name=name, block=block, meta=meta, **kw)


def DirDirent(name: str = "", block: Block | None = None, meta: Meta | None = None, **kw) -> Dirent:
    """A directory whose entries are encoded in `block`."""
    return Dirent(T_DIR, name=name, block=block, meta=meta, **kw)


def SymlinkDirent(name: str, target: str, meta: Meta | None = None, **kw) -> Dirent:
    """A symbolic link."""
    return Dirent(T_SYMLINK, name=name, target=target, meta=meta, **kw)


def HardLinkDirent(name: str, ino: int, meta: Meta | None = None, **kw) -> Dirent:
    """Another name for the file of inode group `ino` seen earlier in the tree."""
    return Dirent(T_HARDLINK, name=name, ino=ino, meta=meta, **kw)


def DeviceDirent(
    name: str, kind: str, major: int, minor: int, meta: Meta | None = None, **kw
) -> Dirent:
    """A character (`c`) or block (`b`) device."""
    return Dirent(T_DEVICE, name=name, rdev=(kind, major, minor), meta=meta, **kw)


def FifoDirent(name: str, meta: Meta | None = None, **kw) -> Dirent:
    """A named pipe."""
    return Dirent(T_FIFO, name=name, meta=meta, **kw)


def SocketDirent(name: str, meta: Meta | None = None, **kw) -> Dirent:
    """A UNIX socket (restored as a placeholder only when asked)."""
    return Dirent(T_SOCKET, name=name, meta=meta, **kw)


def WhiteoutDirent(name: str, **kw) -> Dirent:
    """A deletion marker for union/merge views."""
    return Dirent(T_WHITEOUT, name=name, **kw)
