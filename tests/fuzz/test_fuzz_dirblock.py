"""Fuzz the directory block decoders: `decode_dir_data` and the stat cache's
`scan_dir_data` (the C scanner behind it), which must refuse exactly what the
decoder refuses.  Seeds are real encoded directories: empty, small, salted, and
large ones chunked into several leaves (their whole data, leaves end to end)."""

from __future__ import annotations

from vtstore.errors import FormatError
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import decode_dir_data, make_dir, read_dir_data
from vtstore.tree.dirent import FileDirent, fsenc
from vtstore.tree.dirscan import scan_dir_data

from .test_fuzz_blockref import blocks
from .test_fuzz_dirent import dirents, meta

# not zeros: misread zeros are empty entries and chaff, thousands per input
_FILL = bytes((i * 37 + 11) % 251 for i in range(8000))


def _seeds() -> list[bytes]:
    store = MemoryStore()
    named = [d for d in dirents() if d.name]
    # large directories cut into two leaves: six entries of 8 KiB each
    # (every entry costs a decode per input, octets hardly cost)
    big = [
        FileDirent(
            f"file-{i:03d}",
            block=blocks()[i % 7],
            meta=meta(i % 8) if i % 3 == 0 else None,
            ext=_FILL,
        )
        for i in range(6)
    ]
    dirs = [
        make_dir([], store),
        make_dir(named, store),
        make_dir(named[:3], store, salt=b"0123456789abcdef"),
        make_dir(named[3:6], store),
        make_dir(named[6:], store),
        make_dir(big, store),
        make_dir(big, store, salt=b"salt" * 4),
    ]
    out = [read_dir_data(d.block, store) for d in dirs]
    # the large ones really are several leaves
    assert all(d.block.indirect for d in dirs[5:])
    return out


def _decode(data: bytes):
    try:
        entries, salt = decode_dir_data(data)
    except FormatError:
        entries = None
    try:
        scanned, ssalt = scan_dir_data(data)
    except FormatError:
        if entries is not None:
            raise AssertionError("scan_dir_data refused what decode_dir_data took") from None
        raise
    if entries is None:
        raise AssertionError("scan_dir_data took what decode_dir_data refused")
    assert salt == ssalt and [e.key for e in scanned] == [fsenc(e.name) for e in entries]


def test_fuzz_decode_dir_data(fuzz):
    res = fuzz(_decode, _seeds())
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()
