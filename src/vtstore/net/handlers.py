"""The request handlers of the block server, and the exports they act on.

Each handler takes an `Export` and a request payload and returns `(flags, payload
parts)`; it raises a `VTError` (or `Reply`, for a specific error code) to answer
with an error.  The connection machinery is in `vtstore.net.server`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading

from vtstore.blocks import decode_blockref
from vtstore.errors import FormatError, ReadOnlyError, VTError
from vtstore.net import protocol as P
from vtstore.net.indirect import missing_blocks
from vtstore.stores.base import Store

#: A GET answer stops adding blocks once it holds this many octets; the client
#: asks again for the rest.  Bounds the memory one request can make us hold.
GET_ANSWER_BYTES = 1024 * 1024
#: Most hashcodes one HASHCODES answer lists.
LIST_MAX = 16384
#: Most missing hashcodes one INDIRECT_COMPLETE answer lists.
MISSING_MAX = 64
#: An ARCHIVE_STATES answer stops adding states once it holds this many octets
#: of lines (it always holds one); within the budget the server's limits give
#: a request of its kind (`vtstore.net.limits.SMALL_NEED`).
STATES_ANSWER_BYTES = 48 * 1024

#: The right each request needs (docs/PROTOCOL.md §2a); HELLO and FLUSH need
#: none beyond an open channel (a FLUSH without the add right flushes nothing).
OP_RIGHTS = {
    P.OP_ADD: "add",
    P.OP_GET: "read",
    P.OP_CONTAINS: "read",
    P.OP_HASHCODES: "read",
    P.OP_HASH_OF_HASHCODES: "read",
    P.OP_LENGTH: "read",
    P.OP_ARCHIVE_LIST: "read",
    P.OP_ARCHIVE_LAST: "read",
    P.OP_ARCHIVE_STATES: "read",
    P.OP_INDIRECT_COMPLETE: "read",
    P.OP_ARCHIVE_UPDATE: "archive",
}
ALL_RIGHTS = frozenset(OP_RIGHTS.values())


class Export:
    """A store offered under a name, with the lock that serialises it if needed."""

    def __init__(self, name: str, store: Store, readonly: bool = False):
        self.name = name
        self.store = store
        self.readonly = readonly or store.readonly
        self.hashclass = store.hashclass
        self.lock = (
            contextlib.nullcontext() if getattr(store, "threadsafe", False) else threading.RLock()
        )
        #: what the peer on this channel may do, and who it is (for messages)
        self.rights = ALL_RIGHTS
        self.principal = "this peer"

    def for_peer(self, rights, principal: str) -> Export:
        """A view of this export for one authenticated peer: the same store and
        lock, limited to `rights` (a set of "read", "add", "archive")."""
        view = copy.copy(self)
        view.rights = frozenset(rights)
        view.principal = principal
        # without add (or archive) rights a FLUSH has nothing of this peer's to flush
        view.readonly = self.readonly or not (view.rights & {"add", "archive"})
        return view

    def check_right(self, op: int) -> None:
        """Refuse `op` with E_DENIED unless this peer's rights allow it."""
        need = OP_RIGHTS.get(op)
        if need is not None and need not in self.rights:
            raise Reply(
                P.E_DENIED,
                f"{self.principal} has no {need} right on export {self.name or '(default)'}",
                right=need,
            )

    def archives(self) -> dict:
        """The archives this export's store offers, by name (see docs/PROTOCOL.md,
        "Archives"): its `exports` entries that are `.vt` paths (opened as
        `vtstore.archive.Archive`) or objects with `last()` and `update()`."""
        try:
            exports = self.store.exports
        except (AttributeError, VTError):
            return {}
        out = {}
        for name, obj in exports.items():
            archive = _as_archive(obj)
            if archive is not None:
                out[name] = archive
        return out

    def archive_names(self) -> list[str]:
        """The names ARCHIVE_LIST answers: the store's `exports` that are
        archives, and the named archives it keeps (`vtstore.named_archives`:
        a proxy's, a clause's `archives_from` store's)."""
        from vtstore.named_archives import keeps_archives, list_archives

        names = set(self.archives())
        if keeps_archives(self.store):
            names.update(list_archives(self.store))
        return sorted(names)

    def archive(self, name: str, create: bool = False):
        """The archive `name`; with `create`, a new one if the store can hold it."""
        from vtstore.archive import ArchiveError
        from vtstore.named_archives import NoArchivesError, open_archive

        archive = self.archives().get(name)
        if archive is None:
            try:
                archive = open_archive(self.store, name, create=create)
            except NoArchivesError:
                pass
            except ArchiveError:
                if create:
                    raise
        if archive is None:
            raise Reply(P.E_NO_ARCHIVE, f"no archive {name!r}", name=name)
        return archive


def _as_archive(obj):
    if isinstance(obj, str | os.PathLike) and os.fspath(obj).endswith(".vt"):
        from vtstore.archive import Archive

        return Archive(os.fspath(obj))
    if callable(getattr(obj, "last", None)) and callable(getattr(obj, "update", None)):
        return obj
    return None


def _line_of(entry) -> str:
    """A state as an archive line without its newline."""
    if hasattr(entry, "to_line"):
        return entry.to_line().rstrip("\n")
    return str(entry)


def _archive_last_text(archive) -> str | None:
    """The newest state as an archive line (without its newline), or None."""
    entry = archive.last()
    return None if entry is None else _line_of(entry)


def _archive_state_texts(archive, start: int) -> tuple[list[str], int | None]:
    """The lines of the readable states from number `start` (0: the oldest),
    up to `STATES_ANSWER_BYTES`, and the number of the next one (None: no more).
    An archive object without `entries()` offers its latest state only."""
    entries = getattr(archive, "entries", None)
    if entries is None:
        last = archive.last()
        states = [] if last is None else [last]
    else:
        states = entries()
    out: list[str] = []
    size = 0
    for i, entry in enumerate(states):
        if i < start:
            continue
        if out and size >= STATES_ANSWER_BYTES:
            return out, i
        text = _line_of(entry)
        out.append(text)
        size += len(text.encode("utf-8")) + 1
    return out, None


def _archive_append(archive, text: str, store, if_newer: bool = False) -> bool:
    """Append a client's state line to an export's archive: only a state whose
    top blocks the export's store holds, onto an archive of that store, and
    recorded with that store's identity.  With `if_newer`, only if the
    archive's latest state is older (checked under the archive's lock).
    Return whether it was appended."""
    from vtstore.archive import (
        Archive,
        ArchiveStoreError,
        parse_line,
        state_store_problem,
        store_identity,
    )

    if isinstance(archive, Archive):
        if "\n" in text:
            raise FormatError("an archive state is one line")
        e = parse_line(text)
        why = state_store_problem(e, store)
        if why is not None:
            raise ArchiveStoreError(f"refused state for {archive.path}: {why}")
        archive.check_store(store)
        done = archive.update(
            e.dirent,
            when=e.when,
            uuid=e.uuid,
            name=e.name,
            comment=e.comment,
            store_id=e.store_id or store_identity(store),
            if_newer=if_newer,
        )
        return done is not None
    if hasattr(archive, "update_if_newer"):  # a relayed server's archive
        e = parse_line(text)
        done = archive.update(e.dirent, e.when, e.uuid, e.name, e.comment, if_newer=if_newer)
        return done is not None
    archive.update(text)
    return True


class Reply(Exception):
    """Raised by a handler to answer with an error code."""

    def __init__(self, code: int, message: str, **detail):
        super().__init__(message)
        self.code = code
        self.detail = detail


# -- request handlers: (connection, export, payload) -> (flags, payload parts) ----------


def _h_add(export: Export, payload):
    if export.readonly:
        raise ReadOnlyError(f"export {export.name or '(default)'} is read-only")
    datas = P.decode_blocks(payload)
    with export.lock:
        hashcodes = export.store.add_many(datas)
    return 0, [P.encode_hashcodes(hashcodes)]


def _h_get(export: Export, payload):
    hashcodes = P.decode_hashcodes(payload, export.hashclass)
    items = []
    size = 0
    with export.lock:
        for h in hashcodes:
            data = export.store.get(h)
            items.append(data)
            if data is not None:
                size += len(data)
                if size >= GET_ANSWER_BYTES:
                    break
    return 0, P.encode_get_answer_parts(items)


def _h_contains(export: Export, payload):
    hashcodes = P.decode_hashcodes(payload, export.hashclass)
    with export.lock:
        present = export.store.contains_many(hashcodes)
    return 0, [P.encode_bitmap(present)]


def _h_hashcodes(export: Export, payload):
    start, after, length = P.decode_window(payload, export.hashclass)
    n = LIST_MAX if length is None else min(length, LIST_MAX)
    with export.lock:
        hashcodes = list(export.store.hashcodes(start=start, after=after, length=n + 1))
    end = len(hashcodes) <= n
    return 0, [P.encode_listing(hashcodes[:n], end)]


def _h_hash_of_hashcodes(export: Export, payload):
    start, after, length = P.decode_window(payload, export.hashclass)
    with export.lock:
        h, last = export.store.hash_of_hashcodes(start=start, after=after, length=length)
    return 0, [P.encode_hoh(h, last)]


def _h_length(export: Export, payload):
    if len(payload):
        raise FormatError("LENGTH takes no payload")
    with export.lock:
        n = len(export.store)
    return 0, [P.encode_count(n)]


def _archive_name(obj: dict) -> str:
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError("an archive request needs a non-empty string 'name'")
    return name


def _h_archive_list(export: Export, payload):
    if len(payload):
        raise FormatError("ARCHIVE_LIST takes no payload")
    with export.lock:
        names = export.archive_names()
    return P.F_JSON, [P.encode_json({"archives": names})]


def _h_archive_last(export: Export, payload):
    name = _archive_name(P.decode_json(payload))
    with export.lock:
        last = _archive_last_text(export.archive(name))
    return P.F_JSON, [P.encode_json({"name": name, "last": last})]


def _h_archive_states(export: Export, payload):
    obj = P.decode_json(payload)
    name = _archive_name(obj)
    start = obj.get("start", 0)
    if type(start) is not int or start < 0:
        raise FormatError("ARCHIVE_STATES's 'start' is a state number >= 0")
    with export.lock:
        states, after = _archive_state_texts(export.archive(name), start)
    return P.F_JSON, [P.encode_json({"name": name, "states": states, "next": after})]


def _h_archive_update(export: Export, payload):
    if export.readonly:
        raise ReadOnlyError(f"export {export.name or '(default)'} is read-only")
    obj = P.decode_json(payload)
    name = _archive_name(obj)
    text = obj.get("text")
    if not isinstance(text, str):
        raise FormatError("ARCHIVE_UPDATE needs a string 'text'")
    if_newer = obj.get("if_newer", False)
    if not isinstance(if_newer, bool):
        raise FormatError("ARCHIVE_UPDATE's 'if_newer' is true or false")
    with export.lock:
        done = _archive_append(export.archive(name, create=True), text, export.store, if_newer)
    return P.F_JSON, [P.encode_json({"name": name, "appended": done})]


def _h_indirect_complete(export: Export, payload):
    block = decode_blockref(payload)
    with export.lock:
        checked, missing = missing_blocks(export.store, block, MISSING_MAX)
    return 0, [P.encode_completeness(not missing, checked, missing)]


_HANDLERS = {
    P.OP_ADD: _h_add,
    P.OP_GET: _h_get,
    P.OP_CONTAINS: _h_contains,
    P.OP_HASHCODES: _h_hashcodes,
    P.OP_HASH_OF_HASHCODES: _h_hash_of_hashcodes,
    P.OP_LENGTH: _h_length,
    P.OP_ARCHIVE_LIST: _h_archive_list,
    P.OP_ARCHIVE_LAST: _h_archive_last,
    P.OP_ARCHIVE_UPDATE: _h_archive_update,
    P.OP_ARCHIVE_STATES: _h_archive_states,
    P.OP_INDIRECT_COMPLETE: _h_indirect_complete,
}


def _guarded(op: int, handler):
    def run(export: Export, payload):
        export.check_right(op)  # before the payload is even decoded
        return handler(export, payload)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


#: op -> handler; each checks the peer's right for its op first.
HANDLERS = {op: _guarded(op, h) for op, h in _HANDLERS.items()}


def error_payload(exc: BaseException) -> bytes:
    if isinstance(exc, Reply):
        return P.encode_error(exc.code, str(exc), **exc.detail)
    detail = {}
    hashcode = getattr(exc, "hashcode", None)
    if hashcode is not None:
        detail["hashcode"] = str(hashcode)
    return P.encode_error(P.error_code_of(exc), str(exc), **detail)
