"""`_treecodec.file_dirent`, the importer's native encoder of a plain file's
dirent, writes exactly what `Dirent.encode` writes, and what it writes scans."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import HashCodeBlock, LiteralBlock, RLEBlock
from vtstore.hashes import hashclasses
from vtstore.tree import dirscan
from vtstore.tree.dirent import T_FILE, Dirent, fsdec, fsenc
from vtstore.tree.meta import Meta

treecodec = pytest.importorskip("vtstore.tree._treecodec")
file_dirent = treecodec.file_dirent

names = st.binary(min_size=1, max_size=300).filter(
    lambda b: b not in (b".", b"..") and b"/" not in b and b"\0" not in b
)
ids = st.one_of(st.none(), st.text(max_size=40).filter(lambda s: "\0" not in s))
times = st.integers(-(1 << 63), (1 << 63) - 1)
hc = hashclasses()[-1]
blocks = st.one_of(
    st.builds(
        lambda d, n: HashCodeBlock(hc.from_data(d), n),
        st.binary(max_size=8),
        st.integers(0, 1 << 40),
    ),
    st.builds(LiteralBlock, st.binary(max_size=32)),
    st.builds(RLEBlock, st.integers(1, 1 << 30), st.integers(0, 255)),
)


@settings(max_examples=2000, deadline=None)
@given(
    names,
    st.integers(0, 0o7777),
    st.integers(0, (1 << 32) - 1),
    st.integers(0, (1 << 32) - 1),
    ids,
    ids,
    times,
    times,
    blocks,
)
def test_same_octets_as_dirent_encode(name, mode, uid, gid, user, group, mtime, ctime, block):
    meta = Meta(mode=mode, uid=uid, gid=gid, user=user, group=group, mtime_ns=mtime, ctime_ns=ctime)
    want = Dirent(T_FILE, name=fsdec(name), meta=meta, block=block).encode()
    got = file_dirent(
        name,
        mode,
        uid,
        gid,
        None if user is None else fsenc(user),
        None if group is None else fsenc(group),
        mtime,
        ctime,
        block.encode(),
    )
    assert got == want
    summary = dirscan.py_scan_dirent(got)
    assert summary is not None and summary[1] == name and summary[3:6] == (mtime, ctime, block.span)


@pytest.mark.parametrize(
    "args",
    [
        (b"", 0, 0, 0, None, None, 0, 0, b"\x00"),  # no name
        (b"x", 0o10000, 0, 0, None, None, 0, 0, b"\x00"),  # mode beyond 07777
        (b"x", 0, 1 << 32, 0, None, None, 0, 0, b"\x00"),  # uid beyond 32 bits
        (b"x", 0, 0, 0, None, None, 1 << 63, 0, b"\x00"),  # time beyond 64 bits
        ("x", 0, 0, 0, None, None, 0, 0, b"\x00"),  # a str name
    ],
)
def test_bad_arguments_are_refused(args):
    with pytest.raises((ValueError, TypeError, OverflowError)):
        file_dirent(*args)
