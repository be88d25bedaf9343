"""Archives kept as objects: one object per state.

Archive NAME of a store on a backend is the objects `archives/NAME/<key>`, each
holding one archive line (`vtstore.archive.ArchiveEntry.to_line`), where `<key>`
is the state's time (20 digits of microseconds since the epoch) and 16 hex
digits of the line's SHA-256.  Appending is creating a new object (conditional
create, never an overwrite), so any number of writers on any machines append
at once without losing a state: a read lists the prefix and sorts by time.
There is no read-modify-write, which an object store cannot make atomic.

`if_newer` (append only if the latest state is older) is checked by listing
just before the create: two writers racing within that moment may both append,
and both states are kept, in time order.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid as uuidmod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from vtstore.archive import Archive, ArchiveEntry, ArchiveError, parse_line
from vtstore.errors import FormatError, ReadOnlyError
from vtstore.stores.backends.base import Backend

log = logging.getLogger(__name__)

_ARCHIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,-]{0,199}")
PREFIX = "archives/"


def check_archive_name(name: str) -> str:
    """`name` if it can name an archive kept as objects, else `ArchiveError`."""
    if not isinstance(name, str) or not _ARCHIVE_NAME.fullmatch(name):
        raise ArchiveError(f"bad archive name {name!r:.80}: say letters, digits, . _ - + = @ ,")
    return name


def archive_names(backend: Backend) -> list[str]:
    """The names of the archives kept on `backend`, sorted."""
    names = set()
    for o in backend.list(PREFIX):
        parts = o.name[len(PREFIX) :].split("/")
        if len(parts) == 2 and _ARCHIVE_NAME.fullmatch(parts[0]):
            names.add(parts[0])
    return sorted(names)


class ObjectArchive(Archive):
    """One archive kept as objects, with the surface of `vtstore.archive.Archive`
    that `vtstore.named_archives` documents: `entries`, `update` and `exists`
    here; `last`, `at`, `select` and `check_store` are `Archive`'s, over
    `entries`.  `codec` encodes lines (an encrypting store's)."""

    def __init__(self, backend: Backend, name: str, codec=None, readonly: bool = False):
        self.backend = backend
        self.name = check_archive_name(name)
        self.codec = codec
        #: the store was opened to read: `update` refuses
        self.readonly = readonly
        self.prefix = f"{PREFIX}{name}/"
        self.path = f"{backend.url}/{self.prefix[:-1]}"

    def __repr__(self) -> str:
        return f"ObjectArchive({self.path!r})"

    def exists(self) -> bool:
        """Whether the archive has at least one state."""
        return next(iter(self.backend.list(self.prefix)), None) is not None

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every readable state, oldest first; an object that does not parse is
        skipped with a warning naming it."""
        names = [o.name for o in self.backend.list(self.prefix)]
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as ex:
            bodies = list(ex.map(self.backend.get, names))
        out = []
        for name, body in zip(names, bodies, strict=True):
            if body is None:
                continue  # deleted since the listing
            try:
                if self.codec is not None:
                    body = self.codec.decode(body.rstrip(b"\n"))
                out.append(parse_line(body.decode("utf-8"), f"{self.backend.url}/{name}: "))
            except (FormatError, UnicodeDecodeError, ValueError) as e:
                log.warning("%s/%s: skipping a damaged state: %s", self.backend.url, name, e)
        out.sort(key=lambda e: e.when)
        return iter(out)

    def update(
        self,
        dirent,
        when: float | None = None,
        uuid: uuidmod.UUID | None = None,
        name: str | None = None,
        comment: str | None = None,
        store_id: str | None = None,
        if_newer: bool = False,
    ) -> ArchiveEntry | None:
        """Append a state as a new object; return it (None if `if_newer` and
        the latest state is not older)."""
        if self.readonly:
            raise ReadOnlyError(f"{self.path}: the store is open read-only")
        entry = ArchiveEntry(
            time.time() if when is None else when, dirent, uuid, name, comment, store_id
        )
        if if_newer:
            last = self.last()
            if last is not None and last.when >= entry.when:
                return None
        line = entry.to_line().encode("utf-8")
        body = line if self.codec is None else self.codec.encode(line[:-1]) + b"\n"
        key = f"{round(entry.when * 1e6):020d}-{hashlib.sha256(line).hexdigest()[:16]}"
        self.backend.put_if_absent(self.prefix + key, body)  # the same state twice: one
        return entry
