"""Why ``FetchKeys`` must carry pending keys: the same API-server key cache, the same keyset and the
same stream of ``Sign`` calls, against the real :class:`Signer` and against one whose key source
leaves out the keys that are not active yet.

The model, on one simulated clock (seconds since ``T0``) shared by the signer and the cache, so the
run is the same every time:

- the keyset rotates every ``PERIOD``: key ``i`` is created and published ``AHEAD`` before it
  activates at ``i * PERIOD``, signs until ``(i + 1) * PERIOD`` and stays published for
  ``LIFETIME`` after that (as the daemon's board holds it; storage is re-read every second);
- the cache (tests/kubernetes/apiserver.py) asks ``FetchKeys`` at start, again after the
  ``refresh_hint_seconds`` it was given, and once on a token whose kid it does not hold; it starts
  at a fraction of a second (the API server's clock is not the signer's), and a token is signed
  every 0.1 s;
- a token counts as rejected by the cache when the key that signed it was not among the keys the
  cache held when it was signed: that is the JWKS the API server serves at ``/openid/v1/jwks``;
- an external verifier of that JWKS keeps a copy for the ``max-age`` the API server gives it (the
  signer's ``jwks_max_age``) and refetches then; a token whose kid is not in its copy is rejected.

The omitting signer is given every advantage: its refresh hint still points at the next change of
the full set (the instant a pending key appears, then the instant it activates), so the cache asks
again just before each activation — and is refused the key until it signs. The cache's extra fetch
on an unknown kid lets it catch up within one token (how many it rejects depends on where its fetch
falls against the activation), but the external verifiers reject every new key's tokens until
their copy expires. The real signer hands the key over ``AHEAD`` seconds before it signs, more than
the hint plus one ``max-age``, so neither rejects anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from keyrotd.keys import NewKey, generate_key
from keyrotd.kubernetes.signer import ActiveKey, KeySource, PublishedKeys, Signer, serve
from keyrotd.model import Jwk
from tests.kubernetes.apiserver import ApiServerKeyCache, Tally
from tests.support.clock import T0_DECEMBER as T0

pytest.importorskip("grpc")

PERIOD = 10.0
AHEAD = 6.0
LIFETIME = 12.0
REFRESH = 1.0
MAX_AGE = 2.0
ROTATIONS = 3


@dataclass
class Clock:
    seconds: float = 0.0

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)


class Schedule:
    """The keyset on the simulated clock, read as the daemon's board holds it."""

    def __init__(self, clock: Clock, alg: str) -> None:
        self.clock = clock
        self.keys = [generate_key(alg) for _ in range(ROTATIONS + 2)]
        self.signers = {  # imported once, as the daemon imports a key once per served view
            k.kid: ActiveKey(k.kid, k.alg, _signing(k)) for k in self.keys
        }

    def _window(self, i: int) -> tuple[float, float, float]:
        """(published from, active from, published until) of key ``i``."""
        created = -math.inf if i == 0 else i * PERIOD - AHEAD
        return created, i * PERIOD, (i + 1) * PERIOD + LIFETIME

    def activates_at(self, kid: str) -> float:
        return next(self._window(i)[1] for i, k in enumerate(self.keys) if k.kid == kid)

    def active(self) -> ActiveKey:
        t = self.clock.seconds
        return self.signers[self.keys[int(t // PERIOD)].kid]

    def resync(self) -> None:
        pass

    def published(self) -> PublishedKeys:
        t = self.clock.seconds
        keys: list[Jwk] = []
        changes: list[float] = []
        for i, key in enumerate(self.keys):
            created, _, until = self._window(i)
            if created <= t < until:
                keys.append(_public(key))
            changes += [c for c in self._window(i) if c > t]
        read_at = T0 + timedelta(seconds=math.floor(t / REFRESH) * REFRESH)
        return PublishedKeys(keys, read_at, T0 + timedelta(seconds=min(changes)))


class PendingOmitted:
    """The same keyset, but ``FetchKeys`` gets only the keys active now or retired (the hint is
    left as the full set's, which only makes the cache ask more often)."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def active(self) -> ActiveKey:
        return self.schedule.active()

    def resync(self) -> None:
        pass

    def published(self) -> PublishedKeys:
        full = self.schedule.published()
        t = self.schedule.clock.seconds
        keys = [k for k in full.keys if self.schedule.activates_at(str(k["kid"])) <= t]
        return PublishedKeys(keys, full.read_at, full.next_change)


def _signing(key: NewKey) -> Callable[[bytes], bytes]:
    jwk = JWKRegistry.import_key(dict(key.private_jwk))
    algorithm = JWSRegistry.algorithms[key.alg]
    return lambda data: algorithm.sign(data, jwk)


def _public(key: NewKey) -> Jwk:
    return {**key.public_jwk, "kid": key.kid, "alg": key.alg, "use": "sig"}


@pytest.fixture
def clock() -> Clock:
    return Clock(seconds=0.35)


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "signer.sock"


@dataclass
class Run:
    cache: Tally
    """What the API server's key cache rejected (tokens signed by a key it did not hold)."""
    verifiers: list[str]
    """The kids of tokens an external verifier of ``/openid/v1/jwks`` rejected."""


def _run(source: KeySource, clock: Clock, socket_path: Path) -> Run:
    signer = Signer(source, token_lifetime=600, max_age=MAX_AGE, clock=clock.now)
    server = serve(socket_path, signer)
    rejected_by_verifiers: list[str] = []
    try:
        cache = ApiServerKeyCache(str(socket_path), clock=lambda: clock.seconds)
        # an external verifier refetches the API server's JWKS when its max-age (the signer's
        # jwks_max_age, as the API server republishes it) has passed, at a phase of its own
        verifier_keys, verifier_next = dict(cache.keys), clock.seconds + 0.6
        try:
            while clock.seconds < ROTATIONS * PERIOD + 1:
                if clock.seconds >= verifier_next:
                    verifier_keys, verifier_next = dict(cache.keys), verifier_next + MAX_AGE
                kid = cache.sign_and_verify(
                    {"sub": "system:serviceaccount:default:app", "aud": "api"}
                )
                if kid not in verifier_keys:
                    rejected_by_verifiers.append(kid)
                clock.seconds = round(clock.seconds + 0.1, 6)
        finally:
            cache.close()
    finally:
        server.stop(0)
    return Run(cache.tally, rejected_by_verifiers)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_the_real_signer_rejects_none_and_one_omitting_pending_keys_rejects_at_each_rotation(
    clock: Clock, socket_path: Path, alg: str
) -> None:
    schedule = Schedule(clock, alg)
    new_keys = sorted(k.kid for k in schedule.keys[1 : ROTATIONS + 1])
    real = _run(schedule, clock, socket_path)
    assert len(real.cache.kids) == ROTATIONS + 1, real
    assert real.cache.rejected == [] and real.verifiers == [], real
    assert real.cache.verified == real.cache.signed > 250

    clock.seconds = 0.35
    omitting = _run(PendingOmitted(schedule), clock, socket_path)
    assert len(omitting.cache.kids) == ROTATIONS + 1, omitting
    assert len(omitting.cache.rejected) > 0, omitting
    assert omitting.cache.verified == omitting.cache.signed - len(omitting.cache.rejected)
    # every new key signed tokens that the verifiers of the API server's JWKS rejected
    assert sorted(set(omitting.verifiers)) == new_keys, omitting
