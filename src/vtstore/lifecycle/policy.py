"""Retention policies: which states of an archive `vt forget` keeps, and why.

The semantics are restic's (`restic forget`): the states are taken newest
first; `--keep-last N` keeps the N newest; `--keep-hourly N` (daily, weekly,
monthly, yearly likewise) keeps the newest state of each of the N newest
hours that have a state; `--keep-within DURATION` keeps every state no older
than DURATION before the *newest state* (not before now, so an archive left
alone is never emptied by the clock); `--keep-tag TAG` and `--keep-comment
PATTERN` keep the states whose comment names the tag or matches the glob.
Buckets are in local time; weeks are ISO weeks.  A count of -1 means "all".
A state is kept if any policy keeps it; each kept state lists the reasons.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vtstore.errors import VTError


class PolicyError(VTError):
    """A retention policy that cannot be applied (none given, a bad duration)."""

    exit_code = 2


_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?")


def parse_duration(text: str) -> tuple[int, int, int, int]:
    """`1y2m3d4h` -> (years, months, days, hours), restic's duration syntax."""
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None:
        raise PolicyError(
            f"bad duration {text!r}: write it as years, months, days and hours, e.g. 30d, 1y2m, 12h"
        )
    return tuple(int(g or 0) for g in m.groups())  # type: ignore[return-value]


def subtract_duration(when: float, dur: tuple[int, int, int, int]) -> float:
    """`when` minus a (years, months, days, hours) duration, calendar-wise in
    local time (as Go's AddDate: a month back from March 31 is March 3)."""
    y, mo, d, h = dur
    t = datetime.datetime.fromtimestamp(when)
    month0 = t.month - 1 - mo
    year = t.year - y + month0 // 12
    month = month0 % 12 + 1
    # normalise like AddDate: overflowing days roll into the next month
    base = datetime.datetime(year, month, 1, t.hour, t.minute, t.second, t.microsecond)
    t2 = base + datetime.timedelta(days=t.day - 1 - d, hours=-h)
    return t2.timestamp()


def _hour(t: datetime.datetime) -> int:
    return t.year * 1000000 + t.month * 10000 + t.day * 100 + t.hour


def _day(t: datetime.datetime) -> int:
    return t.year * 10000 + t.month * 100 + t.day


def _week(t: datetime.datetime) -> int:
    y, w, _ = t.isocalendar()
    return y * 100 + w


def _month(t: datetime.datetime) -> int:
    return t.year * 100 + t.month


def _year(t: datetime.datetime) -> int:
    return t.year


BUCKETS: dict[str, Callable[[datetime.datetime], int]] = {
    "hourly": _hour,
    "daily": _day,
    "weekly": _week,
    "monthly": _month,
    "yearly": _year,
}


@dataclass
class Policy:
    """What to keep.  Counts: None (policy off), N > 0, or -1 (all)."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: tuple[int, int, int, int] | None = None
    tags: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        """Whether no policy is set (forget then refuses: it would forget all)."""
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return (
            all(c is None or c == 0 for c in counts)
            and not self.within
            and not self.tags
            and not self.comments
        )

    def describe(self) -> str:
        """The policy as the options that set it."""
        out = []
        for name in ("last", *BUCKETS):
            n = getattr(self, name)
            if n:
                out.append(f"--keep-{name} {n}")
        if self.within:
            y, mo, d, h = self.within
            text = "".join(f"{v}{u}" for v, u in zip((y, mo, d, h), "ymdh", strict=True) if v)
            out.append(f"--keep-within {text or '0h'}")
        out += [f"--keep-tag {t}" for t in self.tags]
        out += [f"--keep-comment {c}" for c in self.comments]
        return " ".join(out)


def has_tag(comment: str | None, tag: str) -> bool:
    """Whether `comment` names `tag` as a word (split at white space and commas,
    a leading `#` ignored): `-m "weekly #keep"` has the tag `keep`."""
    if not comment:
        return False
    words = {w.lstrip("#") for w in re.split(r"[\s,]+", comment) if w}
    return tag.lstrip("#") in words


def decide(
    whens: Sequence[float], comments: Sequence[str | None], policy: Policy
) -> list[list[str]]:
    """For each state (given oldest first, as an archive lists them), the
    reasons it is kept; an empty list means it is forgotten."""
    if policy.empty():
        raise PolicyError(
            "no policy given, so every state would be forgotten: say what to keep"
            " (--keep-last N, --keep-daily N, --keep-within 30d, ...)"
        )
    n = len(whens)
    reasons: list[list[str]] = [[] for _ in range(n)]
    if not n:
        return reasons
    order = sorted(range(n), key=lambda i: (whens[i], i), reverse=True)  # newest first
    latest = whens[order[0]]
    cutoff = None if policy.within is None else subtract_duration(latest, policy.within)
    buckets = []
    if policy.last:
        buckets.append(["last", None, policy.last, None])
    for name, fn in BUCKETS.items():
        c = getattr(policy, name)
        if c:
            buckets.append([name, fn, c, None])
    for nr, i in enumerate(order):
        why = reasons[i]
        for t in policy.tags:
            if has_tag(comments[i], t):
                why.append(f"tag {t}")
        for pat in policy.comments:
            if comments[i] is not None and fnmatch.fnmatchcase(comments[i], pat):
                why.append(f"comment {pat}")
        if buckets:
            local = datetime.datetime.fromtimestamp(whens[i])
        for b in buckets:
            name, fn, count, last = b
            if count == 0:
                continue
            val = nr if fn is None else fn(local)
            if val != last:
                why.append(name if fn is None else f"{name} {_label(name, local)}")
                b[3] = val
                if count > 0:
                    b[2] = count - 1
        # at microseconds, as archives keep time: the boundary itself is out
        if cutoff is not None and round(whens[i] * 1e6) > round(cutoff * 1e6):
            why.append("within")
    return reasons


def _label(name: str, t: datetime.datetime) -> str:
    if name == "hourly":
        return t.strftime("%Y-%m-%d %H:00")
    if name == "daily":
        return t.strftime("%Y-%m-%d")
    if name == "weekly":
        y, w, _ = t.isocalendar()
        return f"{y}-W{w:02d}"
    if name == "monthly":
        return t.strftime("%Y-%m")
    return t.strftime("%Y")
