"""Hash classes and hashcodes.

A hashcode is the digest of a block's data under one hash class.  The classes are
registered by name and by numeric id: `sha1` (0), `sha256` (1), `blake3` (2, the
default) and `sha3_256` (3).  Forms:

- text: `blake3:<hex>`
- binary: `varint(id) + digest`
- file name: `<hex>.blake3`

`HashCode` is a `bytes` subclass holding just the digest, so hashcodes sort and
compare as their digests and cost little memory; the class carries the rest.
Nothing outside this module assumes a digest length: use `H.digest_size`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# hashlib (OpenSSL, ~2 ms) and the blake3 package are imported where used: a
# blake3 store hashes with our own _blake3, and most commands never need either.
try:  # our own batch BLAKE3 (GIL released); the blake3 package is the fallback
    from vtstore import _blake3 as _native_b3
except ImportError:  # pragma: no cover - an unbuilt checkout
    _native_b3 = None

from vtstore.codec import Reader, decode_varint, encode_varint
from vtstore.errors import FormatError, HashClassMismatchError

_BY_NAME: dict[str, type[HashCode]] = {}
_BY_ID: dict[int, type[HashCode]] = {}

_HEX_RE = re.compile(r"[0-9a-f]+\Z")


class HashCode(bytes):
    """The digest of some data; subclasses fix the hash function."""

    __slots__ = ()

    hashname: str = ""
    hashid: int = -1
    digest_size: int = 0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.hashname:
            _BY_NAME[cls.hashname] = cls
            _BY_ID[cls.hashid] = cls

    def __new__(cls, digest):
        if not cls.hashname:
            raise TypeError("HashCode is abstract: use a hash class such as Hash_BLAKE3")
        if len(digest) != cls.digest_size:
            raise FormatError(
                f"{cls.hashname} digest must be {cls.digest_size} octets, got {len(digest)}"
            )
        return super().__new__(cls, digest)

    # -- making hashcodes -------------------------------------------------

    @classmethod
    def hash_function(cls, data) -> bytes:  # pragma: no cover - overridden
        """Return the raw digest of `data`."""
        raise NotImplementedError

    @classmethod
    def from_data(cls, data) -> HashCode:
        """Return the hashcode of `data` (any buffer)."""
        # the digest is ours and of the right length: skip __new__'s check
        return bytes.__new__(cls, cls.hash_function(data))

    @classmethod
    def from_data_many(cls, datas) -> list[HashCode]:
        """The hashcodes of each of `datas` (a sequence of buffers), in order.

        Stores hash a batch at once through this; classes with a native batch
        hash override it to hash the whole batch without the GIL.
        """
        new = bytes.__new__
        fn = cls.hash_function
        return [new(cls, fn(d)) for d in datas]

    @classmethod
    def from_hex(cls, hexstr: str) -> HashCode:
        """Parse the hex digest of this class."""
        if len(hexstr) != 2 * cls.digest_size or not _HEX_RE.match(hexstr):
            raise FormatError(f"not a {cls.hashname} hex digest: {hexstr[:80]!r}")
        return cls(bytes.fromhex(hexstr))

    # -- forms ----------------------------------------------------------------

    @property
    def hex_digest(self) -> str:
        """The digest as lower case hex."""
        return self.hex()

    def __str__(self) -> str:
        return f"{self.hashname}:{self.hex()}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()})"

    @property
    def filename(self) -> str:
        """The file-name form `<hex>.<hashname>`."""
        return f"{self.hex()}.{self.hashname}"

    def encode(self) -> bytes:
        """The binary form: `varint(hashid) + digest`."""
        return encode_varint(self.hashid) + bytes(self)

    def check(self, data) -> bool:
        """True if `data` hashes to this hashcode."""
        return self.hash_function(data) == self

    def __reduce__(self):
        return (type(self), (bytes(self),))

    # bytes defines == and hash over the digest only; hashcodes of different
    # classes must never compare equal, so mix the class in.
    def __eq__(self, other):
        if isinstance(other, HashCode):
            return type(self) is type(other) and bytes.__eq__(self, other)
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    # the C slot itself, not a Python wrapper: dict and set lookups stay fast
    __hash__ = bytes.__hash__


class Hash_SHA1(HashCode):
    """SHA-1 (20 octets); kept for old stores, not for new ones."""

    __slots__ = ()
    hashname = "sha1"
    hashid = 0
    digest_size = 20

    @classmethod
    def hash_function(cls, data) -> bytes:
        import hashlib

        return hashlib.sha1(data).digest()


class Hash_SHA256(HashCode):
    """SHA-256 (32 octets)."""

    __slots__ = ()
    hashname = "sha256"
    hashid = 1
    digest_size = 32

    @classmethod
    def hash_function(cls, data) -> bytes:
        import hashlib

        return hashlib.sha256(data).digest()


class Hash_BLAKE3(HashCode):
    """BLAKE3 (32 octets), the default: the fastest of the four."""

    __slots__ = ()
    hashname = "blake3"
    hashid = 2
    digest_size = 32

    @classmethod
    def hash_function(cls, data) -> bytes:
        if _native_b3 is not None:
            return _native_b3.digest(data)
        import blake3

        return blake3.blake3(data).digest()

    @classmethod
    def from_data(cls, data) -> HashCode:
        """Return the hashcode of `data` (one call fewer than the generic one:
        every single add goes through here)."""
        if _native_b3 is not None:
            return bytes.__new__(cls, _native_b3.digest(data))
        import blake3

        return bytes.__new__(cls, blake3.blake3(data).digest())

    @classmethod
    def from_data_many(cls, datas) -> list[HashCode]:
        """The hashcodes of a batch, hashed natively in one call (without the
        GIL for batches of 32 KiB or more)."""
        if _native_b3 is None:
            return super().from_data_many(datas)
        d = memoryview(_native_b3.digest_list(datas))
        new = bytes.__new__
        return [new(cls, d[i : i + 32]) for i in range(0, len(d), 32)]


class Hash_SHA3_256(HashCode):
    """SHA3-256 (32 octets)."""

    __slots__ = ()
    hashname = "sha3_256"
    hashid = 3
    digest_size = 32

    @classmethod
    def hash_function(cls, data) -> bytes:
        import hashlib

        return hashlib.sha3_256(data).digest()


DEFAULT_HASHCLASS: type[HashCode] = Hash_BLAKE3


def hashclasses() -> list[type[HashCode]]:
    """Every registered hash class, by id."""
    return [_BY_ID[k] for k in sorted(_BY_ID)]


def hashclass_by_name(name: str) -> type[HashCode]:
    """The hash class called `name` (`blake3`, `sha256`, ...)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise FormatError(
            f"unknown hash class {name!r} (known: {', '.join(sorted(_BY_NAME))})"
        ) from None


def hashclass_by_id(hashid: int) -> type[HashCode]:
    """The hash class with numeric id `hashid`."""
    try:
        return _BY_ID[hashid]
    except KeyError:
        raise FormatError(f"unknown hash class id {hashid}") from None


def default_hashclass() -> type[HashCode]:
    """The hash class named by `$VT_HASHCLASS`, else blake3."""
    name = os.environ.get("VT_HASHCLASS")
    return hashclass_by_name(name) if name else DEFAULT_HASHCLASS


def parse_hashcode(text: str) -> HashCode:
    """Parse the text form `hashname:hex`."""
    name, sep, hexpart = text.partition(":")
    if not sep:
        raise FormatError(f"hashcode needs the form hashname:hex, got {text[:80]!r}")
    return hashclass_by_name(name).from_hex(hexpart)


def parse_hashcode_filename(filename: str) -> HashCode:
    """Parse the file-name form `<hex>.<hashname>`."""
    hexpart, sep, name = filename.rpartition(".")
    if not sep:
        raise FormatError(f"hashcode file name needs the form hex.hashname, got {filename!r}")
    return hashclass_by_name(name).from_hex(hexpart)


def decode_hashcode(buf, offset: int = 0) -> tuple[HashCode, int]:
    """Decode the binary form at `offset`; return `(hashcode, offset_after)`."""
    hashid, pos = decode_varint(buf, offset)
    try:
        cls = _BY_ID[hashid]
    except KeyError:
        raise FormatError(f"unknown hash class id {hashid} at offset {offset}") from None
    end = pos + cls.digest_size
    if end > len(buf):
        raise FormatError(f"truncated {cls.hashname} digest at offset {pos}")
    return cls(bytes(buf[pos:end])), end


def read_hashcode(r: Reader) -> HashCode:
    """Read a binary hashcode from a `Reader`."""
    start = r.pos
    hashid = r.varint()
    try:
        cls = _BY_ID[hashid]
    except KeyError:
        raise FormatError(f"unknown hash class id {hashid} at offset {start}") from None
    return cls(bytes(r.take(cls.digest_size)))


def hash_of_hashcodes(hashclass: type[HashCode], hashcodes: Iterable[HashCode]) -> HashCode:
    """The hashcode (of `hashclass`) of the concatenated digests of `hashcodes`.

    Two stores holding the same blocks in a key range give the same value, so a
    diff can compare ranges and recurse only where they differ.
    """
    h = _incremental(hashclass)
    for hc in hashcodes:
        if type(hc) is not hashclass:
            raise HashClassMismatchError(f"{hc} is not a {hashclass.hashname} hashcode")
        h.update(hc)
    return hashclass(h.digest())


def _incremental(hashclass: type[HashCode]):
    if hashclass is Hash_BLAKE3:
        import blake3

        return blake3.blake3()
    import hashlib

    return hashlib.new(hashclass.hashname)
