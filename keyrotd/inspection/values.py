"""How ``keyrotd inspect`` shows values from a token and times: one line, never raw bytes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from keyrotd.durations import format_duration
from keyrotd.times import rfc3339

_SAFE: Final = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,100}")
CENTURY: Final = 100 * 365.25 * 86400


def shown(value: object) -> str:
    """A name from the token (kid, alg, aud, iss), safe to print on one line: plain if harmless,
    else as JSON."""
    if isinstance(value, str) and _SAFE.fullmatch(value):
        return value
    return as_json(value)


def as_json(value: object) -> str:
    """Any value from the token as one line of ASCII JSON, shortened past 100 characters."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 100 else text[:97] + "..."


def seconds(value: object) -> float | None:
    """A NumericDate claim as seconds; ``None`` if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if math.isfinite(number) else None


def claim_time(claims: Mapping[str, Any], name: str) -> datetime | None:
    value = seconds(claims.get(name))
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def when(timestamp: float) -> str:
    """A NumericDate as RFC 3339 to the second, or the number if no calendar holds it."""
    try:
        return rfc3339(datetime.fromtimestamp(timestamp, UTC), "seconds")
    except (OverflowError, ValueError, OSError):
        return f"{timestamp:g} (seconds since 1970, beyond the calendar)"


def iso_or(value: datetime | None) -> str:
    return rfc3339(value, "seconds") if value is not None else "an unrecorded time"


def span(delta: timedelta) -> str:
    return span_seconds(delta.total_seconds())


def span_seconds(seconds: float) -> str:
    """A duration to the second; past 100 years just that."""
    if seconds > CENTURY:
        return "over 100 years"
    return format_duration(timedelta(seconds=round(seconds)))
