"""Retention policies on synthetic histories, against restic's documented
semantics (`restic forget`: newest first; a bucket policy keeps the newest
state of each of the N newest buckets that have one; --keep-within counts back
from the newest state; local time)."""

from __future__ import annotations

import datetime
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.lifecycle.policy import Policy, PolicyError, decide, parse_duration


@pytest.fixture(autouse=True)
def _utc_zone():
    # buckets are local time: pin the zone so the expected days are the days
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


# restic's own test history shape: several states a day, days skipped,
# across months and a year boundary
HISTORY = [
    "2025-11-30 10:00",
    "2025-12-30 09:00",
    "2025-12-31 23:00",
    "2026-01-01 01:00",
    "2026-01-01 08:00",
    "2026-01-03 12:00",
    "2026-01-05 07:00",  # Monday of ISO week 2
    "2026-01-05 07:30",
    "2026-01-05 18:00",
    "2026-01-11 23:59",  # Sunday, still week 2
    "2026-01-12 00:01",  # week 3
    "2026-02-01 10:00",
    "2026-02-01 11:00",
]
WHENS = [ts(t) for t in HISTORY]


def kept(policy: Policy, whens=WHENS, comments=None) -> list[str]:
    comments = comments or [None] * len(whens)
    why = decide(whens, comments, policy)
    return [HISTORY[i] if whens is WHENS else i for i, r in enumerate(why) if r]


def test_keep_last():
    assert kept(Policy(last=3)) == HISTORY[-3:]
    assert kept(Policy(last=100)) == HISTORY
    assert kept(Policy(last=-1)) == HISTORY


def test_keep_hourly():
    # the newest state of each of the 4 newest hours that have one
    assert kept(Policy(hourly=4)) == [
        "2026-01-11 23:59",
        "2026-01-12 00:01",
        "2026-02-01 10:00",
        "2026-02-01 11:00",
    ]


def test_keep_daily():
    # 01-05 has three states: its newest (18:00) stands for the day
    assert kept(Policy(daily=5)) == [
        "2026-01-03 12:00",
        "2026-01-05 18:00",
        "2026-01-11 23:59",
        "2026-01-12 00:01",
        "2026-02-01 11:00",
    ]


def test_keep_weekly_iso_weeks():
    # 2026-01-05..11 is ISO week 2; 2025-12-30..2026-01-04 is ISO 2026-W01
    assert kept(Policy(weekly=4)) == [
        "2026-01-03 12:00",
        "2026-01-11 23:59",
        "2026-01-12 00:01",
        "2026-02-01 11:00",
    ]


def test_keep_monthly_and_yearly():
    assert kept(Policy(monthly=3)) == ["2025-12-31 23:00", "2026-01-12 00:01", "2026-02-01 11:00"]
    assert kept(Policy(yearly=5)) == ["2025-12-31 23:00", "2026-02-01 11:00"]


def test_keep_within_counts_from_the_newest_state():
    # 2026-02-01 11:00 minus 1m = 2026-01-01 11:00: strictly after it is kept
    assert kept(Policy(within=parse_duration("1m"))) == HISTORY[5:]
    assert kept(Policy(within=parse_duration("2h"))) == HISTORY[-2:]
    # a long time after the last backup, nothing is lost to the clock
    assert kept(Policy(within=parse_duration("1d"))) == HISTORY[-2:]


def test_policies_combine_as_a_union_with_reasons():
    why = decide(WHENS, [None] * len(WHENS), Policy(last=1, daily=2))
    assert why[-1] == ["last", "daily 2026-02-01"]
    assert why[-2] == []  # same day as the newest
    assert why[-3] == ["daily 2026-01-12"]
    assert sum(1 for r in why if r) == 2


def test_keep_tag_and_comment():
    comments = ["weekly #keep", "nightly", None, "keep,release", "x"] + [None] * 8
    why = decide(WHENS, comments, Policy(tags=["keep"]))
    assert [i for i, r in enumerate(why) if r] == [0, 3]
    why = decide(WHENS, comments, Policy(comments=["night*"]))
    assert [i for i, r in enumerate(why) if r] == [1]


def test_no_policy_is_refused():
    with pytest.raises(PolicyError, match="no policy"):
        decide(WHENS, [None] * len(WHENS), Policy())


@pytest.mark.parametrize(
    "text,want",
    [
        ("30d", (0, 0, 30, 0)),
        ("1y2m", (1, 2, 0, 0)),
        ("1y5m7d2h", (1, 5, 7, 2)),
        ("12h", (0, 0, 0, 12)),
    ],
)
def test_durations(text, want):
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", ["", "30", "d", "1x", "2h1d", "-1d"])
def test_bad_durations(text):
    with pytest.raises(PolicyError):
        parse_duration(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 3 * 365 * 86400), min_size=1, max_size=60),
    st.integers(1, 10),
    st.sampled_from(["last", "hourly", "daily", "weekly", "monthly", "yearly"]),
)
def test_bucket_policies_properties(offsets, n, name):
    """The newest state is always kept; at most N states are kept, one per
    bucket, each the newest of its bucket; and the kept buckets are the N
    newest that have a state."""
    base = ts("2024-01-01 00:00")
    whens = [base + o for o in offsets]
    why = decide(whens, [None] * len(whens), Policy(**{name: n}))
    keep = [i for i, r in enumerate(why) if r]
    newest = max(range(len(whens)), key=lambda i: (whens[i], i))
    assert newest in keep
    assert len(keep) <= n
    if name == "last":
        assert len(keep) == min(n, len(whens))
        return
    from vtstore.lifecycle.policy import BUCKETS

    fn = BUCKETS[name]
    bucket = [fn(datetime.datetime.fromtimestamp(w)) for w in whens]
    assert len({bucket[i] for i in keep}) == len(keep)
    for i in keep:
        same = [j for j in range(len(whens)) if bucket[j] == bucket[i]]
        assert max(same, key=lambda j: (whens[j], j)) == i
    want = sorted(set(bucket), reverse=True)[:n]
    assert sorted({bucket[i] for i in keep}, reverse=True) == want
