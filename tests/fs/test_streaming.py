"""Streaming appends (issue 19, item 7): a file still open for writing is
stored as it grows, each time `stream_bytes` were written to it, not only at
close; its content reads right all along and a sync while it is open records
what was written.  (`lseek` SEEK_DATA/SEEK_HOLE: pyfuse3 3.5 has no handler,
see docs/FILESYSTEM.md.)
"""

from __future__ import annotations

import os

from vtstore.fs.filesystem import ROOT_INO, FileSystem
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir, resolve


def _fs(stream_bytes):
    S = MemoryStore()
    return S, FileSystem(S, make_dir([], S), stream_bytes=stream_bytes)


def test_an_open_file_is_stored_as_it_grows():
    S, fs = _fs(1 << 20)
    try:
        fh, a = fs.create(ROOT_INO, "log", 0o100644, os.O_WRONLY, 0, 0)
        node = fs.node(a.ino)
        data = os.urandom(6 << 20)
        for off in range(0, len(data), 128 << 10):
            fs.write(fh, off, data[off : off + (128 << 10)])
        fs._wait(list(node.frozen))  # those being stored (the storer may be done)
        assert node.block.span >= 5 << 20  # in blocks already, the file still open
        assert node.top is None or node.top.written < 1 << 20  # scratch: under one bound
        r = fs.open(a.ino, os.O_RDONLY)
        assert fs.read(r, 0, 1 << 30) == data
        fs.release(r)
        top = fs.sync()  # recorded while open: everything written so far
        assert resolve(top, "log", S).block.read(S) == data
        fs.write(fh, len(data), b"tail")
        fs.release(fh)
        top = fs.sync()
        assert resolve(top, "log", S).block.read(S) == data + b"tail"
    finally:
        fs.close()


def test_without_streaming_the_layer_waits_for_close():
    S, fs = _fs(None)
    try:
        fh, a = fs.create(ROOT_INO, "log", 0o100644, os.O_WRONLY, 0, 0)
        node = fs.node(a.ino)
        for off in range(0, 3 << 20, 1 << 20):
            fs.write(fh, off, os.urandom(1 << 20))
        assert node.frozen == [] and node.top.written == 3 << 20
        fs.release(fh)
    finally:
        fs.close()
