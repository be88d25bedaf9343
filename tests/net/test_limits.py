"""Bounded resources in the block server (issue 13, item 3): one memory budget
for the whole server, a maximum number of connections with a clear refusal,
handshake/idle/io timeouts, and a real `vt serve` that keeps its RSS under the
documented bound while 200 hostile connections stall or flood it and another
client saves through it."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vtstore.errors import StoreError
from vtstore.net import StreamStore
from vtstore.net import protocol as P
from vtstore.net.limits import (
    E_BUSY,
    E_TIMEOUT,
    MAX_ADD_BLOCKS,
    REQUEST_RESERVE,
    Limits,
)
from vtstore.stores.memory import MemoryStore

MIB = 1024 * 1024
#: The documented bound on `vt serve`'s RSS with default settings under attack.
RSS_BOUND = 256 * MIB


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_serve_limits.py"
    spec = importlib.util.spec_from_file_location("bench_serve_limits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def limited(serve, tmp_path, caplog):
    """`limited(**limits) -> (server, spec)`: an in-process server with those
    `Limits` on a UNIX socket; its log must show no bug (ERROR)."""
    caplog.set_level(logging.WARNING, logger="vtstore.net")

    def start(store=None, max_packet=P.DEFAULT_MAX_PACKET, **kw):
        store = store if store is not None else MemoryStore()
        return serve(
            {"": store},
            str(tmp_path / "s.sock"),
            max_packet=max_packet,
            limits=Limits(**kw),
        )

    yield start
    bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bugs, bugs[0].getMessage()


def _connection_error(c) -> tuple[int, str]:
    """The connection-level error the server sent, then its end of stream."""
    p = c.recv()
    assert p is not None and p.op == 0 and p.tag == 0 and p.is_error
    code, detail = P.decode_error(p.payload)
    assert c.at_eof()
    return code, detail["message"]


def _wait(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _established(raw, spec):
    c = raw(spec)
    assert not c.hello().is_error
    return c


# -- connections ----------------------------------------------------------------------


def test_connections_beyond_the_maximum_are_refused_clearly(limited, raw, helpers):
    srv, spec = limited(max_connections=3)
    held = [_established(raw, spec) for _ in range(3)]
    code, message = _connection_error(raw(spec))
    assert code == E_BUSY and "too many connections (3" in message
    # the client store says so in one error, and so does vt
    with pytest.raises(StoreError, match="too many connections"):
        StreamStore(spec, reconnect_timeout=0.5)
    r = subprocess.run(
        helpers.vt_command("-S", spec, "info"),
        env=helpers.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "too many connections" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # the refused got no thread of their own; a place that frees is taken again
    assert srv.connection_count == 3
    held.pop().close()
    _wait(lambda: srv.connection_count == 2, what="the closed connection to go")
    with StreamStore(spec) as st:
        assert st.get(st.add(b"served again")) == b"served again"


def test_strangers_cannot_take_every_place(limited, raw):
    srv, spec = limited(max_connections=4)  # at most 2 in their handshake
    first = raw(spec)
    _wait(lambda: srv.connection_count == 1)
    second = raw(spec)
    _wait(lambda: srv.connection_count == 2)
    # a third stranger makes the oldest give way, and is served
    third = _established(raw, spec)
    code, message = _connection_error(first)
    assert code == E_BUSY and "handshake" in message
    assert not second.hello().is_error
    third.request(P.OP_LENGTH, tag=2)
    assert P.decode_count(third.recv().payload) == 0


# -- timeouts -------------------------------------------------------------------------


def test_no_handshake_in_time(limited, raw):
    srv, spec = limited(handshake_timeout=1.0)
    silent = raw(spec)
    slow = raw(spec)
    hello = P.encode_packet(P.OP_HELLO, 0, 0, 1, P.encode_hello(1, None, ""))
    t0 = time.monotonic()
    for octet in hello[:5]:  # a slowloris first packet is no better than silence
        slow.send(bytes([octet]))
        time.sleep(0.1)
    for c in (silent, slow):
        code, message = _connection_error(c)
        assert code == E_TIMEOUT and "no handshake within 1s" in message
    assert time.monotonic() - t0 < 5
    _wait(lambda: srv.connection_count == 0)


def test_idle_connection_is_closed_and_the_client_store_reconnects(limited, raw):
    srv, spec = limited(idle_timeout=0.5)
    c = _established(raw, spec)
    code, message = _connection_error(c)
    assert code == E_TIMEOUT and "idle for 0.5s" in message
    with StreamStore(spec) as st:
        h = st.add(b"before a nap")
        st.flush()
        time.sleep(1.5)
        assert st.get(h) == b"before a nap"
        assert st.reconnects >= 1


def test_busy_connection_is_not_idle(limited, raw):
    """A client waiting for a slow answer (here: its FLUSH behind a slow store)
    sends nothing for longer than the idle timeout and is not dropped."""

    class SlowFlush(MemoryStore):
        def flush(self):
            time.sleep(1.5)

    srv, spec = limited(store=SlowFlush(), idle_timeout=0.5)
    c = _established(raw, spec)
    c.request(P.OP_FLUSH, tag=2)
    p = c.recv()
    assert p.tag == 2 and not p.is_error


def test_slowloris_packet_is_dropped_and_gives_back_its_budget(limited, raw):
    srv, spec = limited(io_timeout=0.5)
    c = _established(raw, spec)
    # a packet of 1 MiB: its first 100 KiB at once (so it is charged), then a trickle
    c.send(struct.pack(">I", 1 * MIB) + b"\x02\x00\x00\x02" + bytes(100_000))
    _wait(lambda: srv._used >= MIB, what="the packet to be admitted")
    t0 = time.monotonic()
    with pytest.raises(OSError):
        while time.monotonic() - t0 < 10:
            c.send(b"\0")
            time.sleep(0.1)
    assert time.monotonic() - t0 < 5
    _wait(lambda: srv.connection_count == 0 and srv._used == 0, what="the budget back")


def test_announced_large_packet_holds_nothing_until_it_comes(limited, raw):
    srv, spec = limited(io_timeout=1.0)
    c = _established(raw, spec)
    c.send(struct.pack(">I", 16 * MIB - 64) + b"\x02\x00\x00\x02")
    for _ in range(5):
        c.send(b"\0")
        time.sleep(0.1)
        assert srv._used == 0  # under 64 KiB of it came: nothing charged
    code, message = _connection_error(c)
    assert code == E_TIMEOUT and "too slowly (not 64 KiB in 1s)" in message


def test_slowloris_packet_gets_a_timeout_error(limited, raw):
    srv, spec = limited(io_timeout=0.5)
    c = _established(raw, spec)
    c.send(struct.pack(">I", 200_000) + b"\x02\x00\x00\x02")
    code, message = _connection_error(c)
    assert code == E_TIMEOUT and "too slowly" in message


def test_client_that_does_not_read_its_answers_is_dropped(limited, raw):
    store = MemoryStore()
    h = store.add(os.urandom(60_000))
    srv, spec = limited(store=store, io_timeout=0.5)
    c = _established(raw, spec)
    get = P.encode_packet(P.OP_GET, 0, 0, 5, P.encode_hashcodes([h]))
    t0 = time.monotonic()
    with pytest.raises(OSError):
        while time.monotonic() - t0 < 10:  # ask and ask, never read
            c.send(get * 16)
    assert time.monotonic() - t0 < 5
    _wait(lambda: srv.connection_count == 0, what="the connection to be dropped")
    _wait(lambda: srv._used == 0, what="the budget back")


def test_stdio_connection_has_no_timeouts(helpers):
    """`vt serve -` trusts its transport: an idle stdio client is kept."""
    spec = helpers.stdio_spec() + " --idle-timeout 0.3 --handshake-timeout 0.3"
    with StreamStore(spec) as st:
        h = st.add(b"over a pipe")
        time.sleep(1.0)
        assert st.get(h) == b"over a pipe"
        assert st.reconnects == 0


# -- the memory budget ----------------------------------------------------------------


def test_too_many_items_in_one_request(limited, raw):
    srv, spec = limited()
    c = _established(raw, spec)
    c.request(P.OP_ADD, P.encode_blocks([b"x"] * (MAX_ADD_BLOCKS + 1)), tag=2)
    p = c.recv()
    code, detail = P.decode_error(p.payload)
    assert code == P.E_TOO_LARGE and f"at most {MAX_ADD_BLOCKS} blocks" in detail["message"]
    c.request(P.OP_ADD, P.encode_blocks([b"x"] * MAX_ADD_BLOCKS), tag=3)
    assert not c.recv().is_error  # the connection lives
    _wait(lambda: srv._used == 0)


def test_one_budget_for_the_whole_server(limited, tmp_path):
    """Flooders that send ADDs and GETs without reading hold at most the budget
    (plus the small handshake and error packets), and a well-behaved client is
    served meanwhile."""
    memory = 2 * (MIB + REQUEST_RESERVE) + 2 * MIB
    store = MemoryStore()
    big = store.add(os.urandom(64 * 1024))
    srv, spec = limited(store=store, max_packet=MIB, memory=memory, per_connection=0, io_timeout=60)
    assert srv.limits.per_connection == MIB + REQUEST_RESERVE
    path = spec[len("unix:") :]
    blocks = [os.urandom(32 * 1024) for _ in range(16)]
    add = P.encode_packet(P.OP_ADD, 0, 0, 2, P.encode_blocks(blocks))
    get = P.encode_packet(P.OP_GET, 0, 0, 3, P.encode_hashcodes([big] * 32))
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], srv._used)
            time.sleep(0.001)

    import socket

    flooders = []
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for i in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(P.encode_packet(P.OP_HELLO, 0, 0, 1, P.encode_hello(1, None, "")))
            s.setblocking(False)
            flooders.append([s, add if i % 2 else get, memoryview(b"")])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for f in flooders:
                s, pkt, out = f
                try:
                    if not out:
                        out = memoryview(pkt)
                    f[2] = out[s.send(out) :]
                except BlockingIOError:
                    pass
                except OSError:  # dropped: fine, as long as the budget held
                    f[2] = memoryview(pkt)
            time.sleep(0.005)
        assert peak[0] > memory // 2  # the flood was held back, not absent
        with StreamStore(spec) as st:
            data = [os.urandom(40_000) + bytes([i % 256]) for i in range(256)]
            hs = st.add_many(data)
            st.flush()
            assert st.get_many(hs[::17]) == data[::17]
    finally:
        stop.set()
        sampler.join()
        for f in flooders:
            f[0].close()
    assert peak[0] <= memory + 64 * 1024, (peak[0], memory)
    _wait(lambda: srv.connection_count == 0 and srv._used == 0, what="the budget back")


def test_limits_are_checked():
    with pytest.raises(ValueError, match="memory budget must be at least"):
        Limits(memory=8 * MIB).checked(P.DEFAULT_MAX_PACKET)
    with pytest.raises(ValueError, match="at least 1"):
        Limits(max_connections=0).checked(P.DEFAULT_MAX_PACKET)
    with pytest.raises(ValueError, match="idle timeout"):
        Limits(idle_timeout=0).checked(P.DEFAULT_MAX_PACKET)


def test_vt_serve_options(helpers, tmp_path):
    from vtstore.net import limits as L

    r = subprocess.run(
        helpers.vt_command("-S", "memory:", "serve", "--help"),
        env=helpers.subprocess_env(),
        capture_output=True,
        text=True,
    )
    text = " ".join(r.stdout.split())
    assert f"(default {L.DEFAULT_MAX_CONNECTIONS}); at most half" in text
    assert f"(default {L.DEFAULT_MEMORY // MIB}MiB;" in text
    assert f"(default {L.DEFAULT_IDLE_TIMEOUT:g})" in text
    assert f"(default {L.DEFAULT_HANDSHAKE_TIMEOUT:g})" in text
    assert f"moves less than {L.IO_STEP // 1024} KiB in this long (default" in text
    assert f"(default {L.DEFAULT_IO_TIMEOUT:g})" in text
    for bad, says in [
        (["--memory", "1M"], "memory budget must be at least"),
        (["--memory", "lots"], "not a size"),
        (["--max-connections", "0"], "at least 1"),
        (["--io-timeout", "0"], "io timeout must be more than 0"),
    ]:
        r = subprocess.run(
            helpers.vt_command("-S", "memory:", "serve", str(tmp_path / "x.sock"), *bad),
            env=helpers.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- under attack: a real vt serve, 200 hostile connections, a save -------------------------


def _attack_run(tmp_path, size_mib, counts):
    bench = _bench()
    r = bench.run(tmp_path, size_mib * MIB, counts, readback=False)
    log = r.pop("serve_log_tail")
    assert r["save_rc"] == 0, (r["save_stderr"], log)
    assert r["serve_rc"] == 0, log
    attack = r["attack"]
    assert attack["refused"] > 0 and attack["closed_by_server"] > 0, attack
    assert r["rss_peak"] < RSS_BOUND, r
    # read a sample back: the first 64 MiB
    cat = subprocess.Popen(
        bench.vt("-q", "-S", f"{tmp_path}/dd", "cat", r["ref"]),
        env=bench.env(),
        stdout=subprocess.PIPE,
    )
    want = hashlib.sha256()
    got = hashlib.sha256()
    n = 0
    for piece in bench.data_chunks(min(size_mib, 64) * MIB):
        want.update(piece)
        n += len(piece)
    got.update(cat.stdout.read(n))
    cat.kill()
    cat.wait()
    assert got.digest() == want.digest()
    return r


def test_200_hostile_connections_during_a_save(tmp_path):
    r = _attack_run(tmp_path, 64, {"silent": 50, "trickle": 50, "stall": 50, "flood": 50})
    print({k: r[k] for k in ("rss_idle", "rss_peak", "save_seconds", "attack")})


@pytest.mark.slow
def test_200_stalled_connections_during_a_1_gib_save(tmp_path):
    r = _attack_run(tmp_path, 1024, {"silent": 50, "trickle": 50, "stall": 50, "flood": 50})
    print({k: r[k] for k in ("rss_idle", "rss_peak", "save_seconds", "attack")})


def test_refusal_over_tcp(serve, raw):
    srv, spec = serve({"": MemoryStore()}, "127.0.0.1:0", limits=Limits(max_connections=1))
    held = _established(raw, spec)
    code, message = _connection_error(raw(spec))
    assert code == E_BUSY and "too many connections (1" in message
    with pytest.raises(StoreError, match="too many connections"):
        StreamStore(spec, reconnect_timeout=0.5)
    held.close()
