"""End to end: rotation every 3 s for more than ten rotations, an issuer and two verifiers.

The issuer signs a token every 100 ms with the key from ``/keysets/e2e/signing-key`` and switches
to ``next`` at ``next_activates_at`` from the schedule it holds. Two ``PyJWKClient`` verifiers
cache the JWKS for the longest the policy allows (``publish_ahead - refresh_interval -
jwks_max_age``) and never refetch on an unknown kid: one verifies each token right after it is
signed, the other just before it expires. Halfway, the daemon is killed with SIGKILL and started
again. No verification may fail. Finally no private key value ever served may be in the logs.
"""

from __future__ import annotations

import heapq
import json
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError

from tests.support.daemon import TOKEN, Daemon
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

PUBLISH_AHEAD, REFRESH, MAX_AGE = 2.0, 0.5, 0.5
LIFESPAN = PUBLISH_AHEAD - REFRESH - MAX_AGE  # the longest JWKS cache the policy allows
TOKEN_LIFETIME, CLOCK_SKEW = 2, 1
KEYSET = {
    "name": "e2e",
    "algorithm": "RS256",
    "rotation_period": "3s",
    "publish_ahead": "2s",
    "token_lifetime": "2s",
    "clock_skew": "1s",
    "verifier_cache": "0.5s",
}
ROTATIONS = 11
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")


class Verifier:
    """A JWKS verifier that caches for ``LIFESPAN`` and keeps its last keys while unreachable."""

    def __init__(self, url: str) -> None:
        self.client = PyJWKClient(url, lifespan=LIFESPAN, cooldown_duration=3600, timeout=2)
        self.last: Any = None
        self.stale = 0

    def verify(self, token: str, due: float | None = None) -> dict[str, Any]:
        """Verify ``token`` as of ``due`` (when it was to be checked; now if None): a check that
        this thread could only start late is not held against the token's ``exp``."""
        late = 0.0 if due is None else max(0.0, time.time() - due)
        try:
            key = self.client.get_signing_key_from_jwt(token)
            self.last = self.client.jwk_set_cache.jwk_set_with_timestamp  # type: ignore[union-attr]
        except (PyJWKClientConnectionError, OSError):  # refused, or reset by a SIGKILL
            if self.last is None:
                raise
            self.stale += 1  # the daemon is down: keep using what was fetched last
            kid = jwt.get_unverified_header(token)["kid"]
            key = next(k for k in self.last.get_jwk_set().keys if k.key_id == kid)
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=["RS256"], audience="api", leeway=CLOCK_SKEW + late
        )
        return claims


@dataclass
class Run:
    daemon: Daemon
    stop: threading.Event = field(default_factory=threading.Event)
    others: tuple[Daemon, ...] = ()
    """Replicas behind the same load balancer as ``daemon``: asked in turn while it is down."""
    issued: threading.Event = field(default_factory=threading.Event)
    """Set by ``issue`` once it has signed its last token: the verifiers stop after that only."""
    schedule: dict[str, Any] | None = None
    secrets: set[str] = field(default_factory=set)
    signed: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    queue: list[tuple[float, int, str]] = field(default_factory=list)
    fresh: list[tuple[float, str]] = field(default_factory=list)
    """(signed at, token): the fresh verifier judges each as of its signing time."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh_schedule(self) -> None:
        for daemon in (self.daemon, *self.others):
            try:
                reply = daemon.admin("GET", "/keysets/e2e/signing-key", token=TOKEN)
            except OSError:
                continue  # the daemon is down: the next one, else keep the schedule held
            if reply.status == 200:
                break
        else:
            return
        self.schedule = reply.json()
        for jwk in (self.schedule["active"], self.schedule["next"]):
            if jwk:
                self.secrets |= {jwk[m] for m in PRIVATE_MEMBERS}

    def next_activation(self) -> float | None:
        at = self.schedule["next_activates_at"] if self.schedule else None
        return datetime.fromisoformat(at).timestamp() if at else None

    def signing_jwk(self) -> dict[str, Any]:
        assert self.schedule is not None
        at = self.schedule["next_activates_at"]
        if at and datetime.fromisoformat(at).timestamp() <= time.time():
            jwk: dict[str, Any] = self.schedule["next"]
            return jwk
        active: dict[str, Any] = self.schedule["active"]
        return active

    def issue(self) -> None:
        try:
            self._issue()
        finally:
            self.issued.set()

    def _issue(self) -> None:
        number, last_refresh = 0, 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_refresh > 0.5:
                self.refresh_schedule()
                last_refresh = time.monotonic()
            jwk = self.signing_jwk()
            now = time.time()
            claims: dict[str, Any] = {
                "sub": f"t{number}",
                "aud": "api",
                "iat": int(now),
                "exp": int(now + TOKEN_LIFETIME),
            }
            key = jwt.PyJWK(jwk).key
            token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwk["kid"]})
            self.signed[jwk["kid"]] += 1
            with self.lock:
                self.fresh.append((now, token))
                heapq.heappush(self.queue, (claims["exp"] - 0.25, number, token))
            number += 1
            self.stop.wait(0.1)

    def verify_fresh(self, verifier: Verifier) -> None:
        while not self.issued.is_set() or self.fresh:
            with self.lock:
                batch, self.fresh[:] = list(self.fresh), []
            for signed_at, token in batch:
                self._check(verifier, token, "fresh", signed_at)
            time.sleep(0.01)

    def verify_before_expiry(self, verifier: Verifier) -> None:
        while not self.issued.is_set() or self.queue:
            with self.lock:
                due = self.queue[0][0] if self.queue and self.queue[0][0] <= time.time() else None
                token = heapq.heappop(self.queue)[2] if due is not None else None
            if token is None:
                time.sleep(0.01)
            else:
                self._check(verifier, token, "before-expiry", due)

    def _check(self, verifier: Verifier, token: str, when: str, due: float | None = None) -> None:
        try:
            verifier.verify(token, due)
            self.checked[when] += 1
        except Exception as exc:
            header = jwt.get_unverified_header(token)
            self.failures.append(f"{when} {header['kid']} at {time.time():.3f}: {exc!r}")


def test_rotation_every_3s_with_issuer_verifiers_and_a_kill(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        keysets=[KEYSET],
        server={"refresh_interval": f"{REFRESH}s", "jwks_max_age": f"{MAX_AGE}s"},
        log_level="debug",
    ).start()
    url = f"http://127.0.0.1:{daemon.port}/keysets/e2e/jwks.json"
    run = Run(daemon)
    run.refresh_schedule()
    threads = [
        threading.Thread(target=run.issue),
        threading.Thread(target=run.verify_fresh, args=(Verifier(url),)),
        threading.Thread(target=run.verify_before_expiry, args=(Verifier(url),)),
    ]
    for thread in threads:
        thread.start()
    try:
        # halfway, just after an activation: SIGKILL, and start again at once
        wait_for(lambda: len(run.signed) >= ROTATIONS // 2, 60, "half of the rotations")
        activation = wait_for(run.next_activation, 10, "a scheduled activation")
        wait_for(lambda: time.time() > activation + 0.2, 10, "the activation")
        daemon.kill()
        daemon.start()
        wait_for(lambda: len(run.signed) >= ROTATIONS + 1, 90, f"{ROTATIONS} rotations")
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(30)
    assert daemon.stop(signal.SIGTERM) == 0

    assert run.failures == []
    assert len(run.signed) >= ROTATIONS + 1  # ROTATIONS switches between signing keys
    assert run.checked["fresh"] == run.checked["before-expiry"] == sum(run.signed.values())
    activations = [e for e in daemon.log_events() if e.get("event") == "key.activated"]
    assert len(activations) >= ROTATIONS
    # no private key value ever served appears in any log line
    assert run.secrets
    for line in daemon.log_text().splitlines():
        assert not any(secret in line for secret in run.secrets), line
        json.loads(line)  # and every line is one JSON event
