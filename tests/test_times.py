"""keyrotd.times: the clock, RFC 3339 text, and the clock-jump rule."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from keyrotd.times import CLOCK_JUMP, forward_jump, rfc3339, utc_now

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_utc_now_is_aware_utc_and_the_real_time() -> None:
    before = time.time()
    now = utc_now()
    after = time.time()
    assert now.tzinfo is UTC
    assert before <= now.timestamp() <= after


@pytest.mark.parametrize(
    ("value", "timespec", "text"),
    [
        (NOON, "auto", "2026-12-01T12:00:00Z"),
        (NOON + timedelta(microseconds=250), "auto", "2026-12-01T12:00:00.000250Z"),
        (NOON + timedelta(microseconds=999_999), "seconds", "2026-12-01T12:00:00Z"),
        (NOON + timedelta(microseconds=123_456), "milliseconds", "2026-12-01T12:00:00.123Z"),
        (NOON, "milliseconds", "2026-12-01T12:00:00.000Z"),
    ],
)
def test_rfc3339_keeps_the_fraction_that_timespec_asks_for(
    value: datetime, timespec: str, text: str
) -> None:
    assert rfc3339(value, timespec) == text  # type: ignore[arg-type]


def test_rfc3339_writes_other_offsets_in_utc_with_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 12, 1, 13, 0, 5, tzinfo=paris)) == "2026-12-01T12:00:05Z"


def test_rfc3339_text_reads_back_as_the_same_instant() -> None:
    value = NOON + timedelta(microseconds=1)
    assert datetime.fromisoformat(rfc3339(value)) == value


def test_a_forward_jump_is_the_wall_clock_s_lead_over_the_monotonic_one() -> None:
    jump = forward_jump(timedelta(seconds=31), timedelta(seconds=1))
    assert jump == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("wall", "monotonic"),
    [
        (timedelta(seconds=1), timedelta(seconds=1)),  # no jump
        (timedelta(seconds=1) + CLOCK_JUMP, timedelta(seconds=1)),  # drift up to the margin
        (timedelta(seconds=1), timedelta(seconds=3600)),  # a backward jump is not a forward one
    ],
)
def test_no_forward_jump_up_to_the_margin_or_backwards(
    wall: timedelta, monotonic: timedelta
) -> None:
    assert forward_jump(wall, monotonic) is None


def test_just_past_the_margin_is_a_jump() -> None:
    lead = CLOCK_JUMP + timedelta(microseconds=1)
    assert forward_jump(timedelta(seconds=2) + lead, timedelta(seconds=2)) == lead
    assert timedelta(seconds=0.5) == CLOCK_JUMP
