"""What the keyset knows of a token's kid: unknown, revoked, expired, or a key in the JWKS.

The failing cases raise the cause with the key's times and what they mean; for a valid token,
:func:`explain_valid` says which key signed it, with a hint only where the issuer is off schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

from keyrotd.durations import format_duration
from keyrotd.inspection.values import (
    claim_time,
    iso_or,
    seconds,
    shown,
    span,
    span_seconds,
    when,
)
from keyrotd.inspection.verdict import (
    EXPIRED_KEY,
    REVOKED_KEY,
    UNKNOWN_KEY,
    KeySource,
    KnownKey,
    fail,
)
from keyrotd.model import HISTORY_LIMIT, Key, KeyState
from keyrotd.tokens import Compact


def check_key(kid: str, known: KnownKey | None, compact: Compact, keys: KeySource) -> KnownKey:
    """The key that can verify the token, or the cause: unknown, revoked or expired key."""
    if known is None:
        _unknown(kid, keys)
    record = known.record
    if record is not None and record.state is KeyState.REVOKED:
        _revoked(record, compact.claims)
    if record is not None and record.state is KeyState.EXPIRED:
        _expired(record, compact.claims, keys)
    return known


def _unknown(kid: str, keys: KeySource) -> NoReturn:
    if keys.jwks_only:
        fail(
            UNKNOWN_KEY,
            f"kid {shown(kid)} is not in {keys.description}",
            "a JWKS keeps no history, so a revoked or expired key looks the same as one never "
            "issued there: run `keyrotd inspect --keyset NAME` beside the storage to tell them "
            "apart; otherwise the token comes from another issuer",
        )
    other = keys.elsewhere.get(kid)
    if other is not None:
        fail(
            UNKNOWN_KEY,
            f"kid {shown(kid)} was never issued by {keys.description}, but keyset {other} "
            "issued it",
            f"the verifier or the issuer uses the wrong keyset: tokens of keyset {other} verify "
            f"against /keysets/{other}/jwks.json",
        )
    if not keys.keys:
        why = f"{keys.description} has no keys yet"
    elif keys.history_full:
        why = f"{keys.description} has no record of it (its history keeps the last {HISTORY_LIMIT})"
    else:
        why = f"it was never issued by {keys.description}"
    fail(
        UNKNOWN_KEY,
        f"kid {shown(kid)} is unknown: {why}",
        "the token was signed by another issuer, or by a keyrotd with other storage: check where "
        "the issuer gets its signing key (and --keyset)",
    )


def _revoked(record: Key, claims: Mapping[str, Any]) -> NoReturn:
    revoked_at = record.revoked_at
    issued = claim_time(claims, "iat")
    detail = f"kid {record.kid} was revoked at {iso_or(revoked_at)}"
    if issued is not None and revoked_at is not None and issued > revoked_at:
        fail(
            REVOKED_KEY,
            f"{detail}; the token was issued {span(issued - revoked_at)} after that",
            "the issuer kept signing with a revoked key: make it fetch the current signing key "
            "(restart it, and check that its refresh reaches storage or the daemon)",
        )
    fail(
        REVOKED_KEY,
        detail,
        "tokens signed with a revoked key are refused on purpose: the holder needs a new token, "
        "which the issuer signs with the current key",
    )


def _expired(record: Key, claims: Mapping[str, Any], keys: KeySource) -> NoReturn:
    retired_at, removed_at = record.retired_at, record.expires_at
    detail = (
        f"signed with key {record.kid}, retired at {iso_or(retired_at)} and removed from the "
        f"JWKS at {iso_or(removed_at)}"
    )
    issued, expires = claim_time(claims, "iat"), claim_time(claims, "exp")
    lifetime = f" ({format_duration(keys.token_lifetime)})" if keys.token_lifetime else ""
    if issued is not None and retired_at is not None and issued > retired_at:
        hint = (
            f"the issuer used a key it should have dropped: it signed this token "
            f"{span(issued - retired_at)} after the key retired; make it refresh its signing key"
        )
    elif expires is not None and removed_at is not None and expires + keys.clock_skew > removed_at:
        hint = (
            f"the token outlived its key: it was valid until {iso_or(expires)}, after the key left "
            f"the JWKS, so its lifetime was above the keyset's token_lifetime{lifetime}; the "
            "issuer must not mint longer tokens"
        )
    else:
        hint = "the token had expired before its key left the JWKS: the holder needs a new token"
    fail(EXPIRED_KEY, detail, hint)


# -- a valid token ------------------------------------------------------------------------------


def explain_valid(
    compact: Compact, known: KnownKey, keys: KeySource, now: datetime
) -> tuple[str, str]:
    claims, record = compact.claims, known.record
    kid = shown(known.kid)
    expiry = _expiry(claims, now)
    if record is None:
        return f"signed by {kid} (in {keys.description}); {expiry}", ""
    state = record.state.value
    head = f"signed by {kid} ({state}) of {keys.description}"
    issued = claim_time(claims, "iat")
    hint = ""  # a valid token of the key that should sign it: nothing to fix
    if record.state is KeyState.PENDING:
        return (
            f"{head}: it is not yet the signing key (it activates at "
            f"{iso_or(record.activates_at)}); {expiry}",
            "the issuer signs with a key before its time: check the issuer's clock, and that it "
            "follows the schedule (keyrotd.client.Issuer does); verifiers whose JWKS is older "
            f"than {iso_or(record.created_at)}, when the key was published, reject this token",
        )
    if record.state is KeyState.RETIRED:
        retired, until = iso_or(record.retired_at), iso_or(record.expires_at)
        head += f": retired at {retired}, in the JWKS until {until}"
        if issued is not None and record.retired_at is not None and issued > record.retired_at:
            hint = (
                f"the issuer signed it {span(issued - record.retired_at)} after the key retired: "
                "it holds a stale key; make it refresh its signing key"
            )
    else:
        head += ": the current signing key"
    return f"{head}; {expiry}{_long_lifetime(claims, keys)}", hint


def _expiry(claims: Mapping[str, Any], now: datetime) -> str:
    exp = seconds(claims.get("exp"))
    if exp is None:
        return "the token has no exp: it never expires"
    left = exp - now.timestamp()
    if left >= 0:
        return f"the token expires at {when(exp)} (in {span_seconds(left)})"
    return f"the token expired at {when(exp)} ({span_seconds(-left)} ago, within the clock_skew)"


def _long_lifetime(claims: Mapping[str, Any], keys: KeySource) -> str:
    exp, iat = seconds(claims.get("exp")), seconds(claims.get("iat"))
    limit = keys.token_lifetime
    if exp is None or iat is None or limit is None or exp - iat <= limit.total_seconds():
        return ""
    return (
        f"; its lifetime ({span_seconds(exp - iat)}) is above the keyset's token_lifetime "
        f"({format_duration(limit)}): its key can leave the JWKS before it expires"
    )
