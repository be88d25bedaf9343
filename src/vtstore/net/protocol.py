"""The block protocol: packet framing, op codes, error codes and payload codecs.

Everything on the wire is specified octet by octet in docs/PROTOCOL.md; this module
is the code that page describes, and tests/net/protocol-vectors.json pins the two
together.  Decoders validate at the boundary: counts are checked against the bytes
actually present before anything is allocated, trailing octets are refused, and
every failure is a `FormatError` (a hostile peer can make us refuse, never crash).

A packet is::

    u32be L | u8 op | u8 flags | varint channel | varint tag | payload (L - header octets)

Hashcodes travel in their binary form (`varint(hashid) + digest`) and hash classes
by their numeric id, everywhere, including the handshake.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from vtstore.codec import Reader, encode_varint
from vtstore.errors import (
    CorruptBlockError,
    FormatError,
    HashClassMismatchError,
    MissingBlockError,
    ReadOnlyError,
    StoreError,
)
from vtstore.hashes import HashCode, hashclass_by_id, parse_hashcode, read_hashcode

MAGIC = b"VTSP"
#: The protocol version this code speaks.
VERSION = 1

#: Default largest packet (the value of L) a peer accepts after the handshake.
DEFAULT_MAX_PACKET = 16 * 1024 * 1024
#: Largest packet accepted before the handshake: a stranger gets little memory.
HANDSHAKE_MAX_PACKET = 4096
#: Smallest legal L: op, flags, a one-octet channel and a one-octet tag.
MIN_PACKET = 4
#: Channels are numbered 0..MAX_CHANNEL; tags are below 2**63.
MAX_CHANNEL = 0xFFFF
MAX_TAG = (1 << 63) - 1

_LEN = struct.Struct(">I")

# -- op codes -------------------------------------------------------------------

OP_HELLO = 0x01
OP_ADD = 0x02
OP_GET = 0x03
OP_CONTAINS = 0x04
OP_FLUSH = 0x05
OP_HASHCODES = 0x06
OP_HASH_OF_HASHCODES = 0x07
OP_LENGTH = 0x08
OP_ARCHIVE_LIST = 0x09
OP_ARCHIVE_LAST = 0x0A
OP_ARCHIVE_UPDATE = 0x0B
OP_INDIRECT_COMPLETE = 0x0C
OP_AUTH = 0x0D  # the challenge-response before the first HELLO (§2a)
OP_ARCHIVE_STATES = 0x0E  # every state of an archive, a page at a time

OP_NAMES = {
    OP_HELLO: "hello",
    OP_ADD: "add",
    OP_GET: "get",
    OP_CONTAINS: "contains",
    OP_FLUSH: "flush",
    OP_HASHCODES: "hashcodes",
    OP_HASH_OF_HASHCODES: "hash_of_hashcodes",
    OP_LENGTH: "length",
    OP_ARCHIVE_LIST: "archive_list",
    OP_ARCHIVE_LAST: "archive_last",
    OP_ARCHIVE_UPDATE: "archive_update",
    OP_INDIRECT_COMPLETE: "indirect_complete",
    OP_AUTH: "auth",
    OP_ARCHIVE_STATES: "archive_states",
}

# -- flags ------------------------------------------------------------------------

F_RESPONSE = 0x01  # set on every packet the server sends
F_ERROR = 0x02  # the payload is varint(code) + JSON detail
F_JSON = 0x04  # the payload (after the error code, if any) is a UTF-8 JSON object
_KNOWN_FLAGS = F_RESPONSE | F_ERROR | F_JSON

# -- error codes --------------------------------------------------------------------

E_PROTOCOL = 1  # malformed packet or payload
E_UNKNOWN_OP = 2
E_TOO_LARGE = 3  # a packet over the peer's limit (the connection is then closed)
E_VERSION = 4  # no protocol version in common
E_NO_EXPORT = 5
E_HASHCLASS = 6  # the export holds another hash class
E_CHANNEL = 7  # request on a channel not opened, or HELLO on an open one
E_MISSING = 8
E_CORRUPT = 9
E_READONLY = 10
E_NO_ARCHIVE = 11
E_NOT_SUPPORTED = 12  # e.g. archive requests on an export without archives
E_STORE = 13  # any other store failure
E_INTERNAL = 14  # a server bug
E_SHUTDOWN = 15  # the server is stopping; reconnect later
E_AUTH = 16  # authentication required, or failed (the connection is then closed)
E_DENIED = 17  # the key (or peer) has no right to do this on this export
E_BUSY = 20  # too many connections; try again later (the connection is then closed)
E_TIMEOUT = 21  # idle, too slow, or no handshake in time (the connection is then closed)

ERROR_NAMES = {
    E_PROTOCOL: "protocol",
    E_UNKNOWN_OP: "unknown_op",
    E_TOO_LARGE: "too_large",
    E_VERSION: "version",
    E_NO_EXPORT: "no_export",
    E_HASHCLASS: "hashclass",
    E_CHANNEL: "channel",
    E_MISSING: "missing",
    E_CORRUPT: "corrupt",
    E_READONLY: "readonly",
    E_NO_ARCHIVE: "no_archive",
    E_NOT_SUPPORTED: "not_supported",
    E_STORE: "store",
    E_INTERNAL: "internal",
    E_SHUTDOWN: "shutdown",
    E_AUTH: "auth",
    E_DENIED: "denied",
    E_BUSY: "busy",
    E_TIMEOUT: "timeout",
}

#: hello flags
HELLO_HASHCLASS = 0x01  # a hash class id follows
#: welcome flags
WELCOME_READONLY = 0x01
WELCOME_ARCHIVES = 0x02
#: window flags (hashcodes, hash of hashcodes)
WINDOW_START = 0x01
WINDOW_AFTER = 0x02
WINDOW_LENGTH = 0x04
#: listing flags
LISTING_END = 0x01


class PacketTooLarge(FormatError):
    """A packet length over the limit; raised before anything is allocated."""

    def __init__(self, length: int, limit: int):
        self.length = length
        self.limit = limit
        super().__init__(f"packet of {length} octets exceeds the limit of {limit}")


class TruncatedPacket(FormatError):
    """The stream ended inside a packet."""


class RemoteError(StoreError):
    """An error response from the server: a numeric `code` and a JSON `detail`."""

    def __init__(self, code: int, detail: dict):
        self.code = code
        self.detail = detail
        name = ERROR_NAMES.get(code, f"error {code}")
        super().__init__(f"server: {detail.get('message', name)} ({name})")


class AuthError(RemoteError):
    """Authentication was required and missing, or failed (either side's proof)."""


class AccessDenied(RemoteError):
    """The server refused a request the key or peer has no right to make."""


# -- framing ------------------------------------------------------------------------


@dataclass(slots=True)
class Packet:
    """One decoded packet; `payload` is a memoryview into the received body."""

    op: int
    flags: int
    channel: int
    tag: int
    payload: memoryview

    @property
    def is_error(self) -> bool:
        return bool(self.flags & F_ERROR)


def encode_packet(op: int, flags: int, channel: int, tag: int, *parts) -> bytes:
    """The framed packet whose payload is the concatenation of `parts`."""
    head = bytes((op, flags)) + encode_varint(channel) + encode_varint(tag)
    length = len(head) + sum(len(p) for p in parts)
    return b"".join((_LEN.pack(length), head, *parts))


def decode_length(prefix) -> int:
    """The L of a 4-octet length prefix."""
    return _LEN.unpack(prefix)[0]


def check_length(length: int, limit: int) -> None:
    """Refuse a packet length before its body is read (and so before allocation)."""
    if length > limit:
        raise PacketTooLarge(length, limit)
    if length < MIN_PACKET:
        raise FormatError(f"packet of {length} octets is shorter than a header")


def decode_packet(body) -> Packet:
    """Decode a packet body (everything after the length prefix)."""
    r = Reader(body)
    op = r.byte()
    flags = r.byte()
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"unknown packet flags 0x{flags:02x}")
    channel = r.varint()
    if channel > MAX_CHANNEL:
        raise FormatError(f"channel {channel} is over {MAX_CHANNEL}")
    tag = r.varint()
    if tag > MAX_TAG:
        raise FormatError(f"tag {tag} is too large")
    return Packet(op, flags, channel, tag, r.rest())


def read_exact(rfile, n: int) -> bytes:
    """Read exactly `n` octets from a buffered binary file, else `TruncatedPacket`."""
    data = rfile.read(n)
    if data is None or len(data) != n:
        got = 0 if data is None else len(data)
        raise TruncatedPacket(f"stream ended after {got} of {n} octets of a packet")
    return data


def read_packet(rfile, limit: int) -> Packet | None:
    """Read one packet; None on a clean end of stream between packets."""
    prefix = rfile.read(4)
    if not prefix:
        return None
    if len(prefix) != 4:
        raise TruncatedPacket(f"stream ended inside a length prefix ({len(prefix)} octets)")
    length = decode_length(prefix)
    check_length(length, limit)
    return decode_packet(read_exact(rfile, length))


# -- helpers --------------------------------------------------------------------------


def _end(r: Reader, what: str) -> None:
    if not r.at_end():
        raise FormatError(f"{r.remaining} extra octets after {what} at offset {r.pos}")


def _count(r: Reader, min_item: int, what: str) -> int:
    """A count varint that cannot promise more items than the octets left could hold."""
    n = r.varint()
    if n * min_item > r.remaining:
        raise FormatError(f"{what} count {n} does not fit in {r.remaining} octets")
    return n


def _hashcode_of(r: Reader, hashclass: type[HashCode] | None) -> HashCode:
    h = read_hashcode(r)
    if hashclass is not None and type(h) is not hashclass:
        raise HashClassMismatchError(f"{h.hashname} hashcode where {hashclass.hashname} is served")
    return h


# -- HELLO -------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Hello:
    """A client's handshake: its version, the hash class it wants (or any), the export."""

    version: int
    hashclass: type[HashCode] | None
    export: str


def encode_hello(version: int, hashclass: type[HashCode] | None, export: str) -> bytes:
    """HELLO request payload."""
    flags = HELLO_HASHCLASS if hashclass is not None else 0
    out = MAGIC + encode_varint(version) + encode_varint(flags)
    if hashclass is not None:
        out += encode_varint(hashclass.hashid)
    name = export.encode("utf-8")
    return out + encode_varint(len(name)) + name


def decode_hello(payload) -> Hello:
    """Parse a HELLO request payload."""
    r = Reader(payload)
    if r.remaining < 4 or bytes(r.take(4)) != MAGIC:
        raise FormatError("not a vtstore block protocol handshake (bad magic)")
    version = r.varint()
    flags = r.varint()
    if flags & ~HELLO_HASHCLASS:
        raise FormatError(f"unknown hello flags 0x{flags:x}")
    hashclass = hashclass_by_id(r.varint()) if flags & HELLO_HASHCLASS else None
    export = _utf8(r.lbytes(), "export name")
    _end(r, "hello")
    return Hello(version, hashclass, export)


@dataclass(slots=True, frozen=True)
class Welcome:
    """The server's handshake answer: what the channel now serves."""

    version: int
    hashclass: type[HashCode]
    readonly: bool
    archives: bool
    max_packet: int
    max_outstanding: int
    name: str


def encode_welcome(w: Welcome) -> bytes:
    """HELLO response payload."""
    flags = (WELCOME_READONLY if w.readonly else 0) | (WELCOME_ARCHIVES if w.archives else 0)
    name = w.name.encode("utf-8")
    return b"".join(
        (
            MAGIC,
            encode_varint(w.version),
            encode_varint(w.hashclass.hashid),
            encode_varint(flags),
            encode_varint(w.max_packet),
            encode_varint(w.max_outstanding),
            encode_varint(len(name)),
            name,
        )
    )


def decode_welcome(payload) -> Welcome:
    """Parse a HELLO response payload."""
    r = Reader(payload)
    if r.remaining < 4 or bytes(r.take(4)) != MAGIC:
        raise FormatError("the peer does not speak the vtstore block protocol (bad magic)")
    version = r.varint()
    hashclass = hashclass_by_id(r.varint())
    flags = r.varint()
    max_packet = r.varint()
    max_outstanding = r.varint()
    name = _utf8(r.lbytes(), "store name")
    _end(r, "welcome")
    if max_packet < HANDSHAKE_MAX_PACKET or max_outstanding < 1:
        raise FormatError(
            f"unusable limits: max_packet {max_packet}, outstanding {max_outstanding}"
        )
    return Welcome(
        version,
        hashclass,
        bool(flags & WELCOME_READONLY),
        bool(flags & WELCOME_ARCHIVES),
        max_packet,
        max_outstanding,
        name,
    )


# -- AUTH (docs/PROTOCOL.md §2a) -----------------------------------------------------

AUTH_MAGIC = b"VTSA"
AUTH_NONCE = 32  # octets of each side's nonce
AUTH_PROOF = 32  # octets of an HMAC-SHA256
AUTH_MAX_ID = 64  # longest key id


def encode_auth_start(key_id: str, client_nonce: bytes) -> bytes:
    """AUTH request, step 1: the key id and the client's nonce."""
    kid = key_id.encode("utf-8")
    return AUTH_MAGIC + b"\x01" + encode_varint(len(kid)) + kid + client_nonce


def encode_auth_proof(proof: bytes) -> bytes:
    """AUTH request, step 2: the client's proof."""
    return AUTH_MAGIC + b"\x02" + proof


def decode_auth_request(payload) -> tuple[int, str | None, bytes]:
    """Parse an AUTH request: `(1, key_id, client_nonce)` or `(2, None, proof)`."""
    r = Reader(payload)
    if r.remaining < 5 or bytes(r.take(4)) != AUTH_MAGIC:
        raise FormatError("not an AUTH request (bad magic)")
    step = r.byte()
    if step == 1:
        kid = _utf8(r.lbytes(), "key id")
        if not kid or len(kid) > AUTH_MAX_ID:
            raise FormatError(f"a key id of 1 to {AUTH_MAX_ID} characters, not {len(kid)}")
        if r.remaining != AUTH_NONCE:
            raise FormatError(f"the client nonce is {AUTH_NONCE} octets")
        return 1, kid, bytes(r.take(AUTH_NONCE))
    if step == 2:
        if r.remaining != AUTH_PROOF:
            raise FormatError(f"the client proof is {AUTH_PROOF} octets")
        return 2, None, bytes(r.take(AUTH_PROOF))
    raise FormatError(f"unknown AUTH step {step}")


def encode_auth_answer(step: int, value: bytes) -> bytes:
    """AUTH answer: the step, then the server nonce (1) or the server proof (2)."""
    return bytes((step,)) + value


def decode_auth_answer(payload, step: int) -> bytes:
    """Parse an AUTH answer of `step`; return the nonce or proof it carries."""
    data = bytes(payload)
    if len(data) != 1 + 32 or data[0] != step:
        raise FormatError(f"bad AUTH answer to step {step}")
    return data[1:]


def _utf8(mv, what: str) -> str:
    try:
        return bytes(mv).decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not UTF-8") from None


# -- ADD ------------------------------------------------------------------------------------


def encode_blocks_parts(datas) -> list:
    """ADD request payload as a list of parts (the block data is not copied here)."""
    parts: list = [encode_varint(len(datas))]
    for d in datas:
        parts.append(encode_varint(len(d)))
        parts.append(d)
    return parts


def encode_blocks(datas) -> bytes:
    """ADD request payload: `varint(n)` then n length-prefixed blocks."""
    return b"".join(encode_blocks_parts(datas))


def decode_blocks(payload) -> list[memoryview]:
    """Parse an ADD request payload into memoryviews of the packet body."""
    r = Reader(payload)
    n = _count(r, 1, "block")
    out = [r.lbytes() for _ in range(n)]
    _end(r, "blocks")
    return out


# -- hashcode lists (ADD answer, GET and CONTAINS requests) -----------------------------------


def encode_hashcodes(hashcodes) -> bytes:
    """`varint(n)` then n binary hashcodes."""
    return encode_varint(len(hashcodes)) + b"".join(h.encode() for h in hashcodes)


def decode_hashcodes(payload, hashclass: type[HashCode] | None = None) -> list[HashCode]:
    """Parse a hashcode list; with `hashclass`, every one must be of that class."""
    r = Reader(payload)
    n = _count(r, 21, "hashcode")
    out = [_hashcode_of(r, hashclass) for _ in range(n)]
    _end(r, "hashcodes")
    return out


# -- GET answer ------------------------------------------------------------------------------


def encode_get_answer_parts(items) -> list:
    """GET response: `varint(k)` then k items, each `varint(0)` (missing) or
    `varint(len + 1)` and the data.  k may be less than the number asked for when
    the answer would be too large; the client asks again for the rest."""
    parts: list = [encode_varint(len(items))]
    for d in items:
        if d is None:
            parts.append(b"\x00")
        else:
            parts.append(encode_varint(len(d) + 1))
            parts.append(d)
    return parts


def decode_get_answer(payload) -> list[memoryview | None]:
    """Parse a GET response."""
    r = Reader(payload)
    n = _count(r, 1, "get answer")
    out: list[memoryview | None] = []
    for _ in range(n):
        start = r.pos
        k = r.varint()
        if k == 0:
            out.append(None)
        elif k - 1 > r.remaining:
            raise FormatError(f"block length {k - 1} at offset {start} runs past the end")
        else:
            out.append(r.take(k - 1))
    _end(r, "get answer")
    return out


# -- CONTAINS answer --------------------------------------------------------------------------


def encode_bitmap(bools) -> bytes:
    """`varint(n)` then ceil(n/8) octets; item i is bit (i mod 8) of octet i div 8."""
    n = len(bools)
    bits = bytearray((n + 7) // 8)
    for i, b in enumerate(bools):
        if b:
            bits[i >> 3] |= 1 << (i & 7)
    return encode_varint(n) + bytes(bits)


def decode_bitmap(payload) -> list[bool]:
    """Parse a CONTAINS response."""
    r = Reader(payload)
    n = r.varint()
    nbytes = (n + 7) // 8
    if nbytes != r.remaining:
        raise FormatError(f"bitmap of {n} items needs {nbytes} octets, has {r.remaining}")
    bits = bytes(r.rest())
    if n & 7 and bits[-1] >> (n & 7):
        raise FormatError("bits set past the end of a bitmap")
    return [bool(bits[i >> 3] & (1 << (i & 7))) for i in range(n)]


# -- windows and listings --------------------------------------------------------------------


def encode_window(start: HashCode | None, after: bool, length: int | None) -> bytes:
    """HASHCODES / HASH_OF_HASHCODES request: `varint(flags) [start] [varint(length)]`."""
    flags = (WINDOW_START if start is not None else 0) | (WINDOW_AFTER if after else 0)
    flags |= WINDOW_LENGTH if length is not None else 0
    out = encode_varint(flags)
    if start is not None:
        out += start.encode()
    if length is not None:
        out += encode_varint(length)
    return out


def decode_window(payload, hashclass: type[HashCode] | None = None):
    """Parse a window: `(start, after, length)`."""
    r = Reader(payload)
    flags = r.varint()
    if flags & ~(WINDOW_START | WINDOW_AFTER | WINDOW_LENGTH):
        raise FormatError(f"unknown window flags 0x{flags:x}")
    start = _hashcode_of(r, hashclass) if flags & WINDOW_START else None
    length = r.varint() if flags & WINDOW_LENGTH else None
    _end(r, "window")
    return start, bool(flags & WINDOW_AFTER), length


def encode_listing(hashcodes, end: bool) -> bytes:
    """HASHCODES response: `varint(flags)` (bit 0: the listing reached the end of the
    store) then a hashcode list."""
    return encode_varint(LISTING_END if end else 0) + encode_hashcodes(hashcodes)


def decode_listing(payload, hashclass=None) -> tuple[list[HashCode], bool]:
    """Parse a HASHCODES response: `(hashcodes, end)`."""
    r = Reader(payload)
    flags = r.varint()
    if flags & ~LISTING_END:
        raise FormatError(f"unknown listing flags 0x{flags:x}")
    return decode_hashcodes(r.rest(), hashclass), bool(flags & LISTING_END)


def encode_hoh(h: HashCode, last: HashCode | None) -> bytes:
    """HASH_OF_HASHCODES response: the hash, then `varint(0)` or `varint(1) + last`."""
    return h.encode() + (b"\x00" if last is None else b"\x01" + last.encode())


def decode_hoh(payload, hashclass=None) -> tuple[HashCode, HashCode | None]:
    """Parse a HASH_OF_HASHCODES response."""
    r = Reader(payload)
    h = _hashcode_of(r, hashclass)
    has_last = r.varint()
    if has_last > 1:
        raise FormatError(f"bad last marker {has_last}")
    last = _hashcode_of(r, hashclass) if has_last else None
    _end(r, "hash of hashcodes")
    return h, last


def encode_count(n: int) -> bytes:
    """LENGTH response: one varint."""
    return encode_varint(n)


def decode_count(payload) -> int:
    """Parse a LENGTH response."""
    r = Reader(payload)
    n = r.varint()
    _end(r, "length")
    return n


# -- INDIRECT_COMPLETE answer ------------------------------------------------------------------


def encode_completeness(complete: bool, checked: int, missing) -> bytes:
    """`varint(complete) varint(checked)` then a hashcode list of (some) missing blocks."""
    return encode_varint(int(complete)) + encode_varint(checked) + encode_hashcodes(missing)


def decode_completeness(payload, hashclass=None) -> tuple[bool, int, list[HashCode]]:
    """Parse an INDIRECT_COMPLETE response: `(complete, checked, missing)`."""
    r = Reader(payload)
    complete = r.varint()
    if complete > 1:
        raise FormatError(f"bad completeness flag {complete}")
    checked = r.varint()
    missing = decode_hashcodes(r.rest(), hashclass)
    if complete and missing:
        raise FormatError("a complete tree with missing blocks")
    return bool(complete), checked, missing


# -- JSON payloads and errors ----------------------------------------------------------------


def encode_json(obj: dict) -> bytes:
    """A compact UTF-8 JSON object."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_json(payload) -> dict:
    """Parse a JSON object payload."""
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"bad JSON payload: {e}") from None
    except RecursionError:  # "[[[[..." deeper than the interpreter's stack
        raise FormatError("bad JSON payload: nested too deeply") from None
    if not isinstance(obj, dict):
        raise FormatError("JSON payload is not an object")
    return obj


def encode_error(code: int, message: str, **detail) -> bytes:
    """Error response payload: `varint(code)` then a JSON object with a `message`."""
    detail["message"] = message
    return encode_varint(code) + encode_json(detail)


def decode_error(payload) -> tuple[int, dict]:
    """Parse an error response payload: `(code, detail)`."""
    r = Reader(payload)
    code = r.varint()
    rest = r.rest()
    detail = decode_json(rest) if len(rest) else {}
    return code, detail


def error_for(code: int, detail: dict) -> Exception:
    """The vtstore exception an error response stands for."""
    message = str(detail.get("message", ERROR_NAMES.get(code, code)))
    hashcode = detail.get("hashcode")
    if isinstance(hashcode, str):
        try:
            hashcode = parse_hashcode(hashcode)
        except FormatError:
            pass
    elif hashcode is not None:
        hashcode = repr(hashcode)[:100]  # a peer's odd value, shown, not trusted
    if code == E_MISSING:
        return MissingBlockError(hashcode, detail.get("store"))
    if code == E_CORRUPT:
        return CorruptBlockError(hashcode, message)
    if code == E_READONLY:
        return ReadOnlyError(f"server: {message}")
    if code == E_HASHCLASS:
        return HashClassMismatchError(f"server: {message}")
    if code == E_AUTH:
        return AuthError(code, detail)
    if code == E_DENIED:
        return AccessDenied(code, detail)
    return RemoteError(code, detail)


def error_code_of(exc: BaseException) -> int:
    """The error code that reports `exc` to a client."""
    if isinstance(exc, MissingBlockError):
        return E_MISSING
    if isinstance(exc, CorruptBlockError):
        return E_CORRUPT
    if isinstance(exc, ReadOnlyError):
        return E_READONLY
    if isinstance(exc, HashClassMismatchError):
        return E_HASHCLASS
    if isinstance(exc, RemoteError):
        return exc.code
    if isinstance(exc, FormatError):
        return E_PROTOCOL
    if isinstance(exc, StoreError):
        return E_STORE
    return E_INTERNAL
