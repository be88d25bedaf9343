"""Archives: `.vt` files logging the successive states of a tree.

An archive is an append-only UTF-8 text file, one state per line, newest last.
A line is an NDJSON object::

    {"when": 1764581400.123456, "dirent": "D{...}", "uuid": "...", "name": "...",
     "comment": "...", "store": "0123...cdef"}

`when` (UNIX seconds) and `dirent` (the top dirent's transcription) are required;
the rest are optional and readers ignore keys they do not know.  `store` is the
identity of the store the state's blocks were written to (a datadir's uuid), so
that a state is not appended on top of a state whose blocks live elsewhere (see
`Archive.check_store`).  The older form `ISO-TIME UNIXTIME DIRENT-TEXT` is read too.

Appends take an exclusive `flock` and write one whole line with one `write`, so
concurrent writers never interleave.  A last line without its newline is a torn
write (crash residue, or a file cut short): readers ignore it with a warning and
the next append cuts it off.  Any other bad line is skipped with a warning
naming the file and line (`X.vt line N: ...`), so one damaged line never makes
the other states unreadable; `Archive.scan` lists them for `vt fsck X.vt`, and
`Archive.repair` sets them aside in `X.vt.damaged`.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import os
import re
import time
import uuid as uuidmod
from collections.abc import Iterator
from dataclasses import dataclass, field

from vtstore.errors import FormatError, VTError
from vtstore.fileio import write_durably
from vtstore.tree.dirent import Dirent, parse_dirent

log = logging.getLogger(__name__)

#: the UNIX times an ISO 8601 date can show (years 1 to 9999); others are damage
MIN_WHEN = -62135596800
MAX_WHEN = 253402300799

_LEGACY_TIME = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,12})?")


class ArchiveError(VTError):
    """An archive file that cannot be read or written."""


class ArchiveStoreError(ArchiveError):
    """Appending to an archive whose latest state lives in another store."""


class StateNotFoundError(ArchiveError):
    """A state selector (`@ID`, `@-N`, `@DATE`) that names no state of an archive."""


class AmbiguousStateError(ArchiveError):
    """A state ID prefix shared by several states of an archive."""


#: hex digits of a short state ID, and the fewest a prefix may have
SHORT_ID_LEN = 8
MIN_ID_PREFIX = 4


def state_id(when: float, dirent: Dirent, comment: str | None) -> str:
    """The full ID of a state: 64 hex digits of BLAKE2b-256 over
    `MICROSECONDS "\n" BINARY-DIRENT "\n" COMMENT` (see docs/FORMATS.md §9.1).
    The time is in it, so two states of one tree made at different times
    differ; the store and uuid are not, so a state keeps its ID when it is
    pushed to another store.  The binary dirent, not its transcription: it is
    as canonical and four times cheaper to make (a log lists every state)."""
    import hashlib  # here: OpenSSL's hashlib costs ~2 ms of a start that lists no state

    h = hashlib.blake2b(digest_size=32)
    h.update(b"%d\n" % round(when * 1_000_000))
    h.update(dirent.encode())
    h.update(b"\n" + (comment or "").encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(frozen=True)
class ArchiveEntry:
    """One state of an archive."""

    when: float
    dirent: Dirent
    uuid: uuidmod.UUID | None = None
    name: str | None = None
    comment: str | None = None
    #: the identity of the store holding the state's blocks (see `store_identity`)
    store_id: str | None = None

    @functools.cached_property
    def id(self) -> str:
        """The state's full ID (`state_id`): 64 hex digits."""
        return state_id(self.when, self.dirent, self.comment)

    @property
    def short_id(self) -> str:
        """The first `SHORT_ID_LEN` hex digits of `id`, as listings show it."""
        return self.id[:SHORT_ID_LEN]

    @property
    def isotime(self) -> str:
        """`when` as an ISO 8601 UTC timestamp with microseconds."""
        import datetime

        return (
            datetime.datetime.fromtimestamp(self.when, datetime.UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )

    def to_line(self) -> str:
        """The state as one NDJSON line, with its newline."""
        d: dict = {"when": self.when, "dirent": str(self.dirent)}
        if self.uuid is not None:
            d["uuid"] = str(self.uuid)
        if self.name is not None:
            d["name"] = self.name
        if self.comment is not None:
            d["comment"] = self.comment
        if self.store_id is not None:
            d["store"] = self.store_id
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n"


def _check_when(when, where: str) -> float:
    # bool is an int to Python; inf, nan and times no calendar shows are damage,
    # and an int too big for a float must not become an OverflowError
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise FormatError(f"{where}'when' must be a number")
    if isinstance(when, float) and not math.isfinite(when):
        raise FormatError(f"{where}'when' must be a finite number")
    if not MIN_WHEN <= when <= MAX_WHEN:
        raise FormatError(f"{where}'when' is out of range (years 1 to 9999)")
    return float(when)


def _parse_dirent_text(text: str, where: str) -> Dirent:
    try:
        return parse_dirent(text)
    except FormatError as e:
        raise FormatError(f"{where}{e}") from None
    except (ValueError, RecursionError, OverflowError) as e:
        # a decoder that lets a huge number or deep nesting through as a bare
        # ValueError: still bad input, not a crash
        raise FormatError(f"{where}bad dirent: {type(e).__name__}: {str(e)[:80]}") from None


def parse_line(line: str, where: str = "") -> ArchiveEntry:
    """Parse one archive line (NDJSON or legacy); raise `FormatError` prefixed
    with `where` for anything else."""
    line = line.strip()
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"{where}bad JSON: {e.msg} at column {e.colno}") from None
        except ValueError as e:  # a number too long for int()
            raise FormatError(f"{where}bad JSON: {str(e)[:80]}") from None
        except RecursionError:
            raise FormatError(f"{where}bad JSON: nested too deeply") from None
        if not isinstance(d, dict) or "when" not in d or "dirent" not in d:
            raise FormatError(f"{where}state line needs 'when' and 'dirent'")
        when = _check_when(d["when"], where)
        text = d["dirent"]
        if not isinstance(text, str):
            raise FormatError(f"{where}'dirent' must be a transcription string")
        _check_utf8(text, "dirent", where)
        u = d.get("uuid")
        try:
            u = uuidmod.UUID(u) if u is not None else None
        except (ValueError, TypeError, AttributeError):
            raise FormatError(f"{where}bad uuid {str(u)[:60]!r}") from None
        dirent = _parse_dirent_text(text, where)
        return ArchiveEntry(
            when,
            dirent,
            u,
            _opt_str(d, "name", where),
            _opt_str(d, "comment", where),
            _opt_str(d, "store", where),
        )
    parts = line.split(None, 2)
    if len(parts) != 3:
        raise FormatError(f"{where}neither an NDJSON state nor 'ISO-TIME UNIXTIME DIRENT'")
    # float() alone would take 'inf', 'nan', '1_0' and 5,000-digit runs
    if not _LEGACY_TIME.fullmatch(parts[1]):
        raise FormatError(f"{where}bad UNIX time {parts[1][:40]!r}")
    when = _check_when(float(parts[1]), where)
    return ArchiveEntry(when, _parse_dirent_text(parts[2], where))


def _check_utf8(s: str, k: str, where: str) -> None:
    # JSON can carry lone surrogates ("\ud800"): such a string cannot be written
    # back or printed, so the line is damaged
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{where}{k!r} is not valid Unicode") from None


def _opt_str(d: dict, k: str, where: str) -> str | None:
    v = d.get(k)
    if v is None:
        return None
    if not isinstance(v, str):
        raise FormatError(f"{where}{k!r} must be a string")
    _check_utf8(v, k, where)
    return v


# -- store identity ----------------------------------------------------------------


def store_identity(store) -> str | None:
    """The identity an archive line records for `store`: a datadir's uuid (also
    through the cache and progress wrappers), else None (memory, network and
    proxy stores have none; for them only the top-block check applies)."""
    seen = 0
    while store is not None and seen < 8:
        meta = getattr(store, "meta", None)
        if isinstance(meta, dict) and isinstance(meta.get("uuid"), str):
            return meta["uuid"]
        store = getattr(store, "backend", None) or getattr(store, "inner", None)
        seen += 1
    return None


def _top_hashcodes(dirent: Dirent, limit: int = 8) -> list:
    """Hashcodes near the top of a state, found without reading the store: the
    top block's, or for a literal directory, those of its first entries."""
    from vtstore.blocks import LiteralBlock, SubBlock

    out: list = []
    todo = [dirent]
    while todo and len(out) < limit:
        d = todo.pop(0)
        b = d.block
        while isinstance(b, SubBlock):
            b = b.superblock
        if b is None:
            continue
        h = getattr(b, "hashcode", None)
        if h is not None:
            out.append(h)
        elif isinstance(b, LiteralBlock) and d.is_dir:
            from vtstore.tree.dir import decode_dir_data

            try:
                todo.extend(decode_dir_data(b.data(None))[0])
            except (FormatError, TypeError, AttributeError):
                pass
    return out


def state_store_problem(entry: ArchiveEntry, store) -> str | None:
    """Why `entry` does not belong to `store` (None when it does): it names
    another store, or its top blocks are not in `store`."""
    ident = store_identity(store)
    if entry.store_id is not None and entry.store_id != ident:
        this = f"store {ident} ({store.name})" if ident else store.name
        return f"its latest state was written to store {entry.store_id}, not to {this}"
    hcs = _top_hashcodes(entry.dirent)
    if hcs:
        try:
            present = store.contains_many(hcs)
        except (VTError, TypeError):
            present = [False]
        if not all(present):
            return f"the blocks of its latest state are not in {store.name}"
    return None


# -- selecting a state -------------------------------------------------------------

_INDEX = re.compile(r"[+-][0-9]{1,9}|[0-9]{1,3}")
_ID_PREFIX = re.compile(rf"[0-9a-fA-F]{{{MIN_ID_PREFIX},64}}")
_DATE = re.compile(
    r"(?P<d>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<hm>[0-9]{2}:[0-9]{2})(?::(?P<s>[0-9]{2})(?P<f>\.[0-9]{1,6})?)?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?"
)

#: what `select_state` takes, for error messages and --help
SELECTOR_HELP = (
    "@latest, @-N (-1 the latest, -2 the one before), @N (0 the oldest), @ID"
    " (a state ID prefix of 4+ hex digits), @DATE (YYYY-MM-DD[THH:MM[:SS]][Z]:"
    " the last state made then or before, local time unless Z)"
)


def time_limit(text: str) -> float | None:
    """The end of the time a date selector names (UNIX seconds, exclusive), or
    None if `text` is no date.  A date names its whole day, `THH:MM` its whole
    minute, `THH:MM:SS` its second: `@2026-12-01` takes the states made during
    that day too.  Local time unless it ends with `Z` or an offset."""
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    import datetime

    iso = m["d"] + "T" + (m["hm"] or "00:00") + ":" + (m["s"] or "00") + (m["f"] or "")
    tz = m["tz"]
    try:  # a day, hour or offset out of range
        dt = datetime.datetime.fromisoformat(iso + (tz if tz and tz != "Z" else ""))
    except ValueError:
        raise StateNotFoundError(f"@{text}: not a date and time") from None
    if tz == "Z":
        dt = dt.replace(tzinfo=datetime.UTC)
    if m["f"]:
        step = datetime.timedelta(microseconds=1)
    elif m["s"]:
        step = datetime.timedelta(seconds=1)
    elif m["hm"]:
        step = datetime.timedelta(minutes=1)
    else:
        step = datetime.timedelta(days=1)
    try:
        return (dt + step).timestamp()  # naive: local time, as mktime would take it
    except (OverflowError, OSError, ValueError):  # the end of 9999-12-31: after every state
        return float(MAX_WHEN) + 1


def select_state(entries: list[ArchiveEntry], selector: str, where: str = "") -> ArchiveEntry:
    """The state of `entries` (oldest first) that `selector` names (see
    `SELECTOR_HELP`).  Raise `StateNotFoundError` when it names none,
    `AmbiguousStateError` (listing the candidates) when an ID prefix fits several."""
    sel = selector.strip()
    label = f"{where}@{sel}"
    if not entries:
        raise StateNotFoundError(f"{label}: the archive has no states")
    if sel in ("", "latest"):
        return entries[-1]
    if sel == "oldest":
        return entries[0]
    if _INDEX.fullmatch(sel):
        i = int(sel)
        if not -len(entries) <= i < len(entries):
            raise StateNotFoundError(
                f"{label}: the archive has {len(entries)} state"
                f"{'' if len(entries) == 1 else 's'} (@0 to @{len(entries) - 1}, @-1 to"
                f" @-{len(entries)})"
            )
        return entries[i]
    if _ID_PREFIX.fullmatch(sel):
        low = sel.lower()
        found = [e for e in entries if e.id.startswith(low)]
        ids = {e.id for e in found}
        if len(ids) == 1:
            return found[-1]
        if ids:
            shown = ", ".join(
                f"{e.id[: max(len(low) + 2, SHORT_ID_LEN)]} ({e.isotime})" for e in found[:10]
            )
            more = f" and {len(found) - 10} more" if len(found) > 10 else ""
            raise AmbiguousStateError(
                f"{label}: the ID prefix fits {len(found)} states: {shown}{more}; give more digits"
            )
        if time_limit(sel) is None:
            raise StateNotFoundError(f"{label}: no state has an ID beginning with {low}")
    limit = time_limit(sel)
    if limit is None:
        raise StateNotFoundError(f"{label}: not a state selector; use {SELECTOR_HELP}")
    best = None
    for e in entries:
        if e.when < limit and (best is None or e.when >= best.when):
            best = e
    if best is None:
        raise StateNotFoundError(
            f"{label}: no state was made then or before (the oldest is {entries[0].isotime})"
        )
    return best


WARN_DAMAGED_LINES = 3  # damaged lines named one by one when reading


# -- encoded (encrypted) lines -----------------------------------------------------

#: how an encoded line begins; no NDJSON or legacy line can
ENCODED_LINE_PREFIX = b"!"
_LINE_CODECS: dict[str, object] = {}


def register_line_codec(path, codec) -> None:
    """Make `Archive(path)` encode its lines with `codec` (None: forget it).

    A codec has `encode(line: bytes) -> bytes`, giving a line that begins with
    `ENCODED_LINE_PREFIX` and holds no newline, and `decode(raw: bytes) ->
    bytes`, raising `FormatError` on a line it cannot decode.  An encrypting
    store (`vtstore.stores.crypt`) registers the paths of its archives here
    while it is open, so every command that opens them by path encrypts."""
    key = os.path.abspath(os.fspath(path))
    if codec is None:
        _LINE_CODECS.pop(key, None)
    else:
        _LINE_CODECS[key] = codec


def line_codec_for(path):
    """The codec registered for the archive at `path`, or None."""
    return _LINE_CODECS.get(os.path.abspath(os.fspath(path)))


def archive_in(path, store) -> Archive:
    """`Archive(path)` read and written the way `store` keeps archives: through
    an encrypting store (one with `archive_codec()`), its lines are encrypted,
    whether the archive is one of the store's own or a file path like `DIR.vt`."""
    codec_of = getattr(store, "archive_codec", None)
    return Archive(os.fspath(path), codec_of() if codec_of is not None else None)


# -- reading -------------------------------------------------------------------------


@dataclass
class DamagedLine:
    """A line of an archive that does not parse (or the torn tail, `lineno` of
    the would-be line and `torn` set)."""

    lineno: int
    reason: str
    raw: bytes
    torn: bool = False


@dataclass
class ArchiveScan:
    """Everything `Archive.scan` saw: the states with their line numbers, the
    damaged lines, and how many lines there were."""

    path: str
    states: list[tuple[int, ArchiveEntry]] = field(default_factory=list)
    damaged: list[DamagedLine] = field(default_factory=list)
    lines: int = 0

    @property
    def torn(self) -> DamagedLine | None:
        """The incomplete last line, if any."""
        return next((d for d in self.damaged if d.torn), None)

    def problems(self) -> list[str]:
        """One line per damaged line, for `vt fsck`."""
        out = []
        for d in self.damaged:
            if d.torn:
                out.append(
                    f"{self.path} line {d.lineno}: incomplete last line ({len(d.raw)} octets,"
                    " no newline): a torn append or a file cut short"
                )
            else:
                out.append(f"{self.path} line {d.lineno}: {d.reason}")
        return out


def _split(
    path: str, data: bytes, codec=None
) -> Iterator[tuple[int, bytes, ArchiveEntry | None, str]]:
    """(line number, raw line, entry or None, reason) for each line that is not
    blank or a comment; the torn tail is not included.  Encoded lines (see
    `register_line_codec`) are decoded by `codec` first."""
    lines = data.split(b"\n")
    lines.pop()
    for n, raw in enumerate(lines, 1):
        if not raw.strip() or raw.lstrip().startswith(b"#"):
            continue
        plain = raw
        if raw.startswith(ENCODED_LINE_PREFIX):
            if codec is None:
                yield n, raw, None, "an encrypted line: read the archive through its crypt store"
                continue
            try:
                plain = codec.decode(raw)
            except FormatError as e:
                yield n, raw, None, str(e)
                continue
        try:
            text = plain.decode("utf-8")
        except UnicodeDecodeError:
            yield n, raw, None, "not UTF-8"
            continue
        try:
            yield n, raw, parse_line(text, ""), ""
        except FormatError as e:
            yield n, raw, None, str(e)


def _torn_tail(data: bytes) -> tuple[int, bytes] | None:
    i = data.rfind(b"\n")
    tail = data[i + 1 :]
    if not tail:
        return None
    return data.count(b"\n") + 1, tail


class Archive:
    """A `.vt` file: read its states, append new ones."""

    def __init__(self, path: str, codec=None):
        self.path = os.fspath(path)
        #: encodes and decodes lines (an encrypting store's archives); by
        #: default the codec registered for this path, if any
        self.codec = codec if codec is not None else line_codec_for(self.path)

    def __repr__(self) -> str:
        return f"Archive({self.path!r})"

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def _read(self) -> bytes | None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ArchiveError(f"{self.path}: {e.strerror}") from None
        with f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                return f.read()
            except OSError as e:  # a directory, an I/O error
                raise ArchiveError(f"{self.path}: {e.strerror}") from None

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every readable state, oldest first.  A damaged line is skipped with
        a warning naming it; a torn last line is ignored with a warning."""
        data = self._read()
        if data is None:
            return
        torn = _torn_tail(data)
        if torn and torn[1].strip():
            log.warning(
                "%s line %d: ignoring an incomplete last line (torn write)", self.path, torn[0]
            )
        damaged = []
        for n, _raw, entry, reason in _split(self.path, data, self.codec):
            if entry is None:
                # the first few named; the rest counted once the reading ends
                if len(damaged) < WARN_DAMAGED_LINES:
                    log.warning("%s line %d: skipping a damaged state: %s", self.path, n, reason)
                damaged.append(n)
                continue
            yield entry
        if len(damaged) > WARN_DAMAGED_LINES:
            log.warning(
                "%s: %d more damaged lines skipped (lines %d-%d); vt fsck %s lists them",
                self.path,
                len(damaged) - WARN_DAMAGED_LINES,
                damaged[WARN_DAMAGED_LINES],
                damaged[-1],
                self.path,
            )

    def scan(self) -> ArchiveScan:
        """Read every line: the states and the damaged lines (for `vt fsck`)."""
        data = self._read()
        res = ArchiveScan(self.path)
        if data is None:
            raise ArchiveError(f"{self.path}: no such archive")
        res.lines = data.count(b"\n")
        for n, raw, entry, reason in _split(self.path, data, self.codec):
            if entry is None:
                res.damaged.append(DamagedLine(n, reason, raw))
            else:
                res.states.append((n, entry))
        torn = _torn_tail(data)
        if torn:
            res.damaged.append(DamagedLine(torn[0], "incomplete last line", torn[1], True))
            res.lines += 1
        return res

    def last(self) -> ArchiveEntry | None:
        """The newest state, or None for an empty or missing archive."""
        last = None
        for last in self.entries():  # noqa: B007
            pass
        return last

    def at(self, when: float) -> ArchiveEntry | None:
        """The newest state no later than `when`, give or take a microsecond:
        a time printed with microseconds (`isotime`, `vt log --json`) names its
        state, whichever way rounding to microseconds and back went."""
        limit = when + 1e-6
        best = None
        for e in self.entries():
            if e.when <= limit:
                best = e
        return best

    def select(self, selector: str) -> ArchiveEntry:
        """The state `selector` names (`select_state`), e.g. `latest`, `-2`, an ID
        prefix or a date."""
        return select_state(list(self.entries()), selector, os.path.basename(self.path))

    def check_store(self, store, force: bool = False, last=...) -> bool:
        """Refuse (`ArchiveStoreError`) to append states written to `store` when
        the latest state belongs to another store, unless `force`.  Return
        whether the latest state belongs to `store` (always True for a new or
        empty archive): when it does not, its blocks must not be reused.
        `last`, if given, is the latest state already read."""
        if last is ...:
            last = self.last()
        if last is None:
            return True
        why = state_store_problem(last, store)
        if why is None:
            return True
        if not force:
            raise ArchiveStoreError(
                f"{self.path} belongs to another store: {why}; use -S to name its store,"
                " or --force to append a state of this one"
            )
        log.warning("%s: %s; appending anyway (--force)", self.path, why)
        return False

    def _open_locked(self) -> int:
        """An O_APPEND fd on the archive holding its exclusive lock; retried if
        `repair` replaced the file while we waited for the lock."""
        while True:
            try:
                fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
                )
            except OSError as e:
                raise ArchiveError(f"{self.path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                st = os.fstat(fd)
                try:
                    now = os.stat(self.path)
                except FileNotFoundError:
                    now = None
            except OSError as e:
                os.close(fd)
                raise ArchiveError(f"{self.path}: {e.strerror}") from None
            if now is not None and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                return fd
            os.close(fd)  # the file we locked was replaced: lock the new one

    def update(
        self,
        dirent: Dirent,
        when: float | None = None,
        uuid: uuidmod.UUID | None = None,
        name: str | None = None,
        comment: str | None = None,
        store_id: str | None = None,
        if_newer: bool = False,
    ) -> ArchiveEntry | None:
        """Append a new state, atomically, and make it durable.  `store_id`
        (`store_identity` of the store holding its blocks) is recorded with it.

        With `if_newer`, append only if the archive's latest state is older than
        this one (checked under the archive's lock, so two writers cannot
        interleave out of time order); return None when it was not appended."""
        entry = ArchiveEntry(
            time.time() if when is None else when, dirent, uuid, name, comment, store_id
        )
        line = entry.to_line().encode("utf-8")
        if self.codec is not None:
            line = self.codec.encode(line[:-1]) + b"\n"
        fd = self._open_locked()
        try:
            # a previous writer may have died mid-line: that torn tail was never
            # acknowledged, so cut it off rather than bury it mid-file
            size = os.fstat(fd).st_size
            if size:
                keep = _complete_length(self.path, size)
                if keep != size:
                    log.warning("%s: dropping a torn last line before appending", self.path)
                    os.ftruncate(fd, keep)
                    size = keep
            if if_newer:
                last = self._last_in(size)
                if last is not None and last.when >= entry.when:
                    return None
            n = os.write(fd, line)
            if n != len(line):
                raise ArchiveError(f"{self.path}: short write appending a state")
            os.fsync(fd)
        except OSError as e:
            raise ArchiveError(f"{self.path}: {e.strerror}") from None
        finally:
            os.close(fd)
        from vtstore.lifecycle.registry import note_archive

        note_archive(self.path, store_id)  # so that vt gc finds this archive's states
        return entry

    def _last_in(self, size: int) -> ArchiveEntry | None:
        """The latest readable state in the first `size` octets of the archive,
        read from the end a piece at a time.  The caller holds the exclusive
        lock, so nobody appends meanwhile (and `last()`, which would take the
        lock again, cannot be used)."""
        with open(self.path, "rb") as f:
            return self._last_of_file(f, size)

    def _last_of_file(self, f, size: int) -> ArchiveEntry | None:
        piece = 1 << 16
        start = size
        while start > 0:
            start = max(0, start - piece)
            f.seek(start)
            data = f.read(size - start)
            if start:  # the first line read may be a part of one
                cut = data.find(b"\n")
                if cut < 0:
                    piece *= 2
                    continue
                data = data[cut + 1 :]
            states = [e for _n, _raw, e, _why in _split(self.path, data, self.codec) if e]
            if states:
                return states[-1]
            piece *= 2
        return None

    def repair(self) -> list[DamagedLine]:
        """Set the damaged lines (and a torn tail) aside and keep the rest.

        Under the archive's exclusive lock: the damaged lines are appended to
        `X.vt.damaged` (each after a `# X.vt line N: reason` comment) and made
        durable, then the good lines, in order, are written to a temporary file
        that is renamed over `X.vt`.  Appenders waiting for the lock notice the
        new file and append to it.  Return what was set aside.
        """
        if not self.exists():
            raise ArchiveError(f"{self.path}: no such archive")
        fd = self._open_locked()
        try:
            # read through a second, unlocked descriptor: a shared flock on it
            # would wait for our own exclusive one
            with open(self.path, "rb") as r:
                data = r.read()
            keep, damaged = _sort_lines(self.path, data, self.codec)
            if not damaged:
                return []
            aside = b"".join(
                f"# {self.path} line {d.lineno}: {d.reason}\n".encode("utf-8", "replace")
                + d.raw
                + b"\n"
                for d in damaged
            )
            _append_durably(self.path + ".damaged", aside)
            _replace_durably(self.path, keep, os.fstat(fd))
        except OSError as e:
            raise ArchiveError(f"{self.path}: repair failed: {e.strerror}") from None
        finally:
            os.close(fd)
        for d in damaged:
            log.info("%s line %d: set aside in %s.damaged", self.path, d.lineno, self.path)
        return damaged


def _sort_lines(path: str, data: bytes, codec=None) -> tuple[bytes, list[DamagedLine]]:
    """The archive's good content (states, comments, blank lines, in order) and
    its damaged lines, the torn tail last."""
    bad = {n: (raw, reason) for n, raw, entry, reason in _split(path, data, codec) if entry is None}
    lines = data.split(b"\n")
    tail = lines.pop()
    keep = [raw + b"\n" for n, raw in enumerate(lines, 1) if n not in bad]
    damaged = [DamagedLine(n, reason, raw) for n, (raw, reason) in bad.items()]
    if tail:
        damaged.append(DamagedLine(len(lines) + 1, "incomplete last line", tail, True))
    return b"".join(keep), damaged


def _append_durably(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(path: str, data: bytes, st: os.stat_result) -> None:
    """Replace `path` by `data` atomically and durably, keeping the mode and
    owner of the file it replaces (`st`)."""
    write_durably(path, data, replace=True, like=st)


def _complete_length(path: str, size: int) -> int:
    """The length of `path` up to and including its last newline."""
    with open(path, "rb") as r:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            r.seek(pos - step)
            chunk = r.read(step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                return pos - step + i + 1
            pos -= step
    return 0
