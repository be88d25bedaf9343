"""The compact text form of blocks and dirents.

A transcription is `PREFIX{key:value,key:value,...}`.  Values are:

- integers: `-12`, `0`, `4096`;
- quoted strings: `"..."` with `\\\\`, `\\"`, `\\n`, `\\r`, `\\t`, `\\xNN` and
  `\\uNNNN` escapes; text keeps printable non-ASCII characters as they are, binary
  data (a block literal) is written with code points 0..255 (`\\xNN` for anything not
  printable ASCII), so any bytes and any text round-trip exactly;
- hashcodes: `blake3:<hex>`;
- nested transcriptions `B{...}`, lists `[v,v]` and maps `{k:v}`;
- `true`, `false`, `null`.

`parse(transcribe(x)) == x` for every registered value.  Parse errors raise
`FormatError` naming the offset.

Limits: an integer has at most `MAX_DIGITS` (20) digits, enough for any u64 and
any signed 64-bit time (the fields check their own ranges: spans and offsets
below 2**64); values nest at most `MAX_DEPTH` (100) deep, which leaves room for
a dirent around a chain of `MAX_SUBBLOCK_DEPTH` sub-blocks.  Past either, the
text is a `FormatError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vtstore.errors import FormatError
from vtstore.hashes import HashCode, hashclass_by_name

# prefix -> (class, from_fields); filled by register()
_PARSERS: dict[str, Callable[[dict], object]] = {}
_PRINTERS: dict[type, Callable[[object], tuple[str, dict]]] = {}

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_RE = re.compile(r"-?[0-9]+")

#: The most digits an integer may have (2**64 has 20): longer is a FormatError,
#: not Python's int-to-str limit, and no field needs more.
MAX_DIGITS = 20
#: The deepest nesting of values (maps, lists, transcriptions) the parser accepts.
MAX_DEPTH = 100
_HEX_RE = re.compile(r"[0-9a-f]+")


def register(cls: type, prefix: str, to_fields, from_fields) -> None:
    """Register how `cls` is printed (`to_fields(obj) -> dict`) and parsed."""
    if not _IDENT_RE.fullmatch(prefix):
        raise ValueError(f"bad transcription prefix {prefix!r}")
    _PARSERS[prefix] = from_fields
    _PRINTERS[cls] = lambda obj: (prefix, to_fields(obj))


class Binary(bytes):
    """Marks bytes to be printed as a quoted byte string (code points 0..255)."""


def quote_text(s: str) -> str:
    """Quote a text string: printable characters kept, others escaped."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o > 0x7E and not ch.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def quote_bytes(b: bytes) -> str:
    """Quote binary data: printable ASCII kept, every other octet as `\\xNN`."""
    out = ['"']
    for o in b:
        if o == 0x22 or o == 0x5C:
            out.append("\\" + chr(o))
        elif 0x20 <= o < 0x7F:
            out.append(chr(o))
        else:
            out.append(f"\\x{o:02x}")
    out.append('"')
    return "".join(out)


def transcribe_value(v) -> str:
    """The text form of one value."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, HashCode):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return quote_text(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return quote_bytes(bytes(v))
    if isinstance(v, list | tuple):
        return "[" + ",".join(transcribe_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_key(k)}:{transcribe_value(x)}" for k, x in v.items()) + "}"
    printer = _PRINTERS.get(type(v))
    if printer is None:
        raise TypeError(f"no transcription for {type(v).__name__}")
    prefix, fields = printer(v)
    return prefix + transcribe_value(fields)


def _key(k: str) -> str:
    if not _IDENT_RE.fullmatch(k):
        raise ValueError(f"bad transcription key {k!r}")
    return k


def transcribe(obj) -> str:
    """The text form of a registered value (a block, a dirent, ...)."""
    return transcribe_value(obj)


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def error(self, msg: str, pos: int | None = None):
        pos = self.i if pos is None else pos
        snippet = self.s[max(0, pos - 10) : pos + 20]
        return FormatError(f"{msg} at offset {pos} (near {snippet!r})")

    def expect(self, ch: str) -> None:
        if self.s.startswith(ch, self.i):
            self.i += len(ch)
        else:
            raise self.error(f"expected {ch!r}")

    def value(self, depth: int = 0):
        if depth > MAX_DEPTH:
            raise self.error(f"values nested more than {MAX_DEPTH} deep")
        s, i = self.s, self.i
        if i >= len(s):
            raise self.error("unexpected end of text")
        c = s[i]
        if c == '"':
            return self.string()
        if c == "[":
            self.i += 1
            items = []
            if s.startswith("]", self.i):
                self.i += 1
                return items
            while True:
                items.append(self.value(depth + 1))
                if s.startswith(",", self.i):
                    self.i += 1
                    continue
                self.expect("]")
                return items
        if c == "{":
            return self.mapping(depth)
        m = _INT_RE.match(s, i)
        if m:
            digits = m.end() - m.start() - (c == "-")
            if digits > MAX_DIGITS:
                raise self.error(f"number of {digits} digits (at most {MAX_DIGITS})")
            self.i = m.end()
            return int(m.group())
        m = _IDENT_RE.match(s, i)
        if not m:
            raise self.error(f"unexpected character {c!r}")
        word = m.group()
        self.i = m.end()
        if s.startswith("{", self.i):
            parser = _PARSERS.get(word)
            if parser is None:
                raise self.error(f"unknown transcription prefix {word!r}", i)
            fields = self.mapping(depth)
            try:
                return parser(fields)
            except FormatError as e:
                raise self.error(f"bad {word}{{...}}: {e}", i) from None
            except (KeyError, TypeError, ValueError) as e:
                raise self.error(f"bad {word}{{...}}: {type(e).__name__}: {e}", i) from None
        if s.startswith(":", self.i):
            hm = _HEX_RE.match(s, self.i + 1)
            if not hm:
                raise self.error("expected hex digest after hash name")
            try:
                hc = hashclass_by_name(word).from_hex(hm.group())
            except FormatError as e:
                raise self.error(str(e), i) from None
            self.i = hm.end()
            return hc
        if word == "true":
            return True
        if word == "false":
            return False
        if word == "null":
            return None
        raise self.error(f"unexpected word {word!r}", i)

    def mapping(self, depth: int) -> dict:
        self.expect("{")
        d: dict = {}
        s = self.s
        if s.startswith("}", self.i):
            self.i += 1
            return d
        while True:
            m = _IDENT_RE.match(s, self.i)
            if not m:
                raise self.error("expected a key")
            key = m.group()
            if key in d:
                raise self.error(f"repeated key {key!r}")
            self.i = m.end()
            self.expect(":")
            d[key] = self.value(depth + 1)
            if s.startswith(",", self.i):
                self.i += 1
                continue
            self.expect("}")
            return d

    def string(self) -> str:
        s = self.s
        start = self.i
        i = start + 1
        out = []
        n = len(s)
        while True:
            j = i
            while j < n and s[j] != '"' and s[j] != "\\":
                j += 1
            out.append(s[i:j])
            if j >= n:
                raise self.error("unterminated string", start)
            if s[j] == '"':
                self.i = j + 1
                return "".join(out)
            # escape
            if j + 1 >= n:
                raise self.error("unterminated string", start)
            e = s[j + 1]
            simple = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
            if e in simple:
                out.append(simple[e])
                i = j + 2
                continue
            width = {"x": 2, "u": 4, "U": 8}.get(e)
            if width is None:
                raise self.error(f"bad escape \\{e}", j)
            digits = s[j + 2 : j + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise self.error(f"bad \\{e} escape", j)
            cp = int(digits, 16)
            if cp > 0x10FFFF:
                raise self.error("code point out of range", j)
            out.append(chr(cp))
            i = j + 2 + width


def parse(text: str, start: int = 0) -> tuple[object, int]:
    """Parse one value from `text` at `start`; return `(value, offset_after)`."""
    p = _Parser(text)
    p.i = start
    return p.value(), p.i


def parse_all(text: str):
    """Parse `text`, which must hold exactly one value (surrounding spaces allowed)."""
    p = _Parser(text)
    while p.i < len(text) and text[p.i].isspace():
        p.i += 1
    v = p.value()
    while p.i < len(text) and text[p.i].isspace():
        p.i += 1
    if p.i != len(text):
        raise p.error("extra text after value")
    return v


def text_to_bytes(s) -> bytes:
    """Turn a parsed byte string (code points 0..255) back into bytes."""
    if not isinstance(s, str):
        raise FormatError(f"expected a quoted byte string, got {type(s).__name__}")
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        raise FormatError("byte string holds a character above \\xff") from None


def _fields(fields: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    unknown = set(fields) - set(required) - set(optional)
    if unknown:
        raise FormatError(f"unknown fields {sorted(unknown)}")
    missing = [k for k in required if k not in fields]
    if missing:
        raise FormatError(f"missing fields {missing}")


def _int(v, what: str, lo: int = 0, hi: int | None = None) -> int:
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        raise FormatError(
            f"{what} must be an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        )
    return v


def _hashcode(v) -> HashCode:
    if not isinstance(v, HashCode):
        raise FormatError("hash must be a hashcode like blake3:<hex>")
    return v


def _register_blocks() -> None:
    from vtstore import blocks as B

    def span_of(v, what: str = "span") -> int:
        return _int(v, what, 0, B.MAX_SPAN)

    def hashref(cls):
        def from_fields(f):
            _fields(f, ("hash", "span"))
            return cls(_hashcode(f["hash"]), span_of(f["span"]))

        return from_fields

    register(
        B.HashCodeBlock,
        "B",
        lambda b: {"hash": b.hashcode, "span": b.span},
        hashref(B.HashCodeBlock),
    )
    register(
        B.IndirectBlock,
        "I",
        lambda b: {"hash": b.hashcode, "span": b.span},
        hashref(B.IndirectBlock),
    )

    def rle(f):
        _fields(f, ("span", "octet"))
        return B.RLEBlock(span_of(f["span"]), _int(f["octet"], "octet", 0, 255))

    register(B.RLEBlock, "RLE", lambda b: {"span": b.span, "octet": b.octet}, rle)

    def lit(f):
        _fields(f, ("data",))
        data = text_to_bytes(f["data"])
        if len(data) > B.MAX_LITERAL * 64:  # what the binary reader takes
            raise FormatError(f"literal block of {len(data)} octets is too large")
        return B.LiteralBlock(data)

    register(B.LiteralBlock, "LB", lambda b: {"data": Binary(b.literal)}, lit)

    def sub(f):
        _fields(f, ("block", "offset", "span"))
        sb = f["block"]
        if not isinstance(sb, B.Block):
            raise FormatError("SubB block must be a block")
        return B.SubBlock(sb, span_of(f["offset"], "offset"), span_of(f["span"]))

    register(
        B.SubBlock,
        "SubB",
        lambda b: {"block": b.superblock, "offset": b.offset, "span": b.span},
        sub,
    )


_register_blocks()


def parse_block(text: str):
    """Parse the text form of a block."""
    from vtstore.blocks import Block

    v = parse_all(text)
    if not isinstance(v, Block):
        raise FormatError(f"not a block transcription: {text[:60]!r}")
    return v
