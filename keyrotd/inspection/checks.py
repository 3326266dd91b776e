"""The checks of ``keyrotd inspect``, as a pure function of (token, known keys, now).

They run in the order docs/cli.md gives and the first failure is the cause:
incorrect format, unknown key, revoked key, expired key, signature mismatch, expired token,
audience mismatch, issuer mismatch. Each cause comes with a detail (what is wrong, with the times
that matter) and a hint (what the operator can do about it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from keyrotd.durations import format_duration
from keyrotd.inspection.lookup import check_key, explain_valid
from keyrotd.inspection.values import as_json, seconds, shown, span_seconds, when
from keyrotd.inspection.verdict import (
    AUDIENCE_MISMATCH,
    EXPIRED_TOKEN,
    INCORRECT_FORMAT,
    ISSUER_MISMATCH,
    SIGNATURE_MISMATCH,
    Invalid,
    KeySource,
    KnownKey,
    Verdict,
    fail,
)
from keyrotd.model import ALGORITHMS
from keyrotd.tokens import (
    Compact,
    KeyImportError,
    MalformedTokenError,
    import_key,
    parse_compact,
    verify_signature,
)

TIME_CLAIMS: Final = ("exp", "nbf", "iat")
STRING_CLAIMS: Final = ("iss", "sub", "jti")


def inspect_token(
    token: str,
    keys: KeySource,
    now: datetime,
    audience: str | None = None,
    issuer: str | None = None,
) -> Verdict:
    """Check ``token`` in the contract's order; the first failing check is the verdict."""
    compact: Compact | None = None
    known: KnownKey | None = None
    cause: str | None = None
    try:
        compact = _decode(token)
        _check_header(compact.header)
        _check_claims(compact.claims)
        kid: str = compact.header["kid"]
        known = keys.keys.get(kid)
        verifier = check_key(kid, known, compact, keys)
        _check_signature(compact, verifier)
        _check_times(compact.claims, now, keys.clock_skew)
        _check_audience(compact.claims, audience)
        _check_issuer(compact.claims, issuer)
    except Invalid as invalid:
        cause, detail, hint = invalid.cause, invalid.detail, invalid.hint
    else:
        detail, hint = explain_valid(compact, verifier, keys, now)
    return Verdict(
        valid=cause is None,
        cause=cause,
        detail=detail,
        hint=hint,
        source=keys.description,
        checked_at=now,
        header=compact.header if compact else None,
        claims=compact.claims if compact else None,
        key=known,
    )


# -- format -------------------------------------------------------------------------------------

MAX_TOKEN: Final = 1024 * 1024
FORMAT_HINT: Final = (
    "pass the whole token exactly as it was sent: three base64url parts, header.payload.signature "
    "(an opaque or an encrypted five-part token cannot be inspected)"
)


_PASTED_HEADER: Final = re.compile(r"\s*(?:authorization\s*:\s*)?bearer\s+", re.IGNORECASE)
"""What a pasted ``Authorization: Bearer`` line (or a bare ``Bearer``) puts before the token."""


def _decode(token: str) -> Compact:
    text = _PASTED_HEADER.sub("", token, count=1).strip()
    if not text:
        fail(INCORRECT_FORMAT, "the token is empty", "pass the token as the argument, or on stdin")
    if len(text) > MAX_TOKEN:
        fail(INCORRECT_FORMAT, "the token is longer than 1 MiB", FORMAT_HINT)
    try:
        compact = parse_compact(text)
    except MalformedTokenError as exc:
        fail(INCORRECT_FORMAT, f"not a compact JWS: {exc}", FORMAT_HINT)
    return compact


def _check_header(header: Mapping[str, Any]) -> None:
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not alg:
        fail(INCORRECT_FORMAT, "the header has no alg", FORMAT_HINT)
    if alg.lower() == "none":
        fail(
            INCORRECT_FORMAT,
            'the header says alg "none": the token is not signed',
            "refuse it: keyrotd issuers never send unsigned tokens; if one of your services "
            "minted it, fix its JWT library configuration",
        )
    if not isinstance(kid, str) or not kid:
        fail(
            INCORRECT_FORMAT,
            "the header has no kid",
            "verifiers pick the key by kid: the issuer must set it (keyrotd.client.Issuer does)",
        )
    if "crit" in header:
        fail(
            INCORRECT_FORMAT,
            f"the header marks extensions as critical ({as_json(header['crit'])})",
            "keyrotd issuers use no JWS extensions: the token was minted elsewhere",
        )


def _check_claims(claims: Mapping[str, Any]) -> None:
    hint = "the issuer writes malformed claims: fix it (RFC 7519 section 4.1)"
    for name in TIME_CLAIMS:
        if name in claims and seconds(claims[name]) is None:
            detail = f"claim {name} is {as_json(claims[name])}, not a number of seconds"
            fail(INCORRECT_FORMAT, detail, hint)
    for name in STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            fail(INCORRECT_FORMAT, f"claim {name} is {as_json(claims[name])}, not a string", hint)
    aud = claims.get("aud")
    if "aud" in claims and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        fail(INCORRECT_FORMAT, f"claim aud is {as_json(aud)}, not a string or strings", hint)


# -- signature ----------------------------------------------------------------------------------


def _check_signature(compact: Compact, known: KnownKey) -> None:
    alg: str = compact.header["alg"]
    kid = shown(known.kid)
    if known.alg is not None and alg != known.alg:
        fail(
            SIGNATURE_MISMATCH,
            f"the header says alg {shown(alg)} but key {kid} is for {shown(known.alg)}",
            "the token was altered (an algorithm swap) or the issuer is misconfigured: tokens "
            "from keyrotd issuers carry their key's alg",
        )
    if alg not in ALGORITHMS:
        fail(
            SIGNATURE_MISMATCH,
            f"alg {shown(alg)} is not one keyrotd signs with ({', '.join(ALGORITHMS)})",
            "the token was minted elsewhere, or altered",
        )
    assert known.jwk is not None  # keys out of the JWKS were refused by check_key
    try:
        key = import_key(known.jwk, alg)
    except KeyImportError as exc:
        fail(
            SIGNATURE_MISMATCH,
            f"key {kid} cannot verify {alg}: {exc.message}",
            f"the entry for {kid} in {'the JWKS' if known.record is None else 'the keyset'} is "
            "not a key for that algorithm",
        )
    if not verify_signature(compact.signing_input, compact.signature, alg, key):
        fail(
            SIGNATURE_MISMATCH,
            f"the signature does not match key {kid}",
            "the header or the claims were changed after signing, or another key signed under "
            f"this kid: get a new token; if it recurs, the issuer holds a key that is not {kid}",
        )


# -- claims -------------------------------------------------------------------------------------


def _check_times(claims: Mapping[str, Any], now: datetime, skew: timedelta) -> None:
    current, leeway = now.timestamp(), skew.total_seconds()
    beyond = f"beyond the clock_skew of {format_duration(skew)}"
    exp, nbf, iat = (seconds(claims.get(name)) for name in TIME_CLAIMS)
    if exp is not None and exp + leeway <= current:
        fail(
            EXPIRED_TOKEN,
            f"the token expired at {when(exp)}, {span_seconds(current - exp)} ago, {beyond}",
            "the holder needs a new token; if it was issued moments ago, the issuer's or this "
            "machine's clock is wrong (check NTP)",
        )
    if nbf is not None and nbf > current + leeway:
        fail(
            EXPIRED_TOKEN,
            f"not yet valid: its nbf is {when(nbf)}, {span_seconds(nbf - current)} from now, "
            f"{beyond}",
            "it is used before its nbf: the issuer's clock runs ahead of this machine's (check "
            "NTP on both), or the issuer post-dates its tokens",
        )
    if iat is not None and iat > current + leeway:
        fail(
            EXPIRED_TOKEN,
            f"not yet valid: it was issued at {when(iat)}, {span_seconds(iat - current)} from "
            f"now, {beyond}",
            "the issuer's clock runs ahead of this machine's: check NTP on both",
        )


def _check_audience(claims: Mapping[str, Any], audience: str | None) -> None:
    if audience is None:
        return
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else (aud or [])
    if audience not in audiences:
        has = "the token has no aud claim" if aud is None else f"aud is {shown(aud)}"
        fail(
            AUDIENCE_MISMATCH,
            f"{has}; expected {shown(audience)}",
            f"the token was issued for another service: the issuer must set aud to "
            f"{shown(audience)}, or this verifier expects the wrong audience",
        )


def _check_issuer(claims: Mapping[str, Any], issuer: str | None) -> None:
    if issuer is None or claims.get("iss") == issuer:
        return
    iss = claims.get("iss")
    has = "the token has no iss claim" if iss is None else f"iss is {shown(iss)}"
    fail(
        ISSUER_MISMATCH,
        f"{has}; expected {shown(issuer)}",
        "the token comes from another issuer, or the issuer's name differs from the one verifiers "
        "expect (compare with the keyset's issuer setting)",
    )
