"""Shared fixtures.

Store factories: `STORE_FACTORIES` maps a store kind to a factory class; the
generic store suite (tests/stores/test_generic.py) runs every test over every
registered kind × `HASHCLASSES`.  To add a kind (a network client store, say),
define a `StoreFactory` subclass and decorate it with `@store_factory("name")`
here, or in a module this file imports.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1

HASHCLASSES = [Hash_BLAKE3, Hash_SHA1]
STORE_FACTORIES: dict[str, type[StoreFactory]] = {}


def store_factory(name: str):
    """Class decorator: register a `StoreFactory` under `name`."""

    def deco(cls):
        cls.kind = name
        STORE_FACTORIES[name] = cls
        return cls

    return deco


class StoreFactory:
    """Makes stores of one kind over one underlying place.

    `open()` returns a new handle on the same store; for `persistent` kinds a
    handle opened after the previous one was closed sees what it stored.
    `close_all()` releases whatever the factory itself keeps (servers, say).
    """

    kind = "?"
    persistent = True

    def __init__(self, tmp_path: Path, hashclass):
        self.tmp = tmp_path
        self.hashclass = hashclass

    def open(self, readonly: bool = False):  # pragma: no cover - abstract
        raise NotImplementedError

    def close_all(self) -> None:
        pass


@store_factory("memory")
class MemoryFactory(StoreFactory):
    persistent = False

    def open(self, readonly=False):
        from vtstore.stores.memory import MemoryStore

        return MemoryStore(hashclass=self.hashclass, readonly=readonly)


@store_factory("datadir")
class DataDirFactory(StoreFactory):
    def open(self, readonly=False):
        from vtstore.stores.datadir import DataDir

        return DataDir(self.tmp / "dd", hashclass=self.hashclass, readonly=readonly)


@store_factory("datadir-small-files")
class SmallDataDirFactory(StoreFactory):
    """Tiny frames and data files, so rollover, sealing and fd eviction happen."""

    def open(self, readonly=False):
        from vtstore.stores.datadir import DataDir

        return DataDir(
            self.tmp / "dd",
            hashclass=self.hashclass,
            readonly=readonly,
            frame_size=4096,
            data_file_size=64 * 1024,
            max_fds=3,
        )


@store_factory("file")
class FileStoreFactory(StoreFactory):
    def open(self, readonly=False):
        from vtstore.stores.filestore import FileStore

        return FileStore(self.tmp / "blocks.vtd", hashclass=self.hashclass, readonly=readonly)


@store_factory("proxy")
class ProxyFactory(StoreFactory):
    """Two datadirs saved to in parallel; reads from one, then the other."""

    def open(self, readonly=False):
        from vtstore.stores.datadir import DataDir
        from vtstore.stores.proxy import ProxyStore

        a = DataDir(self.tmp / "a", hashclass=self.hashclass, readonly=readonly)
        b = DataDir(self.tmp / "b", hashclass=self.hashclass, readonly=readonly)
        return ProxyStore(save=[a, b], read=[a], read2=[b], copy2=[a], readonly=readonly)


@store_factory("proxy-spec-save2")
class ProxySpecFactory(StoreFactory):
    """A proxy opened from a spec, with a background `save2` store."""

    def open(self, readonly=False):
        from vtstore.stores.spec import open_store_spec

        a, b = self.tmp / "a", self.tmp / "b"
        return open_store_spec(
            f"proxy(save={a},read={a},save2={b})", hashclass=self.hashclass, readonly=readonly
        )


@store_factory("memory-cache")
class MemoryCacheFactory(StoreFactory):
    def open(self, readonly=False):
        from vtstore.stores.cache import memory_cache
        from vtstore.stores.datadir import DataDir

        back = DataDir(self.tmp / "back", hashclass=self.hashclass, readonly=readonly)
        return memory_cache(back, max_bytes=256 * 1024)


@store_factory("file-cache")
class FileCacheFactory(StoreFactory):
    def open(self, readonly=False):
        from vtstore.stores.cache import file_cache
        from vtstore.stores.datadir import DataDir

        back = DataDir(self.tmp / "back", hashclass=self.hashclass, readonly=readonly)
        return file_cache(self.tmp / "cache", back, max_size=512 * 1024)


@store_factory("progress")
class ProgressFactory(StoreFactory):
    def open(self, readonly=False):
        from vtstore.stores.datadir import DataDir
        from vtstore.stores.progress import ProgressStore

        return ProgressStore(DataDir(self.tmp / "dd", hashclass=self.hashclass, readonly=readonly))


@store_factory("crypt-datadir")
class CryptDataDirFactory(StoreFactory):
    """A datadir encrypted at rest (`vtstore.stores.crypt`), its key file made
    on first use with a cheap scrypt (the suite opens it many times)."""

    def open(self, readonly=False):
        from vtstore.stores.crypt import open_crypt
        from vtstore.stores.crypt.keys import create_key_file
        from vtstore.stores.datadir import DataDir

        key = self.tmp / "crypt.key"
        if not key.exists():
            create_key_file(key, b"generic suite", log_n=10)
        back = DataDir(self.tmp / "dd", hashclass=self.hashclass, readonly=readonly, compress=False)
        return open_crypt(
            back,
            key_file=key,
            passphrase=b"generic suite",
            index=self.tmp / "crypt.idx",
            readonly=readonly,
        )


def pytest_generate_tests(metafunc):
    if "store_factory" in metafunc.fixturenames:
        params = [(k, hc) for k in STORE_FACTORIES for hc in HASHCLASSES]
        ids = [f"{k}-{hc.hashname}" for k, hc in params]
        metafunc.parametrize("store_factory", params, ids=ids, indirect=True)


@pytest.fixture
def store_factory(request, tmp_path):
    kind, hc = request.param
    f = STORE_FACTORIES[kind](tmp_path, hc)
    yield f
    f.close_all()


# -- leftovers ------------------------------------------------------------------


def open_fds() -> set[str]:
    """The targets of this process's open file descriptors."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


def native_threads() -> int:
    """Threads of this process that are not Python threads (an extension's own,
    like the datadir's appender)."""
    try:
        return len(os.listdir("/proc/self/task")) - threading.active_count()
    except OSError:
        return 0


class Leftovers:
    """Remembers threads and fds, then says which are new."""

    def __init__(self):
        self.threads = set(threading.enumerate())
        self.fds = open_fds()
        self.native = native_threads()

    def check(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            threads = [t for t in threading.enumerate() if t not in self.threads and t.is_alive()]
            fds = sorted(open_fds() - self.fds)
            fds = [f for f in fds if "/proc/" not in f]
            native = native_threads() - self.native
            if (not threads and not fds and native <= 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not threads, f"threads left running: {[t.name for t in threads]}"
        assert native <= 0, f"{native} native threads (not Python's) left running"
        assert not fds, f"file descriptors left open: {fds}"


@pytest.fixture
def leftovers():
    """A `Leftovers` taken at the start of the test; call `.check()` at the end."""
    return Leftovers()


@pytest.fixture
def vt_env(tmp_path):
    """An environment for `python -m vtstore.cli.main` subprocesses: this
    checkout on PYTHONPATH, HOME in tmp_path, no VT_* from the caller."""
    import vtstore

    src = str(Path(vtstore.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = str(tmp_path / "home")
    env.pop("XDG_CACHE_HOME", None)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env
