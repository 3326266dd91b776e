"""Issuers in Python (docs/issuers.md): sign JWTs with the keyset's current key.

An :class:`Issuer` holds the signing schedule — the active private key, and the next one with its
activation time — and switches to the next key at that exact time from what it holds, without a
round trip. A background daemon thread refreshes the schedule well within ``publish_ahead``; while
storage or the daemon is unreachable it logs a warning and keeps signing with the key it holds.

Two sources::

    Issuer.from_config("keyrotd.toml", keyset="default")     # reads storage directly
    Issuer.from_url("http://127.0.0.1:8080", keyset="default", token=ADMIN_TOKEN)
    Issuer.from_url("https://keyrotd.internal:8443", token=CLIENT_TOKEN, ca_file="ca.pem")
    Issuer.from_url("unix:/run/keyrotd/admin.sock", token=CLIENT_TOKEN)
    Issuer.from_url("unix:/run/keyrotd/admin.sock", keyset="api", token=T, remote=True)

Without ``keyset=`` both take the first keyset of the daemon's configuration, as the CLI does;
``from_config()`` without a path finds the configuration as the CLI does. The URL source reads
``GET /keysets/{name}/signing-key``, or ``GET /signing-key`` without ``keyset=``, with the
token as a bearer token: the admin token, or a client's with the ``signing-key`` scope of the
keyset (``keyrotd client add NAME --scope signing-key:KEYSET``). ``https://`` trusts the system's
CAs, or only ``ca_file`` when given; ``unix:/PATH`` talks plain HTTP over the daemon's admin unix
socket (``server.admin_listen``). Redirects are not followed. Its lifetime limit comes from the
response's ``token_lifetime`` (seconds) when the daemon sends it, else from the ``token_lifetime``
argument; without either it refuses to start. ``publish_ahead`` (seconds) in the response, when
present, sets the refresh interval as for storage; else it is ``refresh_interval`` (default 30s).

With ``remote=True`` (a client with the ``sign`` scope) the issuer holds no key at all: every
``sign`` is one ``POST /keysets/{name}/sign`` (``POST /sign`` without ``keyset=``), and the daemon
sets the header, ``iat``, ``exp`` and ``iss`` (``keyrotd.signing``); its refusals raise
:class:`KeyrotdError` (:class:`TokenError` for a 400) with the daemon's reason.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self

from keyrotd.durations import format_duration
from keyrotd.errors import KeyrotdError, TokenError
from keyrotd.fetching import Endpoint, post_json
from keyrotd.issuer_sources import (
    Held,
    StorageSource,
    background_refresh_interval,
    bearer_token,
    duration,
    fetch_signing_key,
    signing_key_endpoint,
    storage_source,
)
from keyrotd.signing_key_format import SigningKeys, parse_signing_key
from keyrotd.times import Clock, utc_now
from keyrotd.tokens import sign_compact

__all__ = ["Issuer", "SigningKeys", "parse_signing_key"]

log = logging.getLogger("keyrotd.client")

ISSUER_CLAIMS: Final = frozenset({"iat", "exp", "nbf"})
"""Claims the issuer sets itself: ``lifetime=`` and ``not_before=`` control them."""


class Issuer:
    """Signs JWTs with a keyset's current key; thread-safe. Build it with ``from_config`` or
    ``from_url``; ``close()`` (or ``with``) stops the background refresh."""

    def __init__(
        self,
        fetch: Callable[[], SigningKeys],
        *,
        source: str,
        token_lifetime: timedelta | None = None,
        refresh_interval: float | timedelta | None = None,
        clock: Clock = utc_now,
        background: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``fetch`` reads the schedule (raising :class:`KeyrotdError` when it cannot); the first
        read must succeed. ``token_lifetime`` caps lifetimes when the schedule does not carry it.
        """
        self.source = source
        self._fetch = fetch
        self._clock = clock
        self._token_lifetime = token_lifetime
        self._on_close = on_close
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        first = fetch()
        self._held = self._install(first)
        self._limit()  # refuse to start without a known lifetime limit
        self.refresh_interval = background_refresh_interval(refresh_interval, first.publish_ahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._refresh_loop, name=f"keyrotd-issuer {source}", daemon=True
            )
            self._thread.start()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        keyset: str | None = None,
        *,
        refresh_interval: float | timedelta | None = None,
        clock: Clock = utc_now,
        background: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> Issuer:
        """Read the keyset (default: the first one) from storage, as configured: ``path`` as
        ``--config``; without it ``$KEYROTD_CONFIG``, else ``./keyrotd.toml``, else defaults."""
        source = storage_source(path, keyset, clock, environ)
        if source.custody_signer is not None:
            return CustodyIssuer(source, clock)
        try:
            return cls(
                source.fetch,
                source=source.where,
                refresh_interval=refresh_interval,
                clock=clock,
                background=background,
                on_close=source.close,
            )
        except BaseException:
            source.close()
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        keyset: str | None = None,
        *,
        token: str,
        ca_file: str | os.PathLike[str] | None = None,
        token_lifetime: float | timedelta | None = None,
        refresh_interval: float | timedelta | None = None,
        timeout: float = 5.0,
        clock: Clock = utc_now,
        background: bool = True,
        remote: bool = False,
    ) -> Issuer:
        """Read the schedule from a daemon's ``/keysets/{keyset}/signing-key`` endpoint, or
        without ``keyset`` from ``/signing-key`` (its first keyset). ``url`` is
        ``http(s)://HOST:PORT`` or ``unix:/PATH``; ``ca_file`` (PEM) is the CA to trust for
        ``https://``. ``remote=True``: hold no key, have the daemon sign every token."""
        if remote:
            return RemoteIssuer(sign_endpoint(url, keyset, ca_file), token, timeout, clock)
        endpoint = signing_key_endpoint(url, keyset, ca_file)
        token = bearer_token(token)
        lifetime = None if token_lifetime is None else duration(token_lifetime, "token_lifetime")
        return cls(
            lambda: fetch_signing_key(endpoint, token, timeout),
            source=str(endpoint),
            token_lifetime=lifetime,
            refresh_interval=refresh_interval,
            clock=clock,
            background=background,
        )

    # -- signing -----------------------------------------------------------------------------
    def sign(
        self,
        claims: Mapping[str, Any],
        lifetime: float | timedelta | None = None,
        *,
        not_before: bool = False,
        jti: bool = False,
    ) -> str:
        """A compact JWT of ``claims`` (not modified) plus ``iat`` and ``exp`` (``lifetime``
        seconds, at most and by default ``token_lifetime``), ``nbf`` and a random ``jti`` when
        asked, and ``iss`` from the keyset's ``issuer`` unless the claims carry one. The header
        holds ``kid``, ``alg`` and ``typ: JWT``."""
        limit = self._limit()
        seconds = limit if lifetime is None else duration(lifetime, "lifetime")
        if seconds > limit:
            raise TokenError(
                f"lifetime {format_duration(seconds)} is above the keyset's token_lifetime "
                f"({format_duration(limit)})",
                "ask for a shorter lifetime, or raise token_lifetime in the keyset's configuration",
            )
        given = ISSUER_CLAIMS & claims.keys() | ({"jti"} & claims.keys() if jti else set())
        if given:
            raise TokenError(
                f"claims already hold {', '.join(sorted(given))}, which the issuer sets",
                "leave them out: use lifetime=, not_before= and jti= instead",
            )
        now = self._clock()
        held = self._current()
        issued_at = math.floor(now.timestamp())
        payload = {**claims, "iat": issued_at, "exp": issued_at + int(seconds.total_seconds())}
        if held.issuer is not None and "iss" not in claims:
            payload["iss"] = held.issuer
        if not_before:
            payload["nbf"] = issued_at
        if jti:
            payload["jti"] = secrets.token_urlsafe(16)
        signer = held.signer(now)
        header = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
        try:
            return sign_compact(header, payload, signer.key)
        except (TypeError, ValueError) as exc:  # claims that are not JSON
            raise TokenError(f"the claims cannot be encoded: {exc}", "use JSON values") from None

    @property
    def next_activates_at(self) -> datetime | None:
        """When this issuer will switch to the next key, from the schedule it holds; ``None``
        when no switch is known (no successor, or one awaiting confirmation)."""
        return self._current().switch_at(self._clock())

    def signing_key(self) -> dict[str, str]:
        """The private JWK that signs now (``kid``, ``alg`` and ``use`` included)."""
        return dict(self._current().signer(self._clock()).jwk)

    # -- refresh -----------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read the schedule again now. On failure log a warning, keep the held keys, and
        return False."""
        with self._refreshing:
            try:
                held = self._install(self._fetch())
            except Exception as exc:  # whatever went wrong, the held keys keep signing
                current = self._current()
                age = format_duration(self._clock() - current.fetched_at)
                log.warning(
                    "issuer cannot refresh from %s (%s); still signing with the keys read %s ago",
                    self.source,
                    exc if isinstance(exc, KeyrotdError | OSError) else type(exc).__name__,
                    age,
                    extra={"event": "issuer.refresh_failed"},
                )
                return False
            with self._lock:
                self._held = held
            return True

    def close(self) -> None:
        """Stop the background refresh and release storage. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval.total_seconds()):
            self.refresh()

    def _current(self) -> Held:
        with self._lock:
            return self._held

    def _install(self, schedule: SigningKeys) -> Held:
        return Held.of(schedule, self._clock())

    def _limit(self) -> timedelta:
        known = [t for t in (self._current().token_lifetime, self._token_lifetime) if t]
        if not known:
            raise KeyrotdError(
                f"{self.source} does not say the keyset's token_lifetime",
                "pass token_lifetime= (the keyset's setting) to Issuer.from_url",
            )
        return min(known)


def sign_endpoint(url: str, keyset: str | None, ca_file: str | os.PathLike[str] | None) -> Endpoint:
    """The daemon's ``/keysets/{keyset}/sign``, or ``/sign`` without a keyset."""
    path = "/sign" if keyset is None else f"/keysets/{urllib.parse.quote(keyset, safe='')}/sign"
    return Endpoint.of_daemon(url, path, ca_file)


def claims_to_send(
    claims: Mapping[str, Any], now: datetime, *, not_before: bool, jti: bool
) -> dict[str, Any]:
    """The claims an issuer that does not sign itself sends: ``nbf`` and ``jti`` when asked, and
    none of the claims the signer sets (:class:`TokenError` naming them)."""
    given = ISSUER_CLAIMS & claims.keys() | ({"jti"} & claims.keys() if jti else set())
    if given:
        raise TokenError(
            f"claims already hold {', '.join(sorted(given))}, which the issuer sets",
            "leave them out: use lifetime=, not_before= and jti= instead",
        )
    sent: dict[str, Any] = dict(claims)
    if not_before:
        sent["nbf"] = math.floor(now.timestamp())
    if jti:
        sent["jti"] = secrets.token_urlsafe(16)
    return sent


class RemoteIssuer(Issuer):
    """``Issuer.from_url(..., remote=True)``: every token signed by the daemon (see the module
    docstring); no key, no schedule, no background thread."""

    def __init__(self, endpoint: Endpoint, token: str, timeout: float, clock: Clock) -> None:
        self.source = str(endpoint)
        self.refresh_interval = timedelta(0)
        self._endpoint = endpoint
        self._timeout = timeout
        self._clock = clock
        bearer = token.strip()
        if not bearer or any(not char.isprintable() or char.isspace() for char in bearer):
            raise KeyrotdError(
                "the token given to Issuer.from_url is empty or holds spaces or control characters",
                "pass the token exactly as `keyrotd client add` printed it",
            )
        self._headers = {"Authorization": f"Bearer {bearer}"}

    def __repr__(self) -> str:
        return f"RemoteIssuer({self.source})"

    def sign(
        self,
        claims: Mapping[str, Any],
        lifetime: float | timedelta | None = None,
        *,
        not_before: bool = False,
        jti: bool = False,
    ) -> str:
        """As :meth:`Issuer.sign`, signed by the daemon (``iat``, ``exp``, ``iss`` its own)."""
        sent = claims_to_send(claims, self._clock(), not_before=not_before, jti=jti)
        body: dict[str, Any] = {"claims": sent}
        if lifetime is not None:
            body["lifetime"] = math.floor(duration(lifetime, "lifetime").total_seconds())
        try:
            answer = post_json(
                self._endpoint,
                body,
                timeout=self._timeout,
                what="sign request",
                headers=self._headers,
                status_hints=_SIGN_HINTS,
            )
        except KeyrotdError as exc:
            if "HTTP 400" in exc.message:
                raise TokenError(exc.message, exc.hint) from None
            raise
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise KeyrotdError(f"{self.source}: not a sign answer", "check the URL")
        return token

    def signing_key(self) -> dict[str, str]:
        raise KeyrotdError(
            "this issuer holds no key: it was made with remote=True and the daemon signs",
            "sign with issuer.sign(); use remote=False and the signing-key scope to hold the key",
        )

    def refresh(self) -> bool:
        return True  # nothing held: every token asks the daemon

    def close(self) -> None:
        pass


_SIGN_HINTS: Final = {
    401: "check the token: one that `keyrotd client add` printed for a client still in "
    "server.admin_clients_file (keyrotd client list), or the admin token",
    403: "give this client the sign scope for the keyset (keyrotd client add NAME --scope "
    "sign:KEYSET)",
    404: "check the keyset name, that the daemon sets server.admin_token_file or "
    "admin_clients_file, and that the URL is server.admin_listen when that is set",
}


class CustodyIssuer(Issuer):
    """``Issuer.from_config`` on a keyset whose keys live in a PKCS#11 token or KMS: every token
    is signed there, by the key active at that instant (read from storage, kept for a short
    while), under the signing API's rules; the issuer never holds a private key."""

    def __init__(self, source: StorageSource, clock: Clock) -> None:
        from keyrotd.custody.interface import CustodySigner

        assert source.custody_signer is not None
        assert source.settings is not None
        self.source = source.where
        self._settings = source.settings
        self._signer_at: Callable[[datetime], CustodySigner] = source.custody_signer
        self._on_close = source.close
        self._clock = clock
        self.refresh_interval = background_refresh_interval(None, self._settings.publish_ahead)
        self._signer_at(clock())  # the first read must succeed, as for every issuer

    def __repr__(self) -> str:
        return f"CustodyIssuer({self.source})"

    def sign(
        self,
        claims: Mapping[str, Any],
        lifetime: float | timedelta | None = None,
        *,
        not_before: bool = False,
        jti: bool = False,
    ) -> str:
        """As :meth:`Issuer.sign`; the custody makes the signature."""
        from keyrotd.custody.interface import CustodyKeyGoneError
        from keyrotd.signing import SignRefused, request_of
        from keyrotd.signing import sign as sign_token

        now = self._clock()
        sent = claims_to_send(claims, now, not_before=not_before, jti=jti)
        seconds = None
        if lifetime is not None:
            seconds = math.floor(duration(lifetime, "lifetime").total_seconds())
        settings = self._settings
        try:
            request = request_of(sent, seconds)
            for attempt in (1, 2):
                try:
                    signed = sign_token(
                        request,
                        self._signer_at(now),
                        now=now,
                        token_lifetime=settings.token_lifetime,
                        issuer=settings.issuer,
                    )
                    return signed.token
                except CustodyKeyGoneError:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        except SignRefused as exc:
            raise TokenError(exc.message, exc.hint) from None

    def signing_key(self) -> dict[str, str]:
        from keyrotd.custody.interface import PrivateKeyUnavailableError

        raise PrivateKeyUnavailableError(self._settings.name, self._settings.custody)

    def refresh(self) -> bool:
        return True  # every token reads the active key anew

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
