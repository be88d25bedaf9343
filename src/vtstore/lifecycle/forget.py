"""Forgetting states: rewrite an archive without the states a policy drops.

The rewrite holds the archive's exclusive lock from the read to the rename:
the file is read again under the lock, the policy applied to what is there
then, and the kept lines (comments, blank and damaged lines too: forget judges
states, not damage) are written to a temporary file, fsynced and renamed over
the archive (`fileio.write_durably`, keeping its mode and owner).  An appender
(`vt pack`) that waited for the lock finds the file replaced and appends to the
new one, so a state appended concurrently is never lost; a kill at any point
leaves the old file or the new one, whole.  The blocks of forgotten states stay
in the store until `vt gc` reclaims them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vtstore.archive import Archive, ArchiveEntry, ArchiveError, _replace_durably, _split
from vtstore.lifecycle.policy import Policy, decide


@dataclass
class Verdict:
    """One state and the reasons it is kept (none: it is forgotten)."""

    lineno: int
    entry: ArchiveEntry
    reasons: list[str]

    @property
    def kept(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict:
        e = self.entry
        d = {"line": self.lineno, "when": e.when, "time": e.isotime, "dirent": str(e.dirent)}
        sid = getattr(e, "short_id", None)
        if sid:
            d["id"] = sid
        if e.comment is not None:
            d["comment"] = e.comment
        if self.reasons:
            d["reasons"] = self.reasons
        return d


@dataclass
class ForgetResult:
    """What `forget` did to one archive (or, dry, would do)."""

    path: str
    verdicts: list[Verdict] = field(default_factory=list)
    dry_run: bool = False

    @property
    def kept(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kept]

    @property
    def forgotten(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.kept]

    def to_json(self) -> dict:
        return {
            "archive": self.path,
            "dry_run": self.dry_run,
            "kept": [v.to_json() for v in self.kept],
            "forgotten": [v.to_json() for v in self.forgotten],
        }


def _verdicts(archive: Archive, data: bytes, policy: Policy, drop_ids=None) -> list[Verdict]:
    states = [(n, e) for n, _raw, e, _why in _split(archive.path, data, archive.codec) if e]
    if drop_ids is not None:  # states named one by one (`X.vt@ID`): the rest stay
        reasons = [[] if e.id in drop_ids else ["not named"] for _, e in states]
    else:
        reasons = decide([e.when for _, e in states], [e.comment for _, e in states], policy)
    return [Verdict(n, e, r) for (n, e), r in zip(states, reasons, strict=True)]


def forget(
    archive: Archive, policy: Policy, dry_run: bool = False, drop_ids: set[str] | None = None
) -> ForgetResult:
    """Apply `policy` to `archive`; unless `dry_run`, rewrite it without the
    forgotten states (see the module docstring).  With `drop_ids` (full state
    IDs) the policy is not used: exactly those states go.  A missing archive
    is an `ArchiveError`."""
    if not archive.exists():
        raise ArchiveError(f"{archive.path}: no such archive")
    res = ForgetResult(archive.path, dry_run=dry_run)
    if hasattr(archive, "backend"):  # kept as objects, one per state
        return _forget_objects(archive, policy, res, drop_ids)
    if dry_run:
        data = archive._read() or b""
        res.verdicts = _verdicts(archive, data, policy, drop_ids)
        return res
    fd = archive._open_locked()
    try:
        # read through a second descriptor: a shared flock would wait for ours
        with open(archive.path, "rb") as r:
            data = r.read()
        res.verdicts = _verdicts(archive, data, policy, drop_ids)
        drop = {v.lineno for v in res.forgotten}
        if drop:
            lines = data.split(b"\n")
            lines.pop()  # a torn tail: never acknowledged, as `update` would cut it
            keep = b"".join(raw + b"\n" for n, raw in enumerate(lines, 1) if n not in drop)
            _replace_durably(archive.path, keep, os.fstat(fd))
    except OSError as e:
        raise ArchiveError(f"{archive.path}: forget failed: {e.strerror}") from None
    finally:
        os.close(fd)
    return res


def _forget_objects(archive, policy: Policy, res: ForgetResult, drop_ids) -> ForgetResult:
    """`forget` for an archive kept in an object store (`ObjectArchive`): the
    policy judges the state objects listed now, and the forgotten ones are
    deleted; a state added meanwhile is a new object, untouched."""
    backend = archive.backend
    names = [o.name for o in backend.list(archive.prefix)]
    bodies = [backend.get(n) for n in names]
    names = [n for n, b in zip(names, bodies, strict=True) if b is not None]
    # one line per object, so the verdicts' line numbers index `names`
    data = b"".join(b.rstrip(b"\n").replace(b"\n", b" ") + b"\n" for b in bodies if b is not None)
    res.verdicts = _verdicts(archive, data, policy, drop_ids)
    if not res.dry_run:
        for v in res.forgotten:
            backend.delete(names[v.lineno - 1])
    return res
