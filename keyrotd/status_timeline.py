"""The text of ``keyrotd status``: each keyset's keys on a shared time axis.

An operator reads a picture faster than timestamps, so every live key gets one row showing when it
is published only (``.``), signing (``#``) and retired but still in the JWKS (``=``), with a ``|``
at now. Times the document does not fix yet (when the active key retires, when a pending key stops
signing) are projected from the policy. Everything here is a pure function of the keyset, the
policy, ``now`` and the width: no clock, no terminal, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from keyrotd.lifecycle.due import due_times, expires_after, next_due
from keyrotd.lifecycle.events import Due
from keyrotd.model import Key, Keyset, KeyState, Policy
from keyrotd.propagation import summary
from keyrotd.times import rfc3339

PUBLISHED: Final = "."
SIGNING: Final = "#"
RETIRED: Final = "="
NOW: Final = "|"
LEGEND: Final = f"{PUBLISHED} published  {SIGNING} signing  {RETIRED} retired (verify only)"

_STATE_WIDTH: Final = 8
_KID_WIDTH: Final = 8
_INDENT: Final = "  "
_MIN_BAR: Final = 20
_UNITS: Final = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


@dataclass(frozen=True)
class Span:
    """A key is drawn with ``mark`` from ``start`` until ``end`` (None: past the axis)."""

    start: datetime
    end: datetime | None
    mark: str


def human_duration(duration: timedelta) -> str:
    """A duration for people: its two largest units, cut (not rounded) — ``23h59m``, ``42s``."""
    total = int(duration.total_seconds())
    sign, total = ("-", -total) if total < 0 else ("", total)
    parts: list[str] = []
    for unit, seconds in _UNITS:
        count, total = divmod(total, seconds)
        if count or parts:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    while len(parts) > 1 and parts[-1][0] == "0":
        parts.pop()
    return sign + ("".join(parts) or "0s")


def render_status(
    keyset: Keyset,
    policy: Policy,
    now: datetime,
    width: int,
    *,
    algorithm: str,
    location: str,
) -> str:
    """The ``status`` text of one keyset as seen at ``now``, drawn ``width`` columns wide."""
    lines = [f"keyset {keyset.name} ({algorithm}) at {location}"]
    if not keyset.keys:
        lines.append(f"{_INDENT}no keys yet: run `keyrotd rotate` or start `keyrotd run`")
        return "\n".join(lines) + "\n"
    spans = {key.kid: key_spans(key, keyset, policy) for key in keyset.keys}
    due = next_due(keyset, policy)
    upcoming = None if due is None else due.at
    start, end = axis(spans.values(), now, upcoming)
    bar = max(_MIN_BAR, width - len(_row_prefix(keyset.keys[0])) - 1)
    lines += _axis_header(start, end, now, bar)
    for key in keyset.keys:
        lines.append(_row_prefix(key) + draw(spans[key.kid], start, end, now, bar))
    lines.append(" " * len(_row_prefix(keyset.keys[0])) + LEGEND)
    lines += [_INDENT + key_line(key) for key in keyset.keys]
    if keyset.history:
        count = len(keyset.history)
        lines.append(f"{_INDENT}history: {count} keys out of the JWKS (kid and times in --json)")
    if due is not None:
        lines.append(
            f"{_INDENT}next transition: {rfc3339(due.at, 'seconds')} "
            f"(in {human_duration(due.at - now)}): {what_happens(due)}"
        )
    return "\n".join(lines) + "\n"


def key_spans(key: Key, keyset: Keyset, policy: Policy) -> tuple[Span, ...]:
    """Where one key is published, signing and retired, projecting what is not fixed yet."""
    activates = key.activates_at
    if key.state is KeyState.PENDING or activates is None:
        if activates is None:
            return (Span(key.created_at, None, PUBLISHED),)
        return (Span(key.created_at, activates, PUBLISHED), Span(activates, None, SIGNING))
    retires = key.retired_at
    if retires is None:
        # when the planner retires it: at the earliest scheduled activation (of any successor,
        # even one whose private half is not at hand: a picture of the schedule shows them too)
        retiring = (d.at for d in due_times(keyset, policy) if d.event == "key.retired")
        retires = next(retiring, None)
    expires = key.expires_at
    if expires is None and retires is not None:
        expires = expires_after(keyset, policy, retires)
    spans = [Span(key.created_at, activates, PUBLISHED), Span(activates, retires, SIGNING)]
    if retires is not None:
        spans.append(Span(retires, expires, RETIRED))
    return tuple(spans)


def axis(
    spans: Iterable[tuple[Span, ...]], now: datetime, upcoming: datetime | None
) -> tuple[datetime, datetime]:
    """The shared time axis: from the oldest publication to past the last known change."""
    all_spans = [span for group in spans for span in group]
    start = min([now, *(span.start for span in all_spans)])
    known = [now, *(span.end for span in all_spans if span.end is not None)]
    if upcoming is not None:
        known.append(upcoming)
    end = max(known)
    if end - start < timedelta(minutes=1):
        end = start + timedelta(minutes=1)
    return start, end + (end - start) / 10


def column(moment: datetime, start: datetime, end: datetime, bar: int) -> int:
    """The column of ``moment`` on a bar of ``bar`` cells spanning ``start`` to ``end``."""
    fraction = (moment - start) / (end - start)
    return min(bar - 1, max(0, int(fraction * bar)))


def draw(spans: tuple[Span, ...], start: datetime, end: datetime, now: datetime, bar: int) -> str:
    """One key's bar: each cell shows the key's state at the cell's start."""
    cell = (end - start) / bar
    marks: list[str] = []
    for index in range(bar):
        moment = start + cell * index
        mark = next(
            (s.mark for s in spans if s.start <= moment and (s.end is None or moment < s.end)),
            " ",
        )
        marks.append(mark)
    marks[column(now, start, end, bar)] = NOW
    return "".join(marks).rstrip()


def _axis_header(start: datetime, end: datetime, now: datetime, bar: int) -> list[str]:
    """The labels above the bars: the axis ends, and ``now`` over its column."""
    pad = " " * (len(_INDENT) + _STATE_WIDTH + 1 + _KID_WIDTH + 2)
    left, right = short_stamp(start), short_stamp(end)
    ends = left + right.rjust(bar - len(left))
    at = column(now, start, end, bar)
    label = f"now {short_stamp(now)}"
    offset = at if at + len(label) <= bar else max(0, at - len(label) + 1)
    marker = " " * offset + label
    pointer = " " * at + "v"
    return [pad + ends, pad + marker, pad + pointer]


def _row_prefix(key: Key) -> str:
    return f"{_INDENT}{key.state.value:<{_STATE_WIDTH}} {key.kid[:_KID_WIDTH]:<{_KID_WIDTH}}  "


def key_line(key: Key) -> str:
    """The full kid (for ``revoke``) and the times the document holds."""
    awaiting = key.state is KeyState.PENDING and key.propagation is not None
    when = {
        KeyState.PENDING: f"activates {rfc3339(key.activates_at, 'seconds')}"
        if key.activates_at is not None
        else "awaiting confirmation",
        KeyState.ACTIVE: f"active since {_maybe(key.activates_at)}",
        KeyState.RETIRED: f"retired {_maybe(key.retired_at)}, leaves the JWKS "
        f"{_maybe(key.expires_at)}",
    }.get(key.state, "")
    if awaiting:  # observed (docs/guarantees.md): "seen at 2/3 URLs, missing at <url> since <time>"
        when += f": {summary(key)}"
    return f"{key.state.value:<{_STATE_WIDTH}} {key.kid}  {key.alg}  {when}".rstrip()


def what_happens(due: Due) -> str:
    """What the planner says happens at a due time, in the words of ``status``."""
    if due.kid is None:
        return due.reason
    return f"{due.kid[:_KID_WIDTH]} {due.reason}"


def short_stamp(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M")


def _maybe(moment: datetime | None) -> str:
    return rfc3339(moment, "seconds") if moment is not None else "(not yet known)"
