"""The propagation rule (docs/guarantees.md), pure: observations are inputs, like ``now``.

A daemon polls each ``observe`` URL the way a verifier would and hands the planner one
:class:`~keyrotd.observations.Poll` (``lifecycle.commands.Observed``): per URL the kids it served
(None: unreachable or not a JWKS) and the ``max-age``/``s-maxage`` it advertised. For an
awaiting successor:

- each URL's first-seen time, whether it lacks the kid now (and since when), and the largest
  max-age of any answer that lacked it are recorded;
- at the first poll in which every URL served the kid (received at T) the successor is confirmed,
  and its activation time is fixed at max(scheduled time, T + H, W + ``refresh_interval``), with
  H = max(``verifier_cache``, that largest max-age) and W the plan's ``now`` (the write follows
  it at once; ``ANNOUNCE_SLACK`` covers the difference). It never changes afterwards.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from keyrotd.model import Key, Propagation, UrlProgress
from keyrotd.times import rfc3339

if TYPE_CHECKING:
    from keyrotd.observations import Answer, Poll

ANNOUNCE_SLACK: Final = timedelta(seconds=1)
"""Added to ``refresh_interval``: a confirmation is written a moment after it was planned."""
_NO_AGE: Final = timedelta(0)


def awaiting(scheduled_at: datetime, urls: tuple[str, ...], since: datetime) -> Propagation:
    """A new successor's progress: no URL has served it yet."""
    return Propagation(scheduled_at, tuple(UrlProgress(u, lacking_since=since) for u in urls))


def observe(key: Key, poll: Poll, verifier_cache: timedelta, now: datetime) -> Key:
    """``key`` after ``poll``: progress recorded and, if every URL served it, confirmed."""
    progress = key.propagation
    if progress is None or not key.awaiting or poll.at < key.created_at:
        return key
    answers = [(u, poll.answers.get(u.url)) for u in progress.urls]
    urls = tuple(_seen(u, a, key.kid, poll.at) for u, a in answers)
    # no answer from a URL: it lacks the kid, and advertised no max-age
    lacking_ages = [
        _NO_AGE if a is None else a.max_age for _, a in answers if not _serves(a, key.kid)
    ]
    updated = dataclasses.replace(
        progress, urls=urls, max_age_lacking=max([progress.max_age_lacking, *lacking_ages])
    )
    if updated.lacking:
        return dataclasses.replace(key, propagation=updated)
    hold = max(verifier_cache, updated.max_age_lacking)
    activates_at = max(
        updated.scheduled_at, poll.at + hold, now + poll.refresh_interval + ANNOUNCE_SLACK
    )
    confirmed = dataclasses.replace(updated, confirmed_at=poll.at)
    return dataclasses.replace(key, propagation=confirmed, activates_at=activates_at)


def _serves(answer: Answer | None, kid: str) -> bool:
    return answer is not None and answer.serves(kid)


def _seen(progress: UrlProgress, answer: Answer | None, kid: str, at: datetime) -> UrlProgress:
    if _serves(answer, kid):
        return UrlProgress(progress.url, progress.first_seen or at, None)
    return UrlProgress(progress.url, progress.first_seen, progress.lacking_since or at)


def held(key: Key, now: datetime) -> bool:
    """A pending successor whose time-based schedule has passed while it is not active."""
    scheduled = key.scheduled_at
    return key.propagation is not None and scheduled is not None and now >= scheduled


def confirmation_delay(key: Key) -> timedelta | None:
    """From publication to confirmation (``keyrotd_propagation_seconds``)."""
    progress = key.propagation
    if progress is None or progress.confirmed_at is None:
        return None
    return progress.confirmed_at - key.created_at


def held_report(pending: tuple[Key, ...], now: datetime) -> dict[str, object] | None:
    """``status --json`` ``held``: the successor held past its schedule, the URLs lacking it."""
    holding = next((k for k in pending if held(k, now)), None)
    if holding is None or holding.propagation is None:
        return None
    return {"kid": holding.kid, "lacking": list(holding.propagation.lacking)}


def progress_report(key: Key) -> dict[str, object] | None:
    """A successor's propagation for ``status --json`` (None for a key published by time alone)."""
    progress = key.propagation
    if progress is None:
        return None
    return {
        "scheduled_at": rfc3339(progress.scheduled_at),
        "confirmed_at": rfc3339(progress.confirmed_at) if progress.confirmed_at else None,
        "urls": [
            {
                "url": u.url,
                "first_seen": rfc3339(u.first_seen) if u.first_seen else None,
                "lacking_since": rfc3339(u.lacking_since) if u.lacking_since else None,
            }
            for u in progress.urls
        ],
        "summary": summary(key),
    }


def summary(key: Key) -> str:
    """One line for ``status``: "seen at 2/3 URLs, missing at <url> since <time>"."""
    progress = key.propagation
    if progress is None:
        return ""
    seen = sum(u.lacking_since is None for u in progress.urls)
    line = f"seen at {seen}/{len(progress.urls)} URLs"
    missing = [u for u in progress.urls if u.lacking_since is not None]
    if missing:
        line += ", " + ", ".join(
            f"missing at {u.url} since {rfc3339(u.lacking_since)}"
            for u in missing
            if u.lacking_since
        )
    if key.activates_at is not None and progress.confirmed_at is not None:
        confirmed, activates = rfc3339(progress.confirmed_at), rfc3339(key.activates_at)
        line += f"; confirmed {confirmed}, activates {activates}"
    return line
