"""The values keyrotd stores: keys, keysets and the rotation policy.

A keyset document holds the live keys (pending, active, retired: the ones in the JWKS) and a
bounded history of keys that left it (expired, revoked), which keeps kid and times but no key
material, so that ``keyrotd inspect`` can still explain a token signed with them.

Everything here is immutable. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

import pydantic

from keyrotd.errors import CorruptDocumentError

FORMAT: Final = "keyrotd/keyset/v1"
HISTORY_LIMIT: Final = 50
"""How many expired or revoked keys a keyset remembers (kid, algorithm, times; no key material)."""

ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)

KEYSET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Keyset names: they become file names, secret names and URL path segments."""

Jwk = Mapping[str, str]


class KeyState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    EXPIRED = "expired"
    REVOKED = "revoked"


LIVE_STATES: Final = frozenset({KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED})


@dataclass(frozen=True)
class Policy:
    """The timing rules of one keyset (see README.md, Configuration).

    With ``observe`` set, a successor is published *awaiting confirmation* (docs/guarantees.md):
    it activates only once every URL was seen serving it, ``verifier_cache`` at least after.
    """

    rotation_period: timedelta
    publish_ahead: timedelta
    token_lifetime: timedelta
    clock_skew: timedelta
    observe: tuple[str, ...] = ()
    verifier_cache: timedelta = timedelta(0)

    @property
    def retention(self) -> timedelta:
        """How long a key stays in the JWKS after it stopped signing (G3)."""
        return self.token_lifetime + self.clock_skew


@dataclass(frozen=True)
class UrlProgress:
    """What one observed URL served of an awaiting successor."""

    url: str
    first_seen: datetime | None = None
    """When a poll first received the kid from this URL."""
    lacking_since: datetime | None = None
    """Since when its answers lack the kid (None: the last poll received it)."""


@dataclass(frozen=True)
class Propagation:
    """An awaiting successor's progress (docs/guarantees.md), kept in the document so that a
    restart, the CLI and every replica see the same: the schedule it would have had by time
    alone, each URL's progress, the largest ``max-age`` of an answer lacking it, and, once every
    URL of one poll served it, when that poll was received (``confirmed_at``, T)."""

    scheduled_at: datetime
    urls: tuple[UrlProgress, ...]
    max_age_lacking: timedelta = timedelta(0)
    confirmed_at: datetime | None = None

    @property
    def lacking(self) -> tuple[str, ...]:
        return tuple(u.url for u in self.urls if u.lacking_since is not None)


@dataclass(frozen=True)
class Key:
    """One signing key and its lifecycle times.

    ``activates_at`` is the scheduled activation of a pending key and the actual activation of an
    active or retired one; it is None for a successor awaiting confirmation (``propagation``),
    whose activation time is not announced until it is confirmed. ``expires_at`` is when a
    retired key leaves the JWKS. The private JWK is held by pending and active keys only and never
    appears in ``repr``.
    """

    kid: str
    alg: str
    state: KeyState
    created_at: datetime
    activates_at: datetime | None = None
    retired_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    public_jwk: Jwk | None = None
    private_jwk: Jwk | None = field(default=None, repr=False)
    propagation: Propagation | None = None
    handle: str | None = None
    """Where the private half lives when the keyset's custody is not ``storage``: the PKCS#11
    object's id or the KMS key's ARN (docs/issuers.md). Kept after the key stops signing, when
    the private half itself is destroyed, so that ``status`` can say what became of it."""

    @property
    def in_custody(self) -> bool:
        """The private half lives in a custody (PKCS#11, KMS), not in the document."""
        return self.handle is not None

    @property
    def holds_private(self) -> bool:
        """A private half exists for it: in the document, or in custody while it may sign."""
        if self.private_jwk is not None:
            return True
        return self.handle is not None and self.state in (KeyState.PENDING, KeyState.ACTIVE)

    @property
    def awaiting(self) -> bool:
        """A pending successor whose activation time is not confirmed yet."""
        return self.state is KeyState.PENDING and self.activates_at is None

    @property
    def scheduled_at(self) -> datetime | None:
        """When it would activate by time alone (its ``activates_at`` without observation)."""
        if self.propagation is not None:
            return self.propagation.scheduled_at
        return self.activates_at

    @property
    def in_jwks(self) -> bool:
        return self.state in LIVE_STATES

    def public(self) -> Jwk:
        """The published JWK: public members plus ``kid``, ``alg`` and ``use`` (G7)."""
        if self.public_jwk is None:
            raise ValueError(f"key {self.kid} has no public JWK (state {self.state})")
        return {**self.public_jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def private(self) -> Jwk:
        if self.private_jwk is None:
            raise ValueError(f"key {self.kid} holds no private key (state {self.state})")
        return {**self.private_jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def replace(
        self,
        *,
        state: KeyState | None = None,
        activates_at: datetime | None = None,
        retired_at: datetime | None = None,
        expires_at: datetime | None = None,
        revoked_at: datetime | None = None,
        drop_private: bool = False,
        drop_public: bool = False,
    ) -> Key:
        return dataclasses.replace(
            self,
            state=state or self.state,
            activates_at=activates_at or self.activates_at,
            retired_at=retired_at or self.retired_at,
            expires_at=expires_at or self.expires_at,
            revoked_at=revoked_at or self.revoked_at,
            private_jwk=None if drop_private else self.private_jwk,
            public_jwk=None if drop_public else self.public_jwk,
        )


@dataclass(frozen=True)
class Keyset:
    """One keyset document: live keys (in the JWKS) and the bounded history."""

    name: str
    keys: tuple[Key, ...] = ()
    history: tuple[Key, ...] = ()
    updated_at: datetime | None = None
    format: str = FORMAT
    revision: int = 0
    """Raised by one on every write (G8: revisions only go forward); 0 in a document written
    before keyrotd kept it."""

    @property
    def active(self) -> Key | None:
        return next((k for k in self.keys if k.state is KeyState.ACTIVE), None)

    @property
    def pending(self) -> tuple[Key, ...]:
        return tuple(k for k in self.keys if k.state is KeyState.PENDING)

    @property
    def retired(self) -> tuple[Key, ...]:
        return tuple(k for k in self.keys if k.state is KeyState.RETIRED)

    @property
    def successor(self) -> Key | None:
        """The next signing key: the earliest scheduled pending key, else one awaiting
        confirmation (no ``activates_at`` until confirmed: issuers hold it, never switch to it)."""
        upcoming = sorted(
            (k for k in self.keys if k.state is KeyState.PENDING and k.holds_private),
            key=lambda k: (k.activates_at is None, k.activates_at or k.created_at, k.created_at),
        )
        return upcoming[0] if upcoming else None

    def find(self, kid: str) -> Key | None:
        """The live key or history entry with this kid."""
        return next((k for k in (*self.keys, *self.history) if k.kid == kid), None)

    def jwks(self) -> dict[str, list[Jwk]]:
        """The public JWKS of the live keys: active first, then pending, then retired (G5, G7)."""
        order = {KeyState.ACTIVE: 0, KeyState.PENDING: 1, KeyState.RETIRED: 2}
        live = sorted(self.keys, key=lambda k: (order[k.state], -k.created_at.timestamp()))
        return {"keys": [k.public() for k in live]}


_ADAPTER: Final = pydantic.TypeAdapter(Keyset)


def utc(value: datetime) -> datetime:
    """Normalise to an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_json(keyset: Keyset) -> bytes:
    return _ADAPTER.dump_json(keyset)


def from_json(data: bytes, location: str) -> Keyset:
    """Parse a stored document; anything unreadable is a :class:`CorruptDocumentError` naming it."""
    try:
        keyset = _ADAPTER.validate_json(data, strict=False)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise CorruptDocumentError(
            f"{location}: not a valid keyrotd keyset document ({where}: {first['msg']})",
            "restore it from a backup or move it aside; keyrotd never overwrites it",
        ) from None
    if keyset.format != FORMAT:
        raise CorruptDocumentError(
            f"{location}: unsupported document format {keyset.format!r}",
            f"this keyrotd reads {FORMAT!r}; use the keyrotd version that wrote it",
        )
    return keyset
