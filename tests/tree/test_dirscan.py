"""The stat cache's scanner: it agrees with the full decoder, in C and in Python.

`scan_dirent` may only accept a dirent that `decode_dirent` decodes and that
`Dirent.encode` writes back octet for octet; everything else it must leave to the
decoder (None).  The C and Python scanners must give identical answers on every
input, valid, unusual or hostile.
"""

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import (
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    decode_blockref,
)
from vtstore.codec import Reader, encode_bytes, encode_varint
from vtstore.errors import FormatError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1, Hash_SHA3_256, Hash_SHA256, hashclasses
from vtstore.stores.memory import MemoryStore
from vtstore.tree import Dirent, Meta, decode_dirent, dirscan
from vtstore.tree.dir import decode_dir_data, encode_dir_block, encode_dir_entries
from vtstore.tree.dirent import (
    F_BLOCK,
    F_INO,
    F_META,
    F_NAME,
    F_PREV,
    F_UUID,
    T_DEVICE,
    T_DIR,
    T_FILE,
    TYPE_NAMES,
    fsdec,
    fsenc,
)
from vtstore.tree.dirscan import EncodedEntry, py_scan_dirent, scan_dir_data

C = dirscan.c_scan_dirent
needs_c = pytest.mark.skipif(C is None, reason="vtstore.tree._treecodec is not built")

# -- strategies ----------------------------------------------------------------

fs_text = st.binary(max_size=12).map(fsdec)  # any file-name octets, as the importer sees them
# what a system call takes as a name: no NUL (and, for an xattr, not empty)
c_text = st.one_of(st.text(max_size=6), fs_text).filter(lambda s: "\0" not in s)
xattr_names = c_text.filter(bool)
names = st.one_of(st.text(min_size=1, max_size=12), fs_text).filter(
    lambda s: s not in ("", ".", "..") and "/" not in s and "\0" not in s
)
big = st.integers(0, 2**64 - 1)  # spans, offsets, ino: below 2**64
ids = st.integers(0, 2**32 - 1)  # uid, gid, device numbers
times = st.integers(-(2**63), 2**63 - 1)
hashcodes = st.builds(
    lambda cls, d: cls.from_data(d),
    st.sampled_from([Hash_SHA1, Hash_SHA256, Hash_BLAKE3, Hash_SHA3_256]),
    st.binary(max_size=4),
)
plain_blocks = st.one_of(
    st.builds(HashCodeBlock, hashcodes, big),
    st.builds(IndirectBlock, hashcodes, big),
    st.builds(RLEBlock, big, st.integers(0, 255)),
    st.builds(LiteralBlock, st.binary(max_size=32)),
)


@st.composite
def sub_blocks(draw):
    sup = draw(plain_blocks)
    offset = draw(st.integers(0, min(sup.span, 2**40)))
    return SubBlock(sup, offset, draw(st.integers(0, sup.span - offset)))


blocks = st.one_of(plain_blocks, plain_blocks, sub_blocks())
metas = st.builds(
    Meta,
    mode=st.none() | st.integers(0, 0o7777),
    uid=st.none() | ids,
    gid=st.none() | ids,
    user=st.none() | c_text,
    group=st.none() | c_text,
    mtime_ns=st.none() | times,
    ctime_ns=st.none() | times,
    atime_ns=st.none() | times,
    # sorted as Meta.from_stat sorts them; repeated names are kept
    xattrs=st.lists(st.tuples(xattr_names, st.binary(max_size=8)), max_size=4).map(
        lambda xs: tuple(sorted(xs))
    ),
    mime_type=st.none() | st.text(max_size=8),
)


@st.composite
def dirents(draw, named=True):
    t = draw(st.sampled_from(sorted(TYPE_NAMES)))
    kw = {
        "name": draw(names) if named else draw(names | st.just("")),
        "meta": draw(st.none() | metas),
    }
    if draw(st.booleans()):
        kw["uuid"] = uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))
    if draw(st.booleans()):
        kw["block"] = draw(blocks)
    if draw(st.integers(0, 3)) == 0:
        kw["prev"] = draw(blocks)
    if draw(st.integers(0, 3)) == 0:
        kw["target"] = draw(c_text)
    if draw(st.integers(0, 2)) == 0:
        kw["ino"] = draw(big)
    if t == T_DEVICE or draw(st.integers(0, 5)) == 0:
        kw["rdev"] = (draw(st.sampled_from("cb")), draw(ids), draw(ids))
    if draw(st.integers(0, 3)) == 0:
        kw["ext"] = draw(st.binary(max_size=10))
    return Dirent(t, **kw)


def summary_of(d: Dirent, raw: bytes) -> tuple:
    """What scan_dirent must say about `d` (the blockref offsets are checked apart)."""
    fields = 0
    for tag, v in enumerate(
        (None, d.name or None, d.meta, d.uuid, d.block, d.prev, d.target, d.ino, d.rdev, d.ext)
    ):
        if v is not None:
            fields |= 1 << tag
    m = d.meta
    return (
        d.type,
        fsenc(d.name),
        fields,
        m.mtime_ns if m else None,
        m.ctime_ns if m else None,
        d.block.span if d.block is not None else None,
    )


def scan_both(raw: bytes, pos: int = 0, end: int | None = None):
    """The Python scanner's answer, after checking that the C one is the same."""
    got = py_scan_dirent(raw, pos, end)
    if C is not None:
        assert C(raw, pos, len(raw) if end is None else end) == got
    return got


def check_accepted(raw: bytes, s: tuple) -> None:
    """An accepted dirent decodes, re-encodes to the same octets and matches its summary."""
    d = decode_dirent(raw)
    assert d.encode() == raw
    assert s[:6] == summary_of(d, raw)
    bstart, bend = s[6:]
    if d.block is not None:
        assert decode_blockref(raw[bstart:bend]) == d.block
    else:
        assert (bstart, bend) == (0, 0)


# -- single dirents ------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(dirents(named=False))
def test_canonical_dirents_are_recognised_exactly(d):
    raw = d.encode()
    s = scan_both(raw)
    deferred = not d.name or isinstance(d.block, SubBlock) or isinstance(d.prev, SubBlock)
    if deferred:
        assert s is None
    else:
        assert s is not None
        check_accepted(raw, s)
    e = EncodedEntry.from_raw(raw) if d.name else None
    if e is not None:
        assert e.canonical and e.dirent() == d and e.encode() == raw
        assert e.block() == d.block and e.key == fsenc(d.name) and e.name == d.name


def meta_fields(m: Meta) -> list[bytes]:
    """The encoded fields of `m`, one by one."""
    r = Reader(m.encode())
    out = []
    while not r.at_end():
        start = r.pos
        r.varint()
        r.lbytes()
        out.append(bytes(r.view[start : r.pos]))
    return out


@st.composite
def mutated(draw):
    """A dirent's encoding, damaged or extended in one of the ways a hostile or
    newer writer could."""
    d = draw(dirents())
    raw = bytearray(d.encode())
    how = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "unknown", "swap", "meta"]))
    i = draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        raw[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "insert":
        raw.insert(i, draw(st.integers(0, 255)))
    elif how == "delete":
        del raw[i]
    elif how == "truncate":
        del raw[i:]
    elif how == "unknown":
        tag = draw(st.sampled_from([0, 10, 11, 99, 200, 300]))
        raw += encode_varint(tag) + encode_bytes(draw(st.binary(max_size=4)))
    elif how == "swap":  # two fields written out of order
        e = draw(dirents())
        raw = bytearray(e.encode()[:1] + encode_varint(F_NAME) + encode_bytes(b"x") + raw[1:])
    else:  # the metadata's fields shuffled, repeated or joined by unknown ones
        fields = meta_fields(d.meta or Meta())
        op = draw(st.sampled_from(["shuffle", "repeat", "unknown"]))
        if op == "shuffle":
            fields = draw(st.permutations(fields))
        elif op == "repeat" and fields:
            fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(fields)))
        else:
            tag = draw(st.sampled_from([0, 11, 12, 127, 128, 1000]))
            fields.insert(
                draw(st.integers(0, len(fields))),
                encode_varint(tag) + encode_bytes(draw(st.binary(max_size=3))),
            )
        rest = d.with_changes(name="", meta=None).encode()[1:]
        raw = bytearray(
            encode_varint(d.type)
            + encode_varint(F_NAME)
            + encode_bytes(fsenc(d.name))
            + encode_varint(F_META)
            + encode_bytes(b"".join(fields))
            + rest
        )
    return bytes(raw)


@settings(max_examples=600, deadline=None)
@given(st.one_of(mutated(), st.binary(max_size=80)))
def test_scanner_accepts_only_what_the_decoder_writes_back(raw):
    s = scan_both(raw)
    if s is not None:
        check_accepted(raw, s)
    else:
        # the full decoder judges it: a dirent, or a FormatError
        try:
            d = decode_dirent(raw)
        except FormatError:
            return
        if d.name:
            e = EncodedEntry.from_raw(raw)
            assert e.dirent() == d and e.encode() == d.encode()
            assert e.canonical == (d.encode() == raw)


@given(st.binary(max_size=60), st.integers(0, 60), st.integers(0, 60))
def test_bounds_inside_a_larger_buffer(buf, a, b):
    a, b = sorted((a, b))
    if b > len(buf):
        with pytest.raises(ValueError):
            py_scan_dirent(buf, a, b)
        if C is not None:
            with pytest.raises(ValueError):
                C(buf, a, b)
        return
    inside, alone = scan_both(buf, a, b), scan_both(buf[a:b])
    if alone is None:
        assert inside is None
    else:  # the blockref offsets are positions in the buffer given
        shift = (a, a) if alone[6:] != (0, 0) else (0, 0)
        assert inside == alone[:6] + (alone[6] + shift[0], alone[7] + shift[1])


def valid_but_not_canonical() -> list[bytes]:
    """Dirents the decoder reads but would write differently."""
    h = Hash_BLAKE3.from_data(b"x")
    base = Dirent(T_FILE, name="f", meta=Meta(mode=0o644, mtime_ns=5), block=HashCodeBlock(h, 9))
    raw = base.encode()
    typed_hash = (
        encode_varint(2) + encode_varint(9) + encode_varint(0) + h.encode()
    )  # TYPED with the default type 0
    meta_rev = encode_varint(6) + encode_bytes(encode_varint(10)) + encode_varint(1)
    meta_rev += encode_bytes(encode_varint(0o644))
    xattrs_unsorted = b"".join(
        encode_varint(8) + encode_bytes(encode_bytes(n) + b"v") for n in (b"b", b"a")
    )
    name = encode_varint(F_NAME) + encode_bytes(b"f")
    return [
        raw + encode_varint(99) + encode_bytes(b"future field"),
        raw + encode_varint(0) + encode_bytes(b""),
        encode_varint(T_FILE)
        + encode_varint(F_BLOCK)
        + encode_bytes(HashCodeBlock(h, 9).encode())
        + name,
        encode_varint(T_FILE)
        + name
        + encode_varint(F_BLOCK)
        + encode_bytes(encode_bytes(typed_hash)),
        # a blockref body with octets after the digest (a future field of the ref)
        encode_varint(T_FILE)
        + name
        + encode_varint(F_BLOCK)
        + encode_bytes(encode_bytes(HashCodeBlock(h, 9).encode()[1:] + b"\0")),
        encode_varint(T_FILE) + name + encode_varint(F_META) + encode_bytes(meta_rev),
        encode_varint(T_FILE) + name + encode_varint(F_META) + encode_bytes(xattrs_unsorted),
        encode_varint(T_FILE) + name + encode_varint(F_META) + encode_bytes(b"\x4d\x01z"),
        encode_varint(T_FILE)
        + name
        + encode_varint(F_META)
        + encode_bytes(Meta(mode=1).encode() + b"\x0b\x01z"),
        encode_varint(T_FILE) + name + encode_varint(F_INO) + encode_bytes(b"\x07\x00"),
        encode_varint(T_DEVICE) + name + encode_varint(8) + encode_bytes(b"c\x01\x03\x00"),
        encode_varint(T_FILE) + name + name,  # a repeated field: the last one wins
        encode_varint(T_FILE) + encode_varint(F_NAME) + encode_bytes(b"") + name,
        encode_varint(T_FILE)
        + name
        + encode_varint(F_UUID)
        + encode_bytes(bytes(16))
        + encode_varint(F_PREV)
        + encode_bytes(SubBlock(LiteralBlock(b"abc"), 1, 1).encode()),
    ]


@pytest.mark.parametrize("raw", valid_but_not_canonical())
def test_valid_but_unusual_dirents_go_to_the_decoder(raw):
    d = decode_dirent(raw)  # valid...
    assert scan_both(raw) is None  # ...but not for the fast path
    e = EncodedEntry.from_raw(raw)
    assert e.dirent() == d and e.encode() == d.encode() and e.block() == d.block
    assert e.canonical == (d.encode() == raw)
    assert e.type == d.type and e.span == (d.block.span if d.block else None)


@pytest.mark.parametrize("bad", [b"..", b".", b"a/b", b"/abs", b"nul\0", b"../x"])
def test_hostile_names_are_refused_through_either_path(bad):
    raw = encode_varint(T_FILE) + encode_varint(F_NAME) + encode_bytes(bad)
    assert scan_both(raw) is None
    with pytest.raises(FormatError, match="unsafe dirent name"):
        EncodedEntry.from_raw(raw)


def test_large_values_and_mode_bits():
    m = Meta(mode=0o7777, uid=2**32 - 1, mtime_ns=-(2**63), ctime_ns=2**63 - 1)
    d = Dirent(T_FILE, name="x", meta=m, block=RLEBlock(2**64 - 1), ino=2**64 - 1)
    s = scan_both(d.encode())
    assert s[3:6] == (-(2**63), 2**63 - 1, 2**64 - 1)
    too_many_bits = encode_varint(1) + encode_bytes(encode_varint(0o10000))
    raw = encode_varint(T_FILE) + encode_varint(F_NAME) + encode_bytes(b"x")
    assert scan_both(raw + encode_varint(F_META) + encode_bytes(too_many_bits)) is None
    eleven = b"\x81" + b"\x80" * 9 + b"\x00"  # 71 bits: refused by every reader
    assert scan_both(raw + encode_varint(F_INO) + encode_bytes(eleven)) is None
    # the largest literal blockref a reader takes, and one octet more
    for n, ok in [(2048, True), (2049, False)]:
        body = encode_varint(2) + encode_varint(n) + encode_varint(2) + bytes(n)
        d = raw + encode_varint(F_BLOCK) + encode_bytes(encode_bytes(body))
        assert (scan_both(d) is not None) == ok
        if ok:
            check_accepted(d, scan_both(d))
        else:
            with pytest.raises(FormatError, match="too large"):
                decode_dirent(d)


@pytest.mark.parametrize(
    "field",
    [
        encode_varint(F_INO) + encode_bytes(encode_varint(2**64)),
        encode_varint(F_META) + encode_bytes(encode_varint(2) + encode_bytes(encode_varint(2**32))),
        encode_varint(F_META) + encode_bytes(encode_varint(3) + encode_bytes(encode_varint(2**40))),
        encode_varint(F_META) + encode_bytes(encode_varint(6) + encode_bytes(encode_varint(2**64))),
        encode_varint(F_META)
        + encode_bytes(encode_varint(10) + encode_bytes(encode_varint(2**65 + 1))),
        encode_varint(8) + encode_bytes(b"c" + encode_varint(2**32) + encode_varint(1)),
        encode_varint(8) + encode_bytes(b"b" + encode_varint(1) + encode_varint(2**33)),
        # an RLE block of span 2**64
        encode_varint(F_BLOCK)
        + encode_bytes(encode_bytes(b"\x02" + encode_varint(2**64) + b"\x01A")),
    ],
)
def test_numbers_out_of_range_are_refused_by_every_reader(field):
    """Values a 10-octet varint holds but no field allows: both scanners defer
    and the decoder raises FormatError (not an OverflowError in a later chown)."""
    raw = encode_varint(T_DEVICE) + encode_varint(F_NAME) + encode_bytes(b"x") + field
    assert scan_both(raw) is None
    with pytest.raises(FormatError):
        decode_dirent(raw)
    with pytest.raises(FormatError):
        EncodedEntry.from_raw(raw)


@needs_c
def test_c_scanner_knows_the_same_hash_classes():
    from vtstore.tree import _treecodec

    assert _treecodec.DIGEST_SIZES == {c.hashid: c.digest_size for c in hashclasses()}


# -- whole directories ---------------------------------------------------------


@st.composite
def directories(draw):
    ents = draw(st.lists(dirents(), max_size=40, unique_by=lambda d: fsenc(d.name)))
    salt = draw(st.none() | st.binary(min_size=1, max_size=16))
    return ents, salt


def scanned(data):
    """scan_dir_data with each scanner; both must give the same entries."""
    results = []
    for impl in [py_scan_dirent] + ([C] if C is not None else []):
        saved = dirscan.scan_dirent
        dirscan.scan_dirent = impl
        try:
            results.append(scan_dir_data(data))
        finally:
            dirscan.scan_dirent = saved
    for entries, salt in results[1:]:
        assert salt == results[0][1]
        assert [e.raw for e in entries] == [e.raw for e in results[0][0]]
        assert [e.canonical for e in entries] == [e.canonical for e in results[0][0]]
    return results[0]


@settings(max_examples=150, deadline=None)
@given(directories())
def test_scan_dir_data_agrees_with_decode_dir_data(d):
    ents, salt = d
    S = MemoryStore()
    data = encode_dir_block(ents, S, salt=salt, max_block_size=1024).data(S)
    want, want_salt = decode_dir_data(data)
    got, got_salt = scanned(data)
    assert got_salt == want_salt == salt
    assert [e.dirent() for e in got] == want
    assert all(e.canonical for e in got)
    assert [e.key for e in got] == [fsenc(e.name) for e in want]
    assert [e.block() for e in got] == [e.block for e in want]
    # written back from the octets read, the directory is the same blocks
    again = encode_dir_entries([(e.key, e.encode()) for e in got], S, salt, 1024)
    assert again == encode_dir_block(ents, S, salt=salt, max_block_size=1024)


@st.composite
def damaged_dirs(draw):
    ents, salt = draw(directories())
    S = MemoryStore()
    data = bytearray(encode_dir_block(ents, S, salt=salt).data(S))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if how == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif how == "delete" and i < len(data):
            del data[i]
        else:
            del data[i:]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(damaged_dirs())
def test_damaged_directories_fail_the_same_way(data):
    try:
        want = decode_dir_data(data)
    except FormatError as err:
        for impl in [py_scan_dirent] + ([C] if C is not None else []):
            saved = dirscan.scan_dirent
            dirscan.scan_dirent = impl
            try:
                with pytest.raises(FormatError) as got:
                    scan_dir_data(data)
            finally:
                dirscan.scan_dirent = saved
            assert str(got.value) == str(err)
        return
    got, salt = scanned(data)
    assert salt == want[1] and [e.dirent() for e in got] == want[0]
    for e, d in zip(got, want[0], strict=True):
        assert e.encode() == d.encode()


def test_scan_refuses_disorder_bad_headers_and_hostile_entries():
    a = Dirent(T_FILE, name="a").encode()
    b = Dirent(T_FILE, name="b").encode()
    head = encode_varint(1) + encode_varint(0)
    assert [e.name for e in scanned(head + encode_bytes(a) + encode_bytes(b))[0]] == ["a", "b"]
    cases = {
        "out of order": head + encode_bytes(b) + encode_bytes(a),
        "out of order or repeated": head + encode_bytes(a) + encode_bytes(a),
        "version": encode_varint(9) + encode_varint(0),
        "flags": encode_varint(1) + encode_varint(6),
        "without a name": head + encode_bytes(Dirent(T_FILE).encode()),
        "unsafe dirent name": head
        + encode_bytes(encode_varint(T_DIR) + encode_varint(F_NAME) + encode_bytes(b"..")),
        "runs past the end": head + encode_bytes(a)[:-1],
        "unknown dirent type": head + encode_bytes(encode_varint(42)),
    }
    for match, data in cases.items():
        with pytest.raises(FormatError, match=match):
            decode_dir_data(data)
        with pytest.raises(FormatError, match=match):
            scan_dir_data(data)


def test_chaff_and_salt_are_skipped():
    S = MemoryStore()
    ents = [Dirent(T_FILE, name=f"f{i:03d}", block=LiteralBlock(b"x")) for i in range(300)]
    data = encode_dir_block(ents, S, salt=b"pepper", max_block_size=512).data(S)
    got, salt = scanned(data)
    assert salt == b"pepper" and [e.dirent() for e in got] == ents
