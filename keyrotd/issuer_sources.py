"""Behind the Issuer: the keys it holds, its two sources (storage, a daemon), its durations."""

from __future__ import annotations

import functools
import math
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from keyrotd.custody.interface import CustodySigner
from keyrotd.errors import ConfigError, KeyrotdError, TokenError, UsageError
from keyrotd.fetching import Endpoint, get_json
from keyrotd.model import Jwk
from keyrotd.signing_key_format import SigningKeys, parse_signing_key, signing_keys_of
from keyrotd.times import Clock
from keyrotd.tokens import import_key

if TYPE_CHECKING:
    from keyrotd.config import KeysetSettings

DEFAULT_REFRESH: Final = timedelta(seconds=30)
SHORTEST_REFRESH: Final = timedelta(seconds=0.1)
"""The background refresh runs at most this often, whatever ``publish_ahead``."""
_ECDSA_DIGESTS: Final[dict[str, hashes.HashAlgorithm]] = {
    "ES256": hashes.SHA256(),
    "ES384": hashes.SHA384(),
    "ES512": hashes.SHA512(),
}


@dataclass(frozen=True)
class Signer:
    """One private JWK and its imported key; neither shows in ``repr``."""

    kid: str
    alg: str
    jwk: Jwk = field(repr=False)
    key: Key = field(repr=False)

    @classmethod
    def of(cls, jwk: Jwk) -> Signer:
        return cls(jwk["kid"], jwk["alg"], jwk, import_key(jwk, jwk["alg"]))

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of ``signing_input`` (JOSE's format)."""
        return self._sign(signing_input)

    @functools.cached_property
    def _sign(self) -> Callable[[bytes], bytes]:
        """ES*: cryptography's signature and r‖s made here, the key checked once (the signing
        API's hot path, benchmarks/sign.py); the other algorithms through joserfc."""
        digest = _ECDSA_DIGESTS.get(self.alg)
        if digest is None:
            algorithm = JWSRegistry.algorithms[self.alg]
            return functools.partial(algorithm.sign, key=self.key)
        private = self.key.get_op_key("sign")
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise KeyrotdError(f"key {self.kid} is not an EC private key")
        ecdsa = ec.ECDSA(digest)
        size = (private.curve.key_size + 7) // 8

        def sign(signing_input: bytes) -> bytes:
            r, s = decode_dss_signature(private.sign(signing_input, ecdsa))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")

        return sign


@dataclass(frozen=True)
class Held:
    """A schedule with its keys imported, ready to sign from any thread."""

    active: Signer
    next: Signer | None
    next_activates_at: datetime | None
    token_lifetime: timedelta | None
    fetched_at: datetime
    issuer: str | None = None

    @classmethod
    def of(cls, schedule: SigningKeys, fetched_at: datetime) -> Held:
        return cls(
            active=Signer.of(schedule.active),
            next=Signer.of(schedule.next) if schedule.next is not None else None,
            next_activates_at=schedule.next_activates_at,
            token_lifetime=schedule.token_lifetime,
            fetched_at=fetched_at,
            issuer=schedule.issuer,
        )

    def signer(self, now: datetime) -> Signer:
        due = self.next_activates_at is not None and now >= self.next_activates_at
        return self.next if self.next is not None and due else self.active

    def switch_at(self, now: datetime) -> datetime | None:
        """When :meth:`signer` will change, from what is held; ``None`` when no change is known
        (no successor, one awaiting confirmation, or the switch already made)."""
        at = self.next_activates_at
        return at if self.next is not None and at is not None and now < at else None


@dataclass(frozen=True)
class StorageSource:
    """``Issuer.from_config``'s source: read the schedule from storage, and release it. For a
    keyset in custody there is no schedule of private keys: ``custody_signer`` is the signer of
    the key active at a given time, read from storage (the custody signs)."""

    fetch: Callable[[], SigningKeys]
    where: str
    close: Callable[[], None]
    custody_signer: Callable[[datetime], CustodySigner] | None = None
    settings: KeysetSettings | None = None


def storage_source(
    path: str | os.PathLike[str] | None,
    keyset: str | None,
    clock: Clock,
    environ: Mapping[str, str] | None,
) -> StorageSource:
    """The keyset (default: the first one) on the configured storage: ``path`` as ``--config``."""
    from keyrotd.config import load_settings
    from keyrotd.storage import open_storage
    from keyrotd.storage.registry import require_store
    from keyrotd.writer import KeysetSpec, KeysetWriter

    settings = load_settings(None if path is None else config_file(path), environ)
    chosen = settings.keyset(keyset)
    spec = KeysetSpec.from_settings(chosen)
    require_store(settings.storage, settings.source)
    storage = open_storage(settings.storage)
    manager = KeysetWriter(storage, spec, clock=clock)
    where = storage.location(spec.name)

    def fetch() -> SigningKeys:
        return signing_keys_of(manager.view(), spec.policy, where, chosen.issuer)

    if spec.custody == "storage":
        return StorageSource(fetch, where, storage.close, settings=chosen)
    from keyrotd.custody import open_custody

    custody = open_custody(settings, spec.custody)

    def custody_signer(now: datetime) -> CustodySigner:
        active = manager.view(now).active
        if active is None or active.handle is None or not active.holds_private:
            raise KeyrotdError(f"keyset {spec.name} has no active key ({where})")
        return CustodySigner(active.kid, active.alg, active.handle, custody)

    return StorageSource(fetch, where, storage.close, custody_signer, chosen)


def signing_key_endpoint(
    url: str, keyset: str | None, ca_file: str | os.PathLike[str] | None
) -> Endpoint:
    """The daemon's ``/keysets/{keyset}/signing-key``, or ``/signing-key`` without a keyset."""
    path = (
        "/signing-key"
        if keyset is None
        else f"/keysets/{urllib.parse.quote(keyset, safe='')}/signing-key"
    )
    return Endpoint.of_daemon(url, path, ca_file)


def config_file(path: str | os.PathLike[str]) -> str:
    """``path`` if something is there; the Python API's own message when nothing is."""
    name = os.fspath(path)
    if not os.path.lexists(name):
        where = "" if os.path.isabs(name) else f" in {os.getcwd()}"
        raise ConfigError(
            f'Issuer.from_config: no configuration file "{name}"{where}',
            "pass the path of the file the daemon runs with, or call Issuer.from_config() to "
            "find it as the CLI does ($KEYROTD_CONFIG, else ./keyrotd.toml, else the built-in "
            "defaults)",
        )
    return name


def background_refresh_interval(
    given: float | timedelta | None, publish_ahead: timedelta | None
) -> timedelta:
    if given is not None:
        return duration(given, "refresh_interval", shortest=0.01)
    if publish_ahead is None:
        return DEFAULT_REFRESH
    return min(max(publish_ahead / 4, SHORTEST_REFRESH), DEFAULT_REFRESH)


def duration(value: float | timedelta, name: str, shortest: float = 1.0) -> timedelta:
    """Seconds or a timedelta, at least ``shortest`` seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TokenError(f"{name} {value!r} is not a duration", "give seconds or a timedelta")
    if not math.isfinite(seconds) or seconds < shortest:
        raise TokenError(f"{name} {value!r} is too short", f"give at least {shortest:g}s")
    return timedelta(seconds=seconds)


def bearer_token(token: str) -> str:
    """The token as given less surrounding whitespace (as read from a file); refused, without
    showing it, when it holds what no HTTP header can carry (a line break, a control character,
    a space inside)."""
    if not isinstance(token, str):
        raise UsageError("token= is not a string", "pass the token as text")
    stripped = token.strip()
    if not stripped or not all("!" <= char <= "~" for char in stripped):
        raise UsageError(
            "the token is empty or holds a character a bearer token cannot (a line break, a "
            "space or a control character inside it); it is not shown here",
            "pass the token exactly as `keyrotd client add` printed it, or the content of "
            "server.admin_token_file",
        )
    return stripped


def fetch_signing_key(endpoint: Endpoint, token: str, timeout: float) -> SigningKeys:
    """``GET endpoint`` with the bearer token, parsed into a :class:`SigningKeys`."""
    data = get_json(
        endpoint,
        timeout=timeout,
        what="signing-key response",
        headers={"Authorization": f"Bearer {token}"},
        status_hints={
            401: "check the token: the daemon's server.admin_token_file, or one that `keyrotd "
            "client add` printed for a client still in server.admin_clients_file "
            "(keyrotd client list)",
            403: "give this client the signing-key scope for the keyset (keyrotd client add "
            "NAME --scope signing-key:KEYSET)",
            404: "check the keyset name, that the daemon sets server.admin_token_file or "
            "admin_clients_file, and that the URL is server.admin_listen when that is set",
            409: "the keyset keeps its keys in custody and hands none out: use "
            "Issuer.from_url(..., remote=True) with a client of scope sign:KEYSET, and keyrotd "
            "signs every token",
        },
    )
    try:
        return parse_signing_key(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise KeyrotdError(
            f"{endpoint}: not a signing-key response ({exc})", "check that the URL is the daemon's"
        ) from None
