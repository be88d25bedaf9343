"""File metadata: mode, ownership, times, xattrs (POSIX ACLs among them), MIME type.

Binary form (inside a dirent's META field): a sequence of `varint(tag) lbytes(value)`
fields; unknown tags are skipped so later versions can add fields.  Integers are
varints inside the value; times are zig-zag varints of nanoseconds (they may be
negative).  Ranges, checked whenever a `Meta` is made (so by both decoders):
uid and gid below 2**32 (`MAX_ID`), times within a signed 64-bit count of
nanoseconds, mode within 07777; no NUL in user, group or xattr names, and no
empty xattr name.  POSIX ACLs are kept as their `system.posix_acl_access` and
`system.posix_acl_default` xattrs, which is exactly what the kernel stores.
"""

from __future__ import annotations

import stat as statmod
from dataclasses import dataclass, field, replace

from vtstore.codec import Reader, decode_varint, encode_bytes, encode_varint
from vtstore.errors import FormatError

M_MODE = 1
M_UID = 2
M_GID = 3
M_USER = 4
M_GROUP = 5
M_MTIME = 6
M_CTIME = 7
M_XATTR = 8
M_MIME = 9
M_ATIME = 10

#: uids and gids are 32-bit on every system we restore to
MAX_ID = (1 << 32) - 1
#: times are signed 64-bit nanoseconds (years 1677 to 2262)
MIN_TIME_NS = -(1 << 63)
MAX_TIME_NS = (1 << 63) - 1

ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"


def zigzag(n: int) -> int:
    """Map a signed integer to a non-negative one (0,-1,1,-2 -> 0,1,2,3)."""
    return n * 2 if n >= 0 else -n * 2 - 1


def unzigzag(n: int) -> int:
    """The inverse of `zigzag`."""
    return n // 2 if not n & 1 else -(n + 1) // 2


def _int_field(tag: int, n: int) -> bytes:
    return encode_varint(tag) + encode_bytes(encode_varint(n))


@dataclass(frozen=True, slots=True)
class Meta:
    """Metadata of one filesystem object.

    `mode` holds only the permission bits including setuid/setgid/sticky
    (`S_IMODE`); the object type is the dirent's type.  `xattrs` is a tuple of
    `(name, value)` pairs sorted by name, names as text (surrogate-escaped),
    values as bytes.
    """

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    user: str | None = None
    group: str | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    atime_ns: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())
    mime_type: str | None = None

    def __post_init__(self):
        # bad values from either decoder stop here, not in a chown or utime later
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            raise FormatError(f"metadata mode {self.mode:o} is not within 07777")
        for k in ("uid", "gid"):
            v = getattr(self, k)
            if v is not None and not 0 <= v <= MAX_ID:
                raise FormatError(f"metadata {k} {v} is not below 2**32")
        for k in ("mtime_ns", "ctime_ns", "atime_ns"):
            v = getattr(self, k)
            if v is not None and not MIN_TIME_NS <= v <= MAX_TIME_NS:
                raise FormatError(f"metadata {k} {v} is not a signed 64-bit time")
        # no system call takes a NUL inside a name: refuse it here, not in export
        for k in ("user", "group"):
            v = getattr(self, k)
            if v is not None and "\0" in v:
                raise FormatError(f"metadata {k} name {v!r} holds a NUL")
        for name, _ in self.xattrs:
            if not name or "\0" in name:
                raise FormatError(f"extended attribute name {name!r} is empty or holds a NUL")

    @classmethod
    def from_stat(
        cls, st, xattrs=(), user: str | None = None, group: str | None = None, mime_type=None
    ) -> Meta:
        """Metadata from an `os.stat_result` (and xattrs read separately)."""
        return cls(
            mode=statmod.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            user=user,
            group=group,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            xattrs=tuple(sorted(xattrs)),
            mime_type=mime_type,
        )

    def with_changes(self, **kw) -> Meta:
        """A copy with some fields replaced."""
        return replace(self, **kw)

    @property
    def acl_access(self) -> bytes | None:
        """The raw POSIX access ACL, if any."""
        return dict(self.xattrs).get(ACL_ACCESS)

    @property
    def acl_default(self) -> bytes | None:
        """The raw POSIX default ACL (directories), if any."""
        return dict(self.xattrs).get(ACL_DEFAULT)

    def xattr(self, name: str) -> bytes | None:
        """The value of one extended attribute."""
        return dict(self.xattrs).get(name)

    # -- binary --------------------------------------------------------------

    def encode(self) -> bytes:
        """The binary field list."""
        out = bytearray()
        if self.mode is not None:
            out += _int_field(M_MODE, self.mode)
        if self.uid is not None:
            out += _int_field(M_UID, self.uid)
        if self.gid is not None:
            out += _int_field(M_GID, self.gid)
        if self.user is not None:
            out += encode_varint(M_USER) + encode_bytes(_fsenc(self.user))
        if self.group is not None:
            out += encode_varint(M_GROUP) + encode_bytes(_fsenc(self.group))
        if self.mtime_ns is not None:
            out += _int_field(M_MTIME, zigzag(self.mtime_ns))
        if self.ctime_ns is not None:
            out += _int_field(M_CTIME, zigzag(self.ctime_ns))
        if self.atime_ns is not None:
            out += _int_field(M_ATIME, zigzag(self.atime_ns))
        for name, value in self.xattrs:
            out += encode_varint(M_XATTR) + encode_bytes(encode_bytes(_fsenc(name)) + value)
        if self.mime_type is not None:
            out += encode_varint(M_MIME) + encode_bytes(self.mime_type.encode())
        return bytes(out)

    @classmethod
    def decode(cls, data) -> Meta:
        """Decode the binary field list; unknown tags are skipped."""
        r = Reader(data)
        kw: dict = {}
        xattrs = []
        while not r.at_end():
            tag = r.varint()
            value = r.lbytes()
            if tag in (M_MODE, M_UID, M_GID, M_MTIME, M_CTIME, M_ATIME):
                n, used = decode_varint(value)
                if used != len(value):
                    raise FormatError(f"extra octets in metadata field {tag}")
                key = {
                    M_MODE: "mode",
                    M_UID: "uid",
                    M_GID: "gid",
                    M_MTIME: "mtime_ns",
                    M_CTIME: "ctime_ns",
                    M_ATIME: "atime_ns",
                }[tag]
                kw[key] = unzigzag(n) if tag in (M_MTIME, M_CTIME, M_ATIME) else n
            elif tag == M_USER:
                kw["user"] = _fsdec(value)
            elif tag == M_GROUP:
                kw["group"] = _fsdec(value)
            elif tag == M_XATTR:
                xr = Reader(value)
                name = _fsdec(xr.lbytes())
                xattrs.append((name, bytes(xr.rest())))
            elif tag == M_MIME:
                try:
                    kw["mime_type"] = bytes(value).decode()
                except UnicodeDecodeError:
                    raise FormatError("MIME type is not UTF-8") from None
        if "mode" in kw and kw["mode"] > 0o7777:
            raise FormatError(f"metadata mode {kw['mode']:o} has bits beyond 07777")
        kw["xattrs"] = tuple(sorted(xattrs))
        return cls(**kw)

    # -- text ----------------------------------------------------------------

    def to_fields(self) -> dict:
        """The transcription map (only fields that are set)."""
        from vtstore.transcribe import Binary

        d: dict = {}
        for k in ("mode", "uid", "gid", "user", "group", "mtime_ns", "ctime_ns", "atime_ns"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.xattrs:
            d["xattrs"] = [[n, Binary(v)] for n, v in self.xattrs]
        if self.mime_type is not None:
            d["mime_type"] = self.mime_type
        return d

    @classmethod
    def from_fields(cls, d: dict) -> Meta:
        """Build from a transcription map."""
        from vtstore.transcribe import text_to_bytes

        if not isinstance(d, dict):
            raise FormatError("meta must be a map")
        known = {
            "mode",
            "uid",
            "gid",
            "user",
            "group",
            "mtime_ns",
            "ctime_ns",
            "atime_ns",
            "xattrs",
            "mime_type",
        }
        unknown = set(d) - known
        if unknown:
            raise FormatError(f"unknown meta fields {sorted(unknown)}")
        kw = {}
        for k in ("mode", "uid", "gid", "mtime_ns", "ctime_ns", "atime_ns"):
            if k in d:
                if type(d[k]) is not int or (k in ("mode", "uid", "gid") and d[k] < 0):
                    raise FormatError(f"meta {k} must be an integer")
                kw[k] = d[k]
        for k in ("user", "group", "mime_type"):
            if k in d:
                if not isinstance(d[k], str):
                    raise FormatError(f"meta {k} must be a string")
                kw[k] = d[k]
        if "xattrs" in d:
            xs = d["xattrs"]
            if not isinstance(xs, list) or not all(
                isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) for x in xs
            ):
                raise FormatError("meta xattrs must be a list of [name, value] pairs")
            kw["xattrs"] = tuple(sorted((n, text_to_bytes(v)) for n, v in xs))
        if kw.get("mode", 0) > 0o7777:
            raise FormatError("meta mode has bits beyond 07777")
        return cls(**kw)


def _fsenc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _fsdec(b) -> str:
    return bytes(b).decode("utf-8", "surrogateescape")


def cached_lookup(fn):
    """`fn` (a passwd/group database lookup that raises KeyError for unknown
    keys) with its answers remembered, None for unknown keys: the databases are
    read once per owner, not once per file (a 33k-file restore had opened
    /etc/passwd and /etc/group 66k times)."""
    cache: dict = {}

    def lookup(key):
        if key not in cache:
            try:
                cache[key] = fn(key)
            except KeyError:
                cache[key] = None
        return cache[key]

    return lookup
