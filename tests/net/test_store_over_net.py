"""The Store contract, over TCP, a UNIX socket and a command's stdio.

Every case runs against a `StreamStore` talking to a real server: in this process
for tcp and unix (the backing MemoryStore can then be inspected too), and a child
`vt -S memory: serve -` for stdio.  The generic suite of tests/stores runs over
the same three (see test_generic_suite.py); these are the cases that matter most
for a network store, kept here so this directory stands alone.
"""

from __future__ import annotations

import os

import pytest

from vtstore.blocks import HashCodeBlock, IndirectBlock, LiteralBlock, RLEBlock, SubBlock
from vtstore.errors import HashClassMismatchError, MissingBlockError, ReadOnlyError, StoreError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA256, hash_of_hashcodes
from vtstore.net import client as C
from vtstore.stores.memory import MemoryStore

KINDS = ["tcp", "unix", "stdio"]


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def net(kind, serve, clients, helpers, tmp_path):
    """`net(**client_kw) -> (client store, backing store or None)`."""

    def make(backing=None, readonly_export=False, **kw):
        if kind == "stdio":
            return clients(helpers.stdio_spec(), **kw), None
        backing = backing if backing is not None else MemoryStore()
        address = "127.0.0.1:0" if kind == "tcp" else str(tmp_path / "s.sock")
        _, spec = serve({"": backing}, address, readonly=readonly_export)
        return clients(spec, **kw), backing

    return make


def blocks(n, size=1000, seed=0):
    return [os.urandom(size) for _ in range(n)]


def test_add_get_roundtrip(net):
    st, back = net()
    assert st.hashclass is Hash_BLAKE3
    datas = blocks(50) + [b"", b"x", bytes(70000)]
    hs = st.add_many(datas)
    assert hs == [Hash_BLAKE3.from_data(d) for d in datas]
    for h, d in zip(hs, datas, strict=True):
        assert st[h] == d  # answered locally or remotely, the same
    st.flush()
    assert st.unflushed_count == 0
    for h, d in zip(hs, datas, strict=True):
        assert st[h] == d  # now from the server
        assert h in st
    assert st.get_many(hs) == datas
    if back is not None:
        assert len(back) == len(datas)


def test_single_adds_and_buffers(net):
    st, back = net()
    data = bytearray(b"abc" * 100)
    h = st.add(memoryview(data))
    data[0] = ord("z")  # the caller may reuse its buffer at once
    st.flush()
    assert st[h] == b"abc" * 100
    assert st.add(b"abc" * 100) == h  # adding again is harmless
    st.flush()
    assert len(st) == 1


def test_missing_blocks(net):
    st, _ = net()
    h = Hash_BLAKE3.from_data(b"never stored")
    with pytest.raises(MissingBlockError) as ei:
        st[h]
    assert isinstance(ei.value, KeyError)
    assert st.get(h) is None
    assert st.get(h, b"d") == b"d"
    assert h not in st
    st.add(b"present")
    with pytest.raises(MissingBlockError):
        st.get_many([Hash_BLAKE3.from_data(b"present"), h])


def test_contains_many_batches_and_classes(net):
    st, _ = net()
    hs = st.add_many(blocks(C.CONTAINS_BATCH + 10, size=40))
    st.flush()
    absent = [Hash_BLAKE3.from_data(b"no %d" % i) for i in range(5)]
    other = Hash_SHA256.from_data(b"other class")
    got = st.contains_many(hs + absent + [other])
    assert got == [True] * len(hs) + [False] * 5 + [False]
    assert other not in st


def test_len_and_listing(net):
    st, back = net()
    hs = sorted(st.add_many(blocks(C.LIST_PAGE + 100, size=40)))
    # no flush: len and listings still see every acknowledged add
    assert len(st) == len(hs)
    assert list(st.hashcodes()) == hs
    assert list(st) == hs
    assert list(st.hashcodes(length=3)) == hs[:3]
    assert list(st.hashcodes(start=hs[10])) == hs[10:]
    assert list(st.hashcodes(start=hs[10], after=True, length=2)) == hs[11:13]
    assert list(st.hashcodes(start=hs[-1], after=True)) == []
    assert list(st.hashcodes(length=0)) == []
    with pytest.raises(ValueError):
        st.hashcodes(length=-1)
    with pytest.raises(HashClassMismatchError):
        st.hashcodes(start=Hash_SHA256.from_data(b"x"))


def test_hash_of_hashcodes(net):
    st, back = net()
    hs = sorted(st.add_many(blocks(300, size=40)))
    assert st.hash_of_hashcodes() == (hash_of_hashcodes(Hash_BLAKE3, hs), hs[-1])
    assert st.hash_of_hashcodes(start=hs[5], after=True, length=10) == (
        hash_of_hashcodes(Hash_BLAKE3, hs[6:16]),
        hs[15],
    )
    empty = hash_of_hashcodes(Hash_BLAKE3, [])
    assert st.hash_of_hashcodes(start=hs[-1], after=True) == (empty, None)
    if back is not None:
        assert st.hash_of_hashcodes(length=77) == back.hash_of_hashcodes(length=77)


def test_large_gets_come_in_parts(net):
    st, _ = net()
    datas = blocks(40, size=60000)  # 2.4 MB: more than one GET answer can carry
    hs = st.add_many(datas)
    st.flush()
    assert st.get_many(hs) == datas


def test_indirect_completeness(net):
    st, _ = net()
    leaves = blocks(5, size=100)
    hs = st.add_many(leaves)
    refs = b"".join(HashCodeBlock(h, 100).encode() for h in hs)
    refs += RLEBlock(1000, 0).encode() + LiteralBlock(b"lit").encode()
    top = IndirectBlock(st.add(refs), 5 * 100 + 1000 + 3)
    assert st.is_complete(top)
    assert st.missing_blocks(top) == (6, [])
    assert st.is_complete(SubBlock(top, 10, 50))
    absent = Hash_BLAKE3.from_data(b"absent leaf")
    refs2 = refs + HashCodeBlock(absent, 11).encode()
    top2 = IndirectBlock(st.add(refs2), top.span + 11)
    assert st.missing_blocks(top2) == (7, [absent])
    assert not st.is_complete(IndirectBlock(Hash_BLAKE3.from_data(b"nope"), 5))


def test_readonly_client(net):
    st, _ = net(readonly=True)
    assert st.readonly
    with pytest.raises(ReadOnlyError):
        st.add(b"x")


def test_readonly_export(kind, net):
    if kind == "stdio":
        pytest.skip("the stdio server here is writable")
    st, back = net(readonly_export=True)
    assert st.readonly  # the server said so in its welcome
    back.add(b"there")
    assert st[Hash_BLAKE3.from_data(b"there")] == b"there"


def test_hashclass_must_match(net):
    with pytest.raises(HashClassMismatchError):
        net(hashclass=Hash_SHA256)


def test_other_hashclass_served(kind, net):
    if kind == "stdio":
        pytest.skip("covered over sockets")
    st, back = net(backing=MemoryStore(hashclass=Hash_SHA256))
    assert st.hashclass is Hash_SHA256
    h = st.add(b"sha")
    assert h == Hash_SHA256.from_data(b"sha")
    st.flush()
    assert back[h] == b"sha"
    with pytest.raises(HashClassMismatchError):
        st[Hash_BLAKE3.from_data(b"sha")]


def test_closed_store(net):
    st, _ = net()
    h = st.add(b"before close")
    st.close()
    st.close()  # twice is fine
    with pytest.raises(StoreError):
        st[h]
    with pytest.raises(StoreError):
        st.add(b"after")


def test_close_flushes(net):
    st, back = net()
    hs = st.add_many(blocks(20))
    st.close()
    if back is not None:
        assert all(h in back for h in hs)


def test_context_manager_and_repr(net):
    st, _ = net()
    with st:
        st.add(b"in a with")
        assert "StreamStore" in repr(st)
    assert st.closed


def test_batches_respect_the_servers_packet_limit(serve, clients):
    """Blocks near the server's (small) packet limit, mixed with small ones, in
    add_many batches and in the resend after a reconnect."""
    back = MemoryStore()
    srv, spec = serve({"": back}, max_packet=64 * 1024)
    st = clients(spec, reconnect_timeout=5)
    datas = [os.urandom(50_000) if i % 3 == 0 else os.urandom(9000) for i in range(30)]
    hs = st.add_many(datas)
    with pytest.raises(StoreError, match="larger than the server accepts"):
        st.add(os.urandom(70_000))
    (conn,) = list(srv._conns)
    conn.kill()  # drop the connection: every unflushed block goes again
    st.flush()
    assert st.reconnects == 1
    assert [back[h] for h in hs] == datas


def test_one_client_store_many_threads(serve, clients):
    import threading

    back = MemoryStore()
    _, spec = serve({"": back})
    st = clients(spec)
    errors = []

    def work(i):
        try:
            mine = [os.urandom(3000) for _ in range(200)]
            hs = st.add_many(mine)
            assert st.get_many(hs) == mine
            st.flush()
            assert all(st.contains_many(hs))
            assert [st[h] for h in hs[:20]] == mine[:20]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:2]
    assert len(st) == len(back) == 8 * 200
