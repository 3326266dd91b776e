"""The signing-key wire format: :class:`SigningKeys`, shared by the daemon and the issuer.

A :class:`SigningKeys` is what an issuer needs to know: the active private JWK, the next one and
when it activates, and the keyset's ``token_lifetime`` and ``publish_ahead``. The daemon answers
``GET /keysets/{name}/signing-key`` with :func:`signing_key_body` of :func:`signing_keys_of`, and
:func:`parse_signing_key` reads that body back, so both sides use one definition of the format:

    {"active": JWK, "next": JWK | null, "next_activates_at": RFC 3339 | null,
     "token_lifetime": whole seconds, "publish_ahead": whole seconds, "issuer": string | null}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keyrotd.errors import KeyrotdError
from keyrotd.model import ALGORITHMS, Jwk, Keyset, Policy, utc
from keyrotd.times import rfc3339


@dataclass(frozen=True)
class SigningKeys:
    """What an issuer needs to know: the active private JWK, the next one and when it activates."""

    active: Jwk = field(repr=False)
    next: Jwk | None = field(default=None, repr=False)
    next_activates_at: datetime | None = None
    token_lifetime: timedelta | None = None
    publish_ahead: timedelta | None = None
    issuer: str | None = None
    """The keyset's ``issuer`` setting: the ``iss`` of tokens whose claims carry none."""


def signing_keys_of(keyset: Keyset, policy: Policy, where: str, issuer: str = "") -> SigningKeys:
    """The schedule of a keyset as readers see it: its active key and its successor."""
    active = keyset.active
    if active is None:
        raise KeyrotdError(
            f"keyset {keyset.name} has no active key ({where})",
            "start `keyrotd run`, or run `keyrotd rotate` once",
        )
    successor = keyset.successor
    return SigningKeys(
        active=active.private(),
        next=successor.private() if successor else None,
        next_activates_at=successor.activates_at if successor else None,
        token_lifetime=policy.token_lifetime,
        publish_ahead=policy.publish_ahead,
        issuer=issuer or None,
    )


def signing_key_body(schedule: SigningKeys) -> dict[str, object]:
    """The JSON object of a ``signing-key`` response (durations in whole seconds)."""
    return {
        "active": dict(schedule.active),
        "next": None if schedule.next is None else dict(schedule.next),
        "next_activates_at": None
        if schedule.next is None or schedule.next_activates_at is None
        else rfc3339(schedule.next_activates_at),
        "token_lifetime": _whole_seconds(schedule.token_lifetime),
        "publish_ahead": _whole_seconds(schedule.publish_ahead),
        "issuer": schedule.issuer,
    }


def parse_signing_key(data: object) -> SigningKeys:
    """Validate the endpoint's JSON; any problem is a ``ValueError`` saying which member."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    active = _private_jwk(data.get("active"), "active")
    upcoming = data.get("next")
    at = data.get("next_activates_at")
    if upcoming is None and at is not None:
        # next without a time: a successor awaiting confirmation (docs/guarantees.md), held
        raise ValueError("next_activates_at is set but next is null (both, or next alone)")
    return SigningKeys(
        active=active,
        next=None if upcoming is None else _private_jwk(upcoming, "next"),
        next_activates_at=None if at is None else _timestamp(at),
        token_lifetime=_optional_seconds(data.get("token_lifetime"), "token_lifetime"),
        # whole seconds rounded down: a sub-second publish_ahead arrives as 0
        publish_ahead=_optional_seconds(data.get("publish_ahead"), "publish_ahead", zero=True),
        issuer=_optional_issuer(data.get("issuer")),
    )


def _optional_issuer(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise ValueError("issuer is not a non-empty string or null")


def _whole_seconds(value: timedelta | None) -> int | None:
    # rounded down: integer decoders (Go, serde) refuse 3600.0
    return None if value is None else math.floor(value.total_seconds())


def _private_jwk(value: object, member: str) -> Jwk:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{member} is not a JWK")
    if not value.get("kid") or value.get("alg") not in ALGORITHMS or "d" not in value:
        raise ValueError(f"{member} is not a private JWK with kid and a supported alg")
    return value


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("next_activates_at is not an RFC 3339 string")
    return utc(datetime.fromisoformat(value))


def _optional_seconds(value: object, member: str, *, zero: bool = False) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{member} is not a positive number of seconds")
    if value == 0 and not zero:
        raise ValueError(f"{member} is not a positive number of seconds")
    return timedelta(seconds=value)
