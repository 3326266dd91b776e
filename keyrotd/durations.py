"""Durations as operators write them: ``90s``, ``15m``, ``24h``, ``7d``, ``1h30m``, ``PT1H``, ``30``

Also home of :class:`InvalidValueError`, the ``ValueError`` that the configuration validators raise
so that :mod:`keyrotd.config.messages` can phrase it as one line: what is wrong, then the fix.
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Final

import pydantic
from pydantic import BeforeValidator, PlainSerializer

HINT: Final = "use 90s, 15m, 24h, 7d, PT1H or plain seconds"
LONGEST: Final = timedelta(days=36500)
"""The longest duration accepted (100 years): sums of durations and ``now + d`` never overflow."""

_MICROSECONDS: Final = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
# Patterns, not compiled ones: ``re`` compiles each on first use (and keeps it), so that a start
# that parses no duration text (the built-in defaults are timedeltas) compiles none.
_NUMBER: Final = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_SECONDS: Final = rf"{_NUMBER}|\.[0-9]+"
_COMPOUND: Final = rf"(?:{_NUMBER}(?:ms|s|m|h|d))+"
_COMPONENT: Final = rf"({_NUMBER})(ms|s|m|h|d)"
_ISO: Final = r"(?is)[+-]?P.*"
_ISO_MONTHS: Final = r"[+-]?P[^T]*M"
_MICROSECOND: Final = timedelta(microseconds=1)
_LONGEST_TEXT: Final = 64
_LINE_BREAKS: Final = {"\x85": "\\x85", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class InvalidValueError(ValueError):
    """A rejected setting value: ``problem`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(f"{problem}: {hint}")
        self.problem = problem
        self.hint = hint


def quote(value: object, limit: int | None = 60) -> str:
    """Show a user's value on one line: strings in double quotes, long ones shortened."""
    if isinstance(value, str):
        shown = value if limit is None or len(value) <= limit else value[:limit] + "..."
        text = json.dumps(shown, ensure_ascii=False)
    else:
        try:
            text = repr(value)
        except ValueError:  # an int too long to print
            text = "a very large number"
        text = text if limit is None or len(text) <= limit else text[:limit] + "..."
    for char, escaped in _LINE_BREAKS.items():
        text = text.replace(char, escaped)
    return text


def parse_duration(value: object) -> timedelta:
    """Read a duration from a string, a number of seconds or a ``timedelta``.

    Raises :class:`InvalidValueError` (a ``ValueError``) naming the accepted forms.
    """
    if isinstance(value, timedelta):
        return _in_range(value, value // _MICROSECOND, value)
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidValueError(f"{quote(value)} is not a duration", HINT)
    if isinstance(value, int | float):
        return _in_range(value, Decimal(value) * _MICROSECONDS["s"])
    raise InvalidValueError(f"{quote(value)} is not a duration", HINT)


def _parse_text(value: str) -> timedelta:
    text = value.strip()
    if len(text) > _LONGEST_TEXT:
        raise InvalidValueError(f"{quote(value)} is not a duration", HINT)
    if re.fullmatch(_PLAIN_SECONDS, text):
        return _in_range(value, Decimal(text) * _MICROSECONDS["s"])
    if re.fullmatch(_COMPOUND, text.lower()):
        parts = re.findall(_COMPONENT, text.lower())
        return _in_range(value, sum(Decimal(n) * _MICROSECONDS[unit] for n, unit in parts))
    if re.fullmatch(_ISO, text):
        return _parse_iso(value, text.upper())
    if text.startswith("-") and _parses(text[1:]):
        raise InvalidValueError(f"{quote(value)} is negative", "use a duration of 0 or more")
    raise InvalidValueError(f"{quote(value)} is not a duration", HINT)


def _parses(text: str) -> bool:
    return bool(re.fullmatch(_PLAIN_SECONDS, text) or re.fullmatch(_COMPOUND, text.lower()))


def _parse_iso(value: str, text: str) -> timedelta:
    if re.match(_ISO_MONTHS, text):
        raise InvalidValueError(
            f"{quote(value)} counts months, which have no fixed length",
            "use days (P30D or 30d), or PT1M for minutes",
        )
    try:
        parsed = _iso_adapter().validate_python(text)
    except pydantic.ValidationError:
        raise InvalidValueError(f"{quote(value)} is not a duration", HINT) from None
    return _in_range(value, parsed // _MICROSECOND, parsed)


@functools.cache
def _iso_adapter() -> pydantic.TypeAdapter[timedelta]:
    """pydantic's ISO 8601 duration parser, built on first use (milliseconds at import)."""
    return pydantic.TypeAdapter(timedelta)


def _in_range(
    value: object, microseconds: Decimal | int, exact: timedelta | None = None
) -> timedelta:
    """The duration of ``microseconds``, refused below zero or above :data:`LONGEST`."""
    if microseconds < 0:
        raise InvalidValueError(f"{quote(value)} is negative", "use a duration of 0 or more")
    if microseconds > LONGEST // _MICROSECOND:
        longest = format_duration(LONGEST)
        raise InvalidValueError(f"{quote(value)} is too long", f"use at most {longest} (100 years)")
    if exact is not None:
        return exact
    return timedelta(microseconds=int(Decimal(microseconds).to_integral_value()))


def format_duration(duration: timedelta) -> str:
    """The short form of a duration: ``1d2h``, ``30s``, ``1.5s``, ``0s``."""
    total = duration // _MICROSECOND
    sign, total = ("-", -total) if total < 0 else ("", total)
    seconds, microseconds = divmod(total, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if microseconds:
        parts.append(f"{seconds}.{microseconds:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return sign + "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A ``timedelta`` setting read by :func:`parse_duration`, written by :func:`format_duration`."""
