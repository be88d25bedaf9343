"""Archives: `.vt` files logging the successive states of a tree.

An archive is an append-only UTF-8 text file, one state per line, newest last.
A line is an NDJSON object::

    {"when": 1764581400.123456, "dirent": "D{...}", "uuid": "...", "name": "...", "comment": "..."}

`when` (UNIX seconds) and `dirent` (the top dirent's transcription) are required;
the rest are optional.  The older form `ISO-TIME UNIXTIME DIRENT-TEXT` is read too.
Appends take an exclusive `flock` and write one whole line with one `write`, so
concurrent writers never interleave.  A last line without its newline is a torn
write: it is ignored with a warning.  Any other bad line is an error naming the
file and line number.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import time
import uuid as uuidmod
from collections.abc import Iterator
from dataclasses import dataclass

from vtstore.errors import FormatError, VTError
from vtstore.tree.dirent import Dirent, parse_dirent

log = logging.getLogger(__name__)


class ArchiveError(VTError):
    """An archive file that cannot be read or written."""


@dataclass(frozen=True)
class ArchiveEntry:
    """One state of an archive."""

    when: float
    dirent: Dirent
    uuid: uuidmod.UUID | None = None
    name: str | None = None
    comment: str | None = None

    @property
    def isotime(self) -> str:
        """`when` as an ISO 8601 UTC timestamp with microseconds."""
        return (
            datetime.datetime.fromtimestamp(self.when, datetime.UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )

    def to_line(self) -> str:
        d: dict = {"when": self.when, "dirent": str(self.dirent)}
        if self.uuid is not None:
            d["uuid"] = str(self.uuid)
        if self.name is not None:
            d["name"] = self.name
        if self.comment is not None:
            d["comment"] = self.comment
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n"


def parse_line(line: str, where: str = "") -> ArchiveEntry:
    """Parse one archive line (NDJSON or legacy)."""
    line = line.strip()
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"{where}bad JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(d, dict) or "when" not in d or "dirent" not in d:
            raise FormatError(f"{where}state line needs 'when' and 'dirent'")
        when = d["when"]
        if not isinstance(when, int | float) or isinstance(when, bool):
            raise FormatError(f"{where}'when' must be a number")
        if not isinstance(d["dirent"], str):
            raise FormatError(f"{where}'dirent' must be a transcription string")
        u = d.get("uuid")
        try:
            u = uuidmod.UUID(u) if u is not None else None
        except (ValueError, TypeError, AttributeError):
            raise FormatError(f"{where}bad uuid {u!r}") from None
        try:
            dirent = parse_dirent(d["dirent"])
        except FormatError as e:
            raise FormatError(f"{where}{e}") from None
        return ArchiveEntry(
            float(when), dirent, u, _opt_str(d, "name", where), _opt_str(d, "comment", where)
        )
    parts = line.split(None, 2)
    if len(parts) != 3:
        raise FormatError(f"{where}neither an NDJSON state nor 'ISO-TIME UNIXTIME DIRENT'")
    try:
        when = float(parts[1])
    except ValueError:
        raise FormatError(f"{where}bad UNIX time {parts[1]!r}") from None
    try:
        dirent = parse_dirent(parts[2])
    except FormatError as e:
        raise FormatError(f"{where}{e}") from None
    return ArchiveEntry(when, dirent)


def _opt_str(d: dict, k: str, where: str) -> str | None:
    v = d.get(k)
    if v is not None and not isinstance(v, str):
        raise FormatError(f"{where}{k!r} must be a string")
    return v


class Archive:
    """A `.vt` file: read its states, append new ones."""

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"Archive({self.path!r})"

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every state, oldest first."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        except OSError as e:
            raise ArchiveError(f"{self.path}: {e.strerror}") from None
        with f:
            fcntl.flock(f, fcntl.LOCK_SH)
            data = f.read()
        lines = data.split(b"\n")
        torn = lines.pop()  # text after the last newline: empty, or a torn append
        if torn.strip():
            log.warning("%s: ignoring an incomplete last line (torn write)", self.path)
        for n, raw in enumerate(lines, 1):
            if not raw.strip() or raw.lstrip().startswith(b"#"):
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{self.path}:{n}: not UTF-8") from None
            yield parse_line(text, f"{self.path}:{n}: ")

    def last(self) -> ArchiveEntry | None:
        """The newest state, or None for an empty or missing archive."""
        last = None
        for last in self.entries():  # noqa: B007
            pass
        return last

    def at(self, when: float) -> ArchiveEntry | None:
        """The newest state no later than `when`."""
        best = None
        for e in self.entries():
            if e.when <= when:
                best = e
        return best

    def update(
        self,
        dirent: Dirent,
        when: float | None = None,
        uuid: uuidmod.UUID | None = None,
        name: str | None = None,
        comment: str | None = None,
    ) -> ArchiveEntry:
        """Append a new state, atomically, and make it durable."""
        entry = ArchiveEntry(time.time() if when is None else when, dirent, uuid, name, comment)
        line = entry.to_line().encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ArchiveError(f"{self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a previous writer may have died mid-line: that torn tail was never
            # acknowledged, so cut it off rather than bury it mid-file
            size = os.fstat(fd).st_size
            if size:
                keep = _complete_length(self.path, size)
                if keep != size:
                    log.warning("%s: dropping a torn last line before appending", self.path)
                    os.ftruncate(fd, keep)
            n = os.write(fd, line)
            if n != len(line):
                raise ArchiveError(f"{self.path}: short write appending a state")
            os.fsync(fd)
        except OSError as e:
            raise ArchiveError(f"{self.path}: {e.strerror}") from None
        finally:
            os.close(fd)
        return entry


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
