"""The logged-in hvac client: logging in, renewing the token, and what each failure means.

Login: ``token`` reads ``token_file``; ``approle`` logs in with the role and secret ids;
``kubernetes`` presents the pod's service-account token for ``kubernetes_role``. The token's
lease is looked up (or taken from the login answer) and the token is renewed (``renew-self``)
once two thirds of its lease have passed, as Vault Agent does. A token that cannot be renewed
any more (not renewable, or at its maximum TTL) is replaced by a new login shortly before it
expires; a 403 answer logs in again once (or re-reads ``token_file``: an agent may have written a
new token) and repeats the request.

Errors: unreachable, timed out, sealed or standby (503), throttled (429) and other 5xx answers
are :class:`TemporaryStorageError` (the daemon keeps serving and retries); a TLS failure, a
refused login or a permission denied is a permanent :class:`StorageError` naming the setting to
fix. No message holds a token, a secret id or a document.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import hvac
import requests
from hvac import exceptions as vault_errors

from keyrotd.errors import ConflictError, StorageError, TemporaryStorageError
from keyrotd.storage.vault.settings import (
    SERVICE_ACCOUNT_TOKEN,
    Credentials,
    VaultSettings,
    read_token,
)

__all__ = ["Session"]

T = TypeVar("T")
TIMEOUT: Final = (2.0, 5.0)
"""Seconds to connect, and to wait for an answer (as the AWS backend): a stalled server is a
temporary error soon enough for SIGTERM's 5 s."""
_RENEW_AT: Final = 2 / 3
"""Renew once this share of the lease has passed."""
_LOGIN_AT: Final = 0.9
"""Log in again (or re-read ``token_file``) once this share has passed without a renewal."""
_TEMPORARY: Final = (
    vault_errors.VaultDown,
    vault_errors.RateLimitExceeded,
    vault_errors.InternalServerError,
    vault_errors.BadGateway,
    vault_errors.VaultNotInitialized,
    vault_errors.PreconditionFailed,
)
_CAS_MISMATCH: Final = "check-and-set"


class Session:
    """One hvac client, kept logged in (see the module docstring); thread-safe."""

    def __init__(
        self,
        settings: VaultSettings,
        credentials: Credentials,
        *,
        service_account_token: Path = SERVICE_ACCOUNT_TOKEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._service_account_token = service_account_token
        self._clock = clock
        self._lock = threading.RLock()
        self._last = threading.local()
        """This thread's last HTTP status: hvac has no status on a 504's or 507's error."""
        self.requests: Counter[str] = Counter()
        """HTTP requests sent, by method and path kind (``GET data``, ``POST login``...)."""
        http = requests.Session()
        http.verify = settings.verify  # hvac prefers the session's own (True) to its argument
        http.hooks["response"].append(self._count)
        self._client = hvac.Client(  # token "": never VAULT_TOKEN or ~/.vault-token
            url=settings.url, token="", verify=settings.verify, timeout=TIMEOUT, session=http
        )
        self._ttl = 0.0
        self._renew_after: float | None = None
        self._expires_at: float | None = None
        self._renewable = False
        self._logged_in = False
        self._first_login = True

    def _count(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self._last.status = response.status_code
        method = response.request.method or "?"
        path = response.request.path_url.split("?", 1)[0]
        self.requests[f"{method} {_kind(path)}"] += 1

    def call(self, what: str, where: str, request: Callable[[hvac.Client], T]) -> T:
        """``request(client)`` with a fresh token, its failure translated (``what`` on
        ``where`` names it); one more try after a fresh login when refused with 403."""
        with self._translated(what, where):
            client = self._fresh()
            try:
                return request(client)
            except vault_errors.Forbidden:
                self._forget_token()
                return request(self._fresh())

    def close(self) -> None:
        self._client.adapter.close()

    # -- the token -------------------------------------------------------------------------------
    def _fresh(self) -> hvac.Client:
        with self._lock:
            now = self._clock()
            if not self._logged_in or (self._expires_at is not None and now >= self._expires_at):
                self._login()
            elif self._renew_after is not None and now >= self._renew_after:
                self._renew()
            return self._client

    def _forget_token(self) -> None:
        with self._lock:
            self._logged_in = False

    def _login(self) -> None:
        settings = self._settings
        if settings.auth == "token":
            token = self._credentials.token if self._first_login else None
            self._client.token = token or read_token(_required(settings.token_file))
            self._first_login = False
            self._lease(self._client.auth.token.lookup_self()["data"], "ttl")
        else:
            if settings.auth == "approle":
                answer = self._client.auth.approle.login(
                    role_id=self._credentials.role_id, secret_id=self._credentials.secret_id
                )
            else:
                jwt = self._service_account_token.read_text().strip()
                answer = self._client.auth.kubernetes.login(settings.kubernetes_role, jwt)
            self._lease(answer["auth"], "lease_duration")
        self._logged_in = True

    def _renew(self) -> None:
        if not self._renewable:
            self._renew_after = None  # a new login when it expires
            return
        granted = self._ttl
        try:
            answer = self._client.auth.token.renew_self()
        except (vault_errors.InvalidRequest, vault_errors.InternalServerError):
            # "past the max TTL, cannot renew" (a 500 on OpenBao): a new login, or for a plain
            # token no more renewals until it expires
            if self._settings.auth == "token":
                self._renew_after = None
            else:
                self._login()
            return
        self._lease(answer["auth"], "lease_duration")
        if self._ttl < granted:  # capped by the token's maximum TTL: log in again next time
            self._renewable = False

    def _lease(self, auth: dict[str, Any], ttl_field: str) -> None:
        ttl = self._ttl = float(auth.get(ttl_field) or 0)
        self._renewable = bool(auth.get("renewable"))
        now = self._clock()
        if ttl <= 0:  # a token that never expires (a root token, a periodic one without TTL)
            self._renew_after = self._expires_at = None
            return
        self._renew_after = now + ttl * _RENEW_AT
        # Log in again a little before the end, so no request carries an expired token.
        self._expires_at = now + ttl * _LOGIN_AT

    # -- errors ----------------------------------------------------------------------------------
    @contextmanager
    def _translated(self, what: str, where: str) -> Iterator[None]:
        url = self._settings.url
        try:
            yield
        except (StorageError, ConflictError):
            raise
        except requests.exceptions.SSLError:
            raise StorageError(
                f"TLS to Vault at {url} failed during {what} of {where} (certificate not "
                "trusted, or the wrong host name)",
                "set storage.ca_file to the CA bundle that signed the server's certificate",
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            raise TemporaryStorageError(
                f"Vault at {url} is unreachable ({what} of {where})",
                "check that the server is running and reachable; keyrotd retries",
            ) from None
        except _TEMPORARY as error:
            raise TemporaryStorageError(
                f"Vault at {url} answered {_status(error)} to {what} of {where}{_said(error)}",
                "a sealed or overloaded server: unseal it or wait; keyrotd retries",
            ) from None
        except vault_errors.InvalidRequest as error:
            if _CAS_MISMATCH in _said(error):
                raise ConflictError(
                    f"another writer changed {where} first", "re-read and re-plan"
                ) from None
            raise StorageError(
                f"Vault at {url} refused {what} of {where}{_said(error)}",
                "check storage.mount (a KV version 2 mount) and storage.path_prefix",
            ) from None
        except (vault_errors.Forbidden, vault_errors.Unauthorized) as error:
            raise StorageError(
                f"Vault at {url} denied {what} of {where} to keyrotd's token{_said(error)}",
                f"check the {_credential(self._settings.auth)} and that its policy grants the "
                "paths in docs/storage.md",
            ) from None
        except vault_errors.VaultError as error:
            status = getattr(self._last, "status", 0)
            if status >= 500 or status == 412:  # 412: a standby not yet at the index asked
                raise TemporaryStorageError(
                    f"Vault at {url} answered {status} to {what} of {where}{_said(error)}",
                    "keyrotd retries",
                ) from None
            raise StorageError(
                f"Vault at {url} answered {_status(error)} to {what} of {where}{_said(error)}",
                "check storage.url, storage.mount and storage.path_prefix",
            ) from None
        except OSError as error:  # the service-account token file
            raise StorageError(
                f"cannot read the service-account token {self._service_account_token} "
                f"({error.strerror})",
                "run keyrotd in a pod whose service account token is mounted",
            ) from None


def _required(path: Path | None) -> Path:
    assert path is not None
    return path


def _kind(path: str) -> str:
    """A request's path less the names in it: ``/v1/secret/data/keyrotd/a`` is ``data``."""
    parts = path.split("/")
    for marker in ("data", "metadata", "login", "lookup-self", "renew-self"):
        if marker in parts:
            return marker
    return "other"


def _status(error: vault_errors.VaultError) -> str:
    names = {
        vault_errors.VaultDown: "503 (sealed or unavailable)",
        vault_errors.RateLimitExceeded: "429 (too many requests)",
        vault_errors.InternalServerError: "500",
        vault_errors.BadGateway: "502",
        vault_errors.VaultNotInitialized: "501 (not initialized)",
        vault_errors.InvalidPath: "404",
        vault_errors.PreconditionFailed: "412",
    }
    return names.get(type(error), type(error).__name__)


def _said(error: vault_errors.VaultError) -> str:
    """What the server said, cut short (Vault's errors name paths and reasons, not secrets)."""
    said = "; ".join(str(e) for e in (error.errors or []) if e)
    said = " ".join(said.split())[:200]
    return f": {said}" if said else ""


def _credential(auth: str) -> str:
    return {
        "token": "token in storage.token_file",
        "approle": "AppRole (storage.role_id_file, storage.secret_id_file)",
        "kubernetes": "Kubernetes role (storage.kubernetes_role)",
    }[auth]
