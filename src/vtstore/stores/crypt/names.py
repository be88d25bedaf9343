"""Tag classes: how the backend of a crypt store names the blocks it holds.

Since format 2 of the crypt store (docs/FORMATS.md §12), its backend datadir
stores each encrypted block under the block's *tag*, the keyed hash of the
plaintext hashcode that every encrypted block carries in octets 2..34 of its
header, instead of under a hash of the ciphertext.  The backend computes that
name from the block itself, without the key, so everything the datadir does
with names works unchanged: adding and deduplicating, rebuilding its index from
the data files (`vt reindex`), checking that an index entry points at the block
it names (`vt fsck` without the key).  The crypt store needs neither a second
hash of every block nor an index of its own to find a block.

The name class of a datadir is the "hash class" recorded in its metadata and
data file headers: `crypt-<plaintext hash class>` (`crypt-blake3`, ...).  These
classes are not registered with `vtstore.hashes` (they are not content hashes,
no blockref ever names one); `tag_class_by_name` resolves them.

A block that is not an encrypted block (shorter than the header and the GCM
tag, or of another version) is named by an unkeyed BLAKE2b of all its octets,
so it can never pass for an encrypted block's tag.
"""

from __future__ import annotations

import hashlib
from hmac import compare_digest

from vtstore.errors import FormatError, HashClassMismatchError
from vtstore.hashes import HashCode, hashclass_by_name

PREFIX = "crypt-"
#: the encrypted block format's version octet, flag bits, header and overhead
#: (the same numbers as `vtstore.stores.crypt.store`, which imports them here)
VERSION = 1
F_ZSTD = 1
HEADER = 2 + 32
OVERHEAD = HEADER + 16
TAG_SIZE = 32
#: tag classes' ids: this plus the plaintext class's id (never registered)
TAG_ID_BASE = 64

_CLASSES: dict[str, type[HashCode]] = {}

try:  # the header slicing of from_data_many in one call
    from vtstore.stores.crypt import _cryptblocks
except ImportError:  # pragma: no cover - an unbuilt checkout
    _cryptblocks = None


class TagCode(HashCode):
    """A backend block's name: the tag its encrypted block carries.

    Subclasses (one per plaintext hash class, from `tag_class`) set `plain`,
    the hash class of the crypt store whose backend this names.
    """

    __slots__ = ()
    digest_size = TAG_SIZE
    #: the plaintext hash class of the crypt store (set per subclass)
    plain: type[HashCode] | None = None

    @classmethod
    def hash_function(cls, data) -> bytes:
        """The tag in the header of encrypted block `data`; for anything else
        an unkeyed hash of all of it (never a valid tag of any key)."""
        if len(data) >= OVERHEAD and data[0] == VERSION and not data[1] & ~F_ZSTD:
            return bytes(data[2:HEADER])
        return hashlib.blake2b(data, digest_size=TAG_SIZE, person=b"vt-not-crypt").digest()

    @classmethod
    def from_data_many(cls, datas) -> list[HashCode]:
        """The names of a batch of encrypted blocks (slices of their headers):
        the datadir's hash of every block added, so natively in one call when
        `_cryptblocks` is built, else kept to one test each."""
        new = bytes.__new__
        fn = cls.hash_function
        if _cryptblocks is not None:
            out = _cryptblocks.header_names(cls, datas)
            if None in out:  # not encrypted blocks: named by a hash of them
                out = [new(cls, fn(d)) if n is None else n for n, d in zip(out, datas, strict=True)]
            return out
        return [
            new(cls, d[2:HEADER])
            if len(d) >= OVERHEAD and d[0] == VERSION and d[1] <= F_ZSTD
            else new(cls, fn(d))
            for d in datas
        ]

    @classmethod
    def hash_of_names(cls, names) -> TagCode:
        """The window hash of a store sync over names of this class (the
        concatenated names, BLAKE3): `Store.hash_of_hashcodes` of a format 2
        backend, which `vtstore.hashes` cannot make for a class it does not know."""
        import blake3

        h = blake3.blake3()
        for n in names:
            if type(n) is not cls:
                raise HashClassMismatchError(f"{n!r} is not a {cls.hashname} name")
            h.update(n)
        return cls(h.digest())

    def check(self, data) -> bool:
        """True if `data` carries this name (the datadir's check on every read;
        the crypt store then authenticates the block with the key).  One C
        comparison, not HashCode's Python `==`: it runs once a block read
        (and with `_cryptblocks`, the whole method is C: `tag_check`)."""
        if len(data) >= OVERHEAD and data[0] == VERSION and data[1] <= F_ZSTD:
            return compare_digest(self, data[2:HEADER])
        return self._check_other(data)

    if _cryptblocks is not None:
        check = _cryptblocks.tag_check  # noqa: F811 - a method of bytes, in C

    def _check_other(self, data) -> bool:
        """`check` of what is not an encrypted block: named by a hash of it."""
        return compare_digest(self, self.hash_function(data))


def tag_class(plain: type[HashCode]) -> type[TagCode]:
    """The name class of the backend of a crypt store of `plain` hashcodes."""
    name = PREFIX + plain.hashname
    cls = _CLASSES.get(name)
    if cls is None:
        # hashname is set after the class is made: HashCode.__init_subclass__
        # would register it with the content hashes (hashclasses(), blockrefs)
        cls = type(f"Tag_{plain.hashname.upper()}", (TagCode,), {"__slots__": ()})
        cls.hashname = name
        # an id no content hash has (and none registered): a block server's
        # hello names it, so a client that does not know it refuses in one line
        cls.hashid = TAG_ID_BASE + plain.hashid
        cls.plain = plain
        cls.__doc__ = f"The name of a crypt store's backend block holding {plain.hashname} data."
        _CLASSES[name] = cls
    return cls


def tag_class_by_name(name: str) -> type[TagCode]:
    """The tag class called `name` (`crypt-blake3`, ...), or `FormatError`."""
    if not isinstance(name, str) or not name.startswith(PREFIX):
        raise FormatError(f"not a crypt store's block naming: {name!r}")
    return tag_class(hashclass_by_name(name[len(PREFIX) :]))


def is_tag_class(hashclass) -> bool:
    """Whether `hashclass` names blocks by their tag (a format 2 backend)."""
    return (
        isinstance(hashclass, type)
        and issubclass(hashclass, TagCode)
        and hashclass.plain is not None
    )
