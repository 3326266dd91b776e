"""What ``keyrotd inspect`` says: the causes, the keys it knows, and the verdict.

The causes are the words docs/cli.md gives, in the order they are checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, NoReturn

from keyrotd.model import HISTORY_LIMIT, Key, Keyset, Policy
from keyrotd.times import rfc3339

INCORRECT_FORMAT: Final = "incorrect format"
UNKNOWN_KEY: Final = "unknown key"
REVOKED_KEY: Final = "revoked key"
EXPIRED_KEY: Final = "expired key"
SIGNATURE_MISMATCH: Final = "signature mismatch"
EXPIRED_TOKEN: Final = "expired token"  # noqa: S105 (a cause, not a secret)
AUDIENCE_MISMATCH: Final = "audience mismatch"
ISSUER_MISMATCH: Final = "issuer mismatch"
CAUSES: Final = (
    INCORRECT_FORMAT,
    UNKNOWN_KEY,
    REVOKED_KEY,
    EXPIRED_KEY,
    SIGNATURE_MISMATCH,
    EXPIRED_TOKEN,
    AUDIENCE_MISMATCH,
    ISSUER_MISMATCH,
)
DEFAULT_SKEW: Final = timedelta(minutes=5)
"""The leeway with ``--jwks-url``, where no keyset says its ``clock_skew``."""


@dataclass(frozen=True)
class KnownKey:
    """A key known under a kid: a keyset's record (``record``) or an entry of a JWKS."""

    kid: str
    alg: str | None
    jwk: Mapping[str, Any] | None = field(default=None, repr=False)
    """The public JWK; ``None`` once the key left the JWKS."""
    record: Key | None = None

    @property
    def state(self) -> str | None:
        return self.record.state.value if self.record else None

    def report(self) -> dict[str, object]:
        """kid, alg, state and times: never key material."""
        if self.record is None:
            kty = self.jwk.get("kty") if self.jwk else None
            return {"kid": self.kid, "alg": self.alg, "kty": kty, "state": None}
        return lifecycle_report(self.record)


def lifecycle_report(key: Key) -> dict[str, object]:
    """kid, alg, state and the lifecycle times in RFC 3339 (None when unset): no key material."""
    report: dict[str, object] = {"kid": key.kid, "alg": key.alg, "state": key.state.value}
    for name in ("created_at", "activates_at", "retired_at", "expires_at", "revoked_at"):
        value = getattr(key, name)
        report[name] = rfc3339(value) if value else None
    return report


@dataclass(frozen=True)
class KeySource:
    """What the verifier side knows: keys by kid, the leeway and where they come from."""

    description: str
    keys: Mapping[str, KnownKey]
    clock_skew: timedelta
    jwks_only: bool = False
    """A JWKS keeps no history: revoked and expired keys look unknown."""
    token_lifetime: timedelta | None = None
    history_full: bool = False
    elsewhere: Mapping[str, str] = field(default_factory=dict)
    """kid -> the other keyset of the configuration that issued it."""

    @classmethod
    def of_keyset(
        cls, keyset: Keyset, policy: Policy, elsewhere: Mapping[str, str] | None = None
    ) -> KeySource:
        keys = {
            k.kid: KnownKey(k.kid, k.alg, k.public() if k.in_jwks else None, k)
            for k in (*keyset.history, *keyset.keys)
        }
        return cls(
            description=f"keyset {keyset.name}",
            keys=keys,
            clock_skew=policy.clock_skew,
            token_lifetime=policy.token_lifetime,
            history_full=len(keyset.history) >= HISTORY_LIMIT,
            elsewhere=elsewhere or {},
        )

    @classmethod
    def of_jwks(cls, jwks: object, url: str, clock_skew: timedelta = DEFAULT_SKEW) -> KeySource:
        """Keys of a JWKS document; raises ``ValueError`` if it is not one."""
        entries = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWKS (no list of keys)")
        keys: dict[str, KnownKey] = {}
        for jwk in entries:
            if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
                alg = jwk.get("alg")
                keys.setdefault(
                    jwk["kid"], KnownKey(jwk["kid"], alg if isinstance(alg, str) else None, jwk)
                )
        return cls(f"the JWKS at {url}", keys, clock_skew, jwks_only=True)


@dataclass(frozen=True)
class Verdict:
    """The outcome: ``cause`` is one of :data:`CAUSES`, or ``None`` for a valid token."""

    valid: bool
    cause: str | None
    detail: str
    hint: str
    """What to do about it; empty where nothing helps (a valid token of the signing key)."""
    source: str
    checked_at: datetime
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    key: KnownKey | None = None

    def as_json(self) -> dict[str, object]:
        header = self.header or {}
        return {
            "valid": self.valid,
            "cause": self.cause,
            "detail": self.detail,
            "hint": self.hint or None,
            "kid": header.get("kid"),
            "alg": header.get("alg"),
            "header": self.header,
            "claims": self.claims,
            "key_state": self.key.state if self.key else None,
            "key": self.key.report() if self.key else None,
            "source": self.source,
            "checked_at": rfc3339(self.checked_at),
        }


class Invalid(Exception):
    """The first failing check: raised by the checks, turned into the verdict."""

    def __init__(self, cause: str, detail: str, hint: str) -> None:
        super().__init__(cause)
        self.cause, self.detail, self.hint = cause, detail, hint


def fail(cause: str, detail: str, hint: str) -> NoReturn:
    raise Invalid(cause, detail, hint)
