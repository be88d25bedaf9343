"""Named archives on any store: list them, open one by name.

`[clause]NAME` names the archive NAME a store keeps.  Which object that is
depends on the store, and this module is the one place that knows:

- a datadir keeps `NAME.vt` beside its data (`vtstore.archive.Archive`); an
  encrypting store over a datadir keeps the same files with encrypted lines;
- a block server client (`tcp:`, `unix:`, `|command`) offers the server's
  archives over the protocol (`vtstore.net.client.RemoteArchive`): the same
  reading and appending surface, one request per call;
- a proxy reads archives from its `read` stores (the first having the name
  wins, as in `ProxyStore.exports`) and creates a new one in its first `save`
  store that keeps archives;
- the cache and progress wrappers pass lookups to the store they wrap;
- a clause with `archives_from = GLOB:SPEC` sends the lookups of the names
  matching GLOB to the store SPEC (`ArchiveSource`), the others stay.

Any other store type can take part by offering `archive_names()` and
`named_archive(name, create)` (returning an object with `entries()`, `last()`,
`at(when)`, `update(...)`, `exists()` and a `path` to show).

Every archive object returned has that surface: `entries()` (oldest first),
`last()`, `at(when)`, `update(dirent, when, uuid, name, comment, store_id=,
if_newer=)`, `exists()` and `path` (a file path, or `SERVER:NAME` for a remote
one, for messages).
"""

from __future__ import annotations

import fnmatch
import os

from vtstore.archive import ArchiveError, archive_in

#: How many wrappers (cache, progress, archives_from hops) a lookup follows:
#: far more than any real setup, few enough to stop a loop.
MAX_HOPS = 16


class NoArchivesError(ArchiveError):
    """A store that keeps no named archives was asked for one."""


class ArchiveSource:
    """Where a clause's archive lookups go (`archives_from = GLOB:SPEC`): the
    names matching `pattern` live in the store `spec` names, opened on first use
    (with `opener(spec)`) and closed with the store that carries this source."""

    def __init__(self, pattern: str, spec: str, opener):
        self.pattern = pattern
        self.spec = spec
        self._opener = opener
        self._store = None

    def __repr__(self) -> str:
        return f"ArchiveSource({self.pattern!r}, {self.spec!r})"

    def matches(self, name: str) -> bool:
        """Whether archive `name` lives in the other store."""
        return fnmatch.fnmatchcase(name, self.pattern)

    @property
    def store(self):
        """The other store, opened now if it is not yet."""
        if self._store is None:
            self._store = self._opener(self.spec)
        return self._store

    def close(self) -> None:
        """Close the other store if it was opened."""
        s, self._store = self._store, None
        if s is not None:
            s.close()


def parse_archives_from(text: str) -> tuple[str, str]:
    """`GLOB:SPEC` -> `(GLOB, SPEC)`; the glob holds no colon (`*:unix:/x.sock`,
    `home-*:[server]`).  Raise ValueError on anything else."""
    pattern, sep, spec = str(text).strip().partition(":")
    if not sep or not pattern.strip() or not spec.strip():
        raise ValueError(f"archives_from is GLOB:STORESPEC (say *:unix:/run/vt.sock), not {text!r}")
    return pattern.strip(), spec.strip()


def attach_archive_source(store, source: ArchiveSource) -> None:
    """Make `store`'s archive lookups of names matching `source` go to its
    store; that store is closed when `store` is."""
    store.archive_source = source
    close_own = store._close

    def _close() -> None:
        try:
            close_own()
        finally:
            source.close()

    store._close = _close


def _unwrap(store):
    """The store a cache or progress wrapper stands for (None for others)."""
    if hasattr(store, "archive_path") or hasattr(store, "archive_names"):
        return None
    from vtstore.stores.cache import CacheStore
    from vtstore.stores.progress import ProgressStore

    if isinstance(store, CacheStore):
        return store.backend
    if isinstance(store, ProgressStore):
        return store.inner
    return None


def _keeper(store, name: str | None):
    """Follow wrappers and `archives_from` to the store that keeps archive
    `name` (every archive, for None: the caller lists and merges)."""
    for _ in range(MAX_HOPS):
        src = getattr(store, "archive_source", None)
        if src is not None and name is not None and src.matches(name):
            store = src.store
            continue
        inner = _unwrap(store)
        if inner is None:
            return store
        store = inner
    raise NoArchivesError(f"store {store.name}: archive lookups go round in circles")


def keeps_archives(store) -> bool:
    """Whether `store` (or what it wraps or sends lookups to) keeps named archives."""
    from vtstore.stores.proxy import ProxyStore

    k = _keeper(store, None)
    if getattr(k, "archive_source", None) is not None:
        return True
    if isinstance(k, ProxyStore):
        return any(keeps_archives(s) for s in k.read + k.save)
    return hasattr(k, "archive_path") or hasattr(k, "archive_names")


def list_archives(store, _hops: int = 0) -> list[str]:
    """The names of the archives `store` keeps, sorted (empty for a store that
    keeps none)."""
    from vtstore.stores.proxy import ProxyStore

    if _hops > MAX_HOPS:
        raise NoArchivesError(f"store {store.name}: archive lookups go round in circles")
    k = _keeper(store, None)
    names: set[str] = set()
    if isinstance(k, ProxyStore):
        for s in k.read:
            names.update(list_archives(s, _hops + 1))
    elif hasattr(k, "archive_names"):
        names.update(k.archive_names())
    elif hasattr(k, "archive_path"):
        # `.vt` files only: an encrypting store over a block server lists the
        # server's archives as its exports, which it cannot keep encrypted
        names.update(n for n, v in k.exports.items() if isinstance(v, str | os.PathLike))
    src = getattr(k, "archive_source", None)
    if src is not None:
        # a name matching the glob is looked up in the other store only
        names = {n for n in names if not src.matches(n)}
        names.update(n for n in list_archives(src.store, _hops + 1) if src.matches(n))
    return sorted(names)


def open_archive(store, name: str, create: bool = False, _hops: int = 0):
    """The archive `name` kept by `store` (see the module docstring for which
    object that is).  Without `create`, a name the store does not have raises
    `ArchiveError` ("no such archive"); with it, the archive object is returned
    for the first `update` to create.  A store keeping no archives raises
    `NoArchivesError`."""
    from vtstore.stores.proxy import ProxyStore

    if _hops > MAX_HOPS:
        raise NoArchivesError(f"store {store.name}: archive lookups go round in circles")
    k = _keeper(store, name)
    if isinstance(k, ProxyStore):
        return _open_in_proxy(k, name, create, _hops)
    if hasattr(k, "named_archive"):
        archive = k.named_archive(name, create)
    elif hasattr(k, "archive_path"):
        archive = archive_in(str(k.archive_path(name)), k)
    else:
        raise NoArchivesError(f"store {k.name} keeps no named archives")
    if not create and not archive.exists():
        raise ArchiveError(f"{archive.path}: no such archive")
    return archive


def _open_in_proxy(proxy, name: str, create: bool, hops: int):
    for s in proxy.read:
        if keeps_archives(s) and name in list_archives(s, hops + 1):
            return open_archive(s, name, create, hops + 1)
    if create:
        for s in proxy.save:
            if keeps_archives(s):
                return open_archive(s, name, True, hops + 1)
    if not keeps_archives(proxy):
        raise NoArchivesError(f"store {proxy.name} keeps no named archives")
    raise ArchiveError(f"{proxy.name}: no archive {name!r}")
