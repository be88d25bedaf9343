"""The block server: exports and channels, ordering, archives, sockets, limits.

Real servers on 127.0.0.1 and on UNIX sockets in tmp dirs; the low-level cases
speak the protocol byte by byte with `RawClient`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import threading
import time

import pytest

from vtstore.archive import Archive
from vtstore.errors import ReadOnlyError, StoreError
from vtstore.hashes import Hash_BLAKE3
from vtstore.net import BlockServer
from vtstore.net import protocol as P
from vtstore.net.protocol import RemoteError
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dirent import DirDirent


class SlowStore(MemoryStore):
    """A memory store whose reads of one block take a while; thread-safe enough
    for these tests, so the server does not serialise it."""

    threadsafe = True

    def __init__(self, slow: bytes = b"slow", delay: float = 0.5):
        super().__init__()
        self.slow = Hash_BLAKE3.from_data(slow)
        self.delay = delay
        self.flushes = 0

    def _get(self, h):
        if h == self.slow:
            time.sleep(self.delay)
        return super()._get(h)

    def flush(self):
        self.flushes += 1


class TinyArchive:
    """The least an archive needs to be served: `last()` and `update(text)`."""

    def __init__(self):
        self.lines: list[str] = []

    def last(self):
        return self.lines[-1] if self.lines else None

    def update(self, text):
        self.lines.append(text)


class ArchiveStore(MemoryStore):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.archives = {"home": TinyArchive(), "work": TinyArchive()}

    @property
    def exports(self):
        return self.archives


def _error(pkt):
    assert pkt.is_error and pkt.flags & P.F_JSON
    return P.decode_error(pkt.payload)


# -- exports and channels ----------------------------------------------------------------


def test_named_exports(serve, clients):
    a, b = MemoryStore(), MemoryStore()
    _, spec = serve({"": a, "b": b})
    ca = clients(spec)
    cb = clients(spec + "#b")
    h = cb.add(b"to b")
    cb.flush()
    assert h in b and h not in a and h not in ca
    with pytest.raises(RemoteError) as ei:
        clients(spec + "#nope")
    assert ei.value.code == P.E_NO_EXPORT and ei.value.detail["exports"] == ["", "b"]


def test_channels_are_independent(serve, raw):
    a, b = MemoryStore(), MemoryStore()
    b.add(b"one")
    b.add(b"two")
    _, spec = serve({"": a, "b": b})
    c = raw(spec)
    w = P.decode_welcome(c.hello().payload)
    assert w.hashclass is Hash_BLAKE3 and w.max_outstanding == 64
    assert not c.hello("b", channel=1, tag=2).is_error
    c.request(P.OP_LENGTH, tag=3, channel=0)
    c.request(P.OP_LENGTH, tag=3, channel=1)  # same tag, other channel
    got = {}
    for _ in range(2):
        p = c.recv()
        got[p.channel] = P.decode_count(p.payload)
    assert got == {0: 0, 1: 2}
    c.request(P.OP_LENGTH, tag=4, channel=7)
    assert _error(c.recv())[0] == P.E_CHANNEL
    assert _error(c.hello(channel=1, tag=5))[0] == P.E_CHANNEL  # already open
    c.request(P.OP_LENGTH, tag=6)
    assert P.decode_count(c.recv().payload) == 0  # still serving


def test_failed_first_hello_closes(serve, raw):
    _, spec = serve({"": MemoryStore()})
    c = raw(spec)
    c.request(P.OP_HELLO, P.encode_hello(1, None, "nope"))
    assert _error(c.recv())[0] == P.E_NO_EXPORT
    assert c.at_eof()
    c = raw(spec)
    c.request(P.OP_LENGTH)  # before any HELLO
    assert _error(c.recv())[0] == P.E_CHANNEL
    assert c.at_eof()
    c = raw(spec)
    c.request(P.OP_HELLO, P.encode_hello(0, None, ""))
    assert _error(c.recv())[0] == P.E_VERSION


def test_newer_client_version_is_answered_with_ours(serve, raw):
    _, spec = serve({"": MemoryStore()})
    c = raw(spec)
    c.request(P.OP_HELLO, P.encode_hello(7, None, ""))
    assert P.decode_welcome(c.recv().payload).version == 1


# -- ordering -------------------------------------------------------------------------------


def test_answers_come_in_any_order(serve, raw):
    store = SlowStore()
    store.add(b"slow")
    _, spec = serve({"": store})
    c = raw(spec)
    c.hello()
    c.request(P.OP_GET, P.encode_hashcodes([store.slow]), tag=10)
    c.request(P.OP_LENGTH, tag=11)
    first, second = c.recv(), c.recv()
    assert (first.tag, second.tag) == (11, 10)
    assert bytes(P.decode_get_answer(second.payload)[0]) == b"slow"


def test_flush_waits_for_earlier_requests(serve, raw):
    store = SlowStore()
    store.add(b"slow")
    _, spec = serve({"": store})
    c = raw(spec)
    c.hello()
    c.request(P.OP_GET, P.encode_hashcodes([store.slow]), tag=20)
    c.request(P.OP_ADD, P.encode_blocks([b"a", b"b"]), tag=21)
    c.request(P.OP_FLUSH, tag=22)
    tags = [c.recv().tag for _ in range(3)]
    assert tags[-1] == 22 and sorted(tags[:2]) == [20, 21]
    assert store.flushes == 1


# -- archives ---------------------------------------------------------------------------------


def test_archives_with_a_minimal_archive_object(serve, clients):
    store = ArchiveStore()
    _, spec = serve({"": store, "ro": store}, readonly=False)
    st = clients(spec)
    assert st.archive_names() == ["home", "work"]
    assert st.archive_last("home") is None
    h = st.add(b"the tree")
    st.archive_update("home", "line one")
    assert h in store  # flushed before the archive named it
    st.archive_update("home", "line two")
    assert store.archives["home"].lines == ["line one", "line two"]
    assert st.archive_last("home") == "line two"
    with pytest.raises(RemoteError) as ei:
        st.archive_last("nope")
    assert ei.value.code == P.E_NO_ARCHIVE
    assert set(st.exports) == {"home", "work"}


def test_archive_update_refused_on_readonly_export(serve, clients):
    _, spec = serve({"": ArchiveStore()}, readonly=True)
    st = clients(spec)
    with pytest.raises(ReadOnlyError):
        st.archive_update("home", "x")
    assert st.archive_last("home") is None


def test_archives_of_a_datadir(serve, clients, tmp_path):

    with DataDir(tmp_path / "dd") as dd:
        dd.add(b"init")
        dd.flush()
        _, spec = serve({"": dd})
        st = clients(spec)
        assert st.archive_names() == []
        d = DirDirent("top")
        remote = st.exports.get("photos")
        assert remote is None
        from vtstore.net import RemoteArchive

        entry = RemoteArchive(st, "photos").update(d, when=1234.5, comment="first")
        assert st.archive_names() == ["photos"]
        local = Archive(dd.archive_path("photos")).last()
        assert local.dirent == d and local.when == 1234.5 and local.comment == "first"
        # the server records which store the state belongs to
        last = st.exports["photos"].last()
        assert last.store_id == dd.meta["uuid"]
        assert dataclasses.replace(last, store_id=None) == entry
        st.close()


def test_archive_update_needs_the_state_s_blocks_and_records_the_store(serve, clients, tmp_path):
    """A client cannot record a state whose blocks the export's store lacks
    (it would name data that is not there); a good state records the datadir's
    uuid like a local pack does."""
    import json

    from vtstore.net import RemoteArchive
    from vtstore.tree.dir import make_dir
    from vtstore.tree.dirent import FileDirent

    with DataDir(tmp_path / "dd") as dd:
        dd.add(b"init")
        dd.flush()
        _, spec = serve({"": dd})
        st = clients(spec)
        other = MemoryStore()
        absent = make_dir([FileDirent("f", other.add(b"x" * 5000))], other, name="top")
        with pytest.raises(RemoteError, match="not in"):
            RemoteArchive(st, "photos").update(absent, when=1.0)
        assert not os.path.exists(dd.archive_path("photos"))
        here = make_dir([FileDirent("f", st.add(b"y" * 5000))], st, name="top")
        RemoteArchive(st, "photos").update(here, when=2.0)
        (line,) = open(dd.archive_path("photos")).read().splitlines()
        assert json.loads(line)["store"] == dd.meta["uuid"]
        st.close()


def test_archive_update_if_newer_is_checked_by_the_server(serve, clients, tmp_path):
    """ARCHIVE_UPDATE with if_newer: the server appends only after an older
    latest state, under the archive's lock, and says whether it appended."""
    from vtstore.net import RemoteArchive
    from vtstore.tree.dir import make_dir
    from vtstore.tree.dirent import FileDirent

    with DataDir(tmp_path / "dd") as dd:
        dd.add(b"init")
        dd.flush()
        _, spec = serve({"": dd})
        st = clients(spec)
        top = make_dir([FileDirent("f", st.add(b"z" * 5000))], st, name="top")
        ra = RemoteArchive(st, "photos")
        assert ra.update_if_newer(top, 10.0) is True
        assert ra.update_if_newer(top, 9.0) is False
        assert ra.update_if_newer(top, 10.0) is False
        assert ra.update_if_newer(top, 11.0) is True
        whens = [e.when for e in Archive(dd.archive_path("photos")).entries()]
        assert whens == [10.0, 11.0]
        st.close()


# -- UNIX sockets -----------------------------------------------------------------------------


def test_unix_socket_mode_and_cleanup(tmp_path):
    path = tmp_path / "vt.sock"
    with BlockServer({"": MemoryStore()}) as srv:
        spec = srv.listen(str(path))
        assert spec == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(StoreError, match="another server"):
            BlockServer({"": MemoryStore()}).listen_unix(str(path))
    assert not path.exists()


def test_stale_socket_is_removed_other_files_are_not(tmp_path, serve):
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays; nothing listens
    assert stale.exists()
    _, spec = serve({"": MemoryStore()}, str(stale))
    assert spec == f"unix:{stale}"
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    srv = BlockServer({"": MemoryStore()})
    try:
        with pytest.raises(StoreError, match="not a socket"):
            srv.listen(str(plain))
    finally:
        srv.shutdown()
    assert plain.read_text() == "keep me"


# -- limits and shutdown -------------------------------------------------------------------------


def test_back_pressure_bounds_a_connection(serve, raw, tmp_path):
    store = MemoryStore()
    big = os.urandom(1 << 20)
    h = store.add(big)
    # a UNIX socket: its kernel buffers are small and the same on every machine
    srv, spec = serve(
        {"": store}, str(tmp_path / "bp.sock"), max_outstanding=4, max_buffered=4 << 20
    )
    c = raw(spec)
    c.hello()
    n_get, n_fill = 10, 100
    fill = P.encode_hashcodes([h] * 4096)  # 135 kB requests with small answers
    sent = threading.Event()

    def flood():
        for i in range(n_get):
            c.request(P.OP_GET, P.encode_hashcodes([h]), tag=100 + i)
        for i in range(n_fill):
            c.request(P.OP_CONTAINS, fill, tag=1000 + i)
        sent.set()

    t = threading.Thread(target=flood)
    t.start()
    time.sleep(1.0)
    (conn,) = list(srv._conns)
    # nobody reads the answers: the server stops admitting requests, and the
    # client's sends block instead of the server buffering 13 MB
    assert conn.outstanding <= 4
    assert conn.buffered <= (4 << 20) + 4 * (1 << 20) + 1024
    assert not sent.is_set()
    for _ in range(n_get + n_fill):
        p = c.recv()
        if p.op == P.OP_GET:
            assert len(P.decode_get_answer(p.payload)[0]) == len(big)
        else:
            assert P.decode_bitmap(p.payload) == [True] * 4096
    t.join(10)
    assert sent.is_set()


def test_graceful_shutdown_answers_in_flight_requests(raw):
    store = SlowStore(delay=1.0)
    store.add(b"slow")
    srv = BlockServer({"": store}, insecure_no_auth=True)
    spec = srv.listen("127.0.0.1:0")
    c = raw(spec)
    c.hello()
    c.request(P.OP_GET, P.encode_hashcodes([store.slow]), tag=5)
    time.sleep(0.2)  # the request is running
    t0 = time.monotonic()
    srv.shutdown()
    assert time.monotonic() - t0 >= 0.5
    p = c.recv()
    assert p.tag == 5 and bytes(P.decode_get_answer(p.payload)[0]) == b"slow"
    assert c.at_eof()
    assert store.flushes >= 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(spec.rsplit(":", 1)[1])), timeout=1)


def test_fifty_concurrent_clients(serve, clients):
    store = MemoryStore()
    _, spec = serve({"": store}, workers=4)
    shared = [b"shared block %d" % i * 10 for i in range(20)]
    errors = []
    results = {}

    def work(i):
        try:
            st = clients(spec)
            mine = [os.urandom(512) + bytes([i]) for _ in range(100)]
            hs = st.add_many(mine + shared)
            st.flush()
            assert st.get_many(hs) == mine + shared
            assert all(st.contains_many(hs))
            results[i] = hs
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 50
    assert len(store) == 50 * 100 + len(shared)
