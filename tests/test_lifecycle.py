"""The planner against the guarantees of docs/guarantees.md (G1-G5), by example and by property."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrotd.errors import KeyNotFoundError, KeyrotdError, RefusedError
from keyrotd.keys import PRIVATE_MEMBERS, NewKey
from keyrotd.lifecycle.commands import (
    TICK,
    Command,
    Import,
    Plan,
    Postpone,
    Republish,
    Revoke,
    Rotate,
    plan,
)
from keyrotd.lifecycle.due import next_transition
from keyrotd.lifecycle.events import Transition
from keyrotd.lifecycle.planner import view
from keyrotd.model import HISTORY_LIMIT, Keyset, KeyState, Policy
from tests.support.clock import T0_NEW_YEAR as T0
from tests.support.keysets import POLICY

HOUR = timedelta(hours=1)
SETTLE = timedelta(minutes=5, seconds=30)
"""refresh_interval 30s + max(jwks_max_age 5m, verifier_cache 30s)"""
DAY = timedelta(days=1)
_serial = itertools.count()


def fake_key() -> NewKey:
    """A stand-in keypair: the planner never looks inside the JWKs."""
    n = next(_serial)
    return NewKey(
        kid=f"kid-{n}",
        alg="ES256",
        public_jwk={"kty": "EC", "crv": "P-256", "x": f"x{n}", "y": f"y{n}"},
        private_jwk={"kty": "EC", "crv": "P-256", "x": f"x{n}", "y": f"y{n}", "d": f"d{n}"},
    )


def step(keyset: Keyset, policy: Policy, now: datetime, command: Command = TICK) -> Plan:
    """Plan like the manager does: hand in fresh keys until the planner has enough."""
    fresh: tuple[NewKey, ...] = ()
    while True:
        result = plan(keyset, policy, now, command, fresh)
        if result.needs_keys <= len(fresh):
            return result
        fresh += tuple(fake_key() for _ in range(result.needs_keys - len(fresh)))


def states(keyset: Keyset) -> list[tuple[str, str]]:
    return [(k.kid, k.state.value) for k in keyset.keys]


# -- worked timeline (the one in the README) ------------------------------------------------


def test_worked_timeline() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    [a] = ks.keys
    assert a.state is KeyState.ACTIVE
    assert next_transition(ks, POLICY) == T0 + 12 * HOUR

    # 12h: the successor is published, to activate at the end of the period.
    result = step(ks, POLICY, T0 + 12 * HOUR)
    ks = result.keyset
    [b] = ks.pending
    assert b.created_at == T0 + 12 * HOUR
    assert b.activates_at == T0 + DAY
    assert [t.event for t in result.transitions] == ["key.created"]

    # 24h: B activates, A retires and loses its private key; A leaves the JWKS at 25h05.
    result = step(ks, POLICY, T0 + DAY)
    ks = result.keyset
    assert [t.event for t in result.transitions] == ["key.retired", "key.activated"]
    retired = ks.find(a.kid)
    assert retired is not None
    assert retired.state is KeyState.RETIRED
    assert retired.private_jwk is None
    assert retired.expires_at == T0 + DAY + HOUR + timedelta(minutes=5)
    assert ks.active is not None and ks.active.kid == b.kid

    ks = step(ks, POLICY, T0 + DAY + 2 * HOUR).keyset
    assert [k.kid for k in ks.keys] == [b.kid]
    assert [(k.kid, k.state) for k in ks.history] == [(a.kid, KeyState.EXPIRED)]
    assert ks.history[0].public_jwk is None


def test_bootstrap_is_an_announced_exception() -> None:
    result = step(Keyset("default"), POLICY, T0)
    activated = [t for t in result.transitions if t.event == "key.activated"]
    assert activated[0].exception == "first key of a new keyset"


def test_rotate_is_idempotent_and_waits_publish_ahead() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    first = step(ks, POLICY, T0 + HOUR, Rotate())
    [pending] = first.keyset.pending
    assert pending.activates_at == T0 + HOUR + POLICY.publish_ahead
    again = step(first.keyset, POLICY, T0 + 2 * HOUR, Rotate())
    assert not again.changed


def test_rotate_brings_a_pending_successor_forward_only_as_far_as_g2_allows() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset  # successor for T0+24h
    result = step(ks, POLICY, T0 + 13 * HOUR, Rotate())
    [pending] = result.keyset.pending
    assert pending.activates_at == T0 + 24 * HOUR  # created at 12h + publish_ahead 12h
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset
    tight = Policy(DAY, 2 * HOUR, HOUR, timedelta(0))
    ks = step(Keyset("default"), tight, T0).keyset
    ks = step(ks, tight, T0 + 22 * HOUR).keyset  # successor for T0+24h
    result = step(ks, tight, T0 + 23 * HOUR, Rotate())
    assert [p.activates_at for p in result.keyset.pending] == [T0 + 24 * HOUR]


@pytest.mark.parametrize(
    ("age", "refused"),
    [(None, True), (timedelta(0), True), (timedelta(seconds=329), True), (SETTLE, False)],
)
def test_rotate_now_waits_until_verifiers_may_hold_the_successor(
    age: timedelta | None, refused: bool
) -> None:
    """``age``: how long ago the successor was published (None: there is none); the planner
    refuses, changing nothing, a successor younger than ``settle``, and none at all."""
    ks = step(Keyset("default"), POLICY, T0).keyset
    now = T0 + 13 * HOUR
    if age is not None:
        ks = step(ks, POLICY, now - age).keyset  # the successor is published then (12h on)
        assert [p.created_at for p in ks.pending] == [now - age]
    if refused:
        with pytest.raises(RefusedError, match="refusing rotate --now") as caught:
            step(ks, POLICY, now, Rotate(now=True, settle=SETTLE))
        assert caught.value.exit_code == 1
    else:
        assert step(ks, POLICY, now, Rotate(now=True, settle=SETTLE)).changed
    assert step(ks, POLICY, now, Rotate(now=True)).changed  # forced: settle None


def test_rotate_now_activates_at_once_and_says_so() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    old = ks.active
    result = step(ks, POLICY, T0 + HOUR, Rotate(now=True))
    new = result.keyset.active
    assert new is not None and old is not None and new.kid != old.kid
    assert new.activates_at == T0 + HOUR
    assert any(t.exception == "rotate --now" for t in result.transitions)
    retired = result.keyset.find(old.kid)
    assert retired is not None and retired.state is KeyState.RETIRED


def test_revoking_the_active_key_hands_over_to_the_published_successor() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 13 * HOUR).keyset
    old, [successor] = ks.active, ks.pending
    assert old is not None
    result = step(ks, POLICY, T0 + 14 * HOUR, Revoke(old.kid))
    active = result.keyset.active
    assert active is not None and active.kid == successor.kid
    gone = result.keyset.find(old.kid)
    assert gone is not None and gone.state is KeyState.REVOKED and gone.public_jwk is None
    assert old.kid not in {k["kid"] for k in result.keyset.jwks()["keys"]}


@pytest.mark.parametrize("state", [KeyState.PENDING, KeyState.RETIRED])
def test_revoking_a_pending_or_retired_key_keeps_the_active_one(state: KeyState) -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset
    if state is KeyState.RETIRED:
        ks = step(ks, POLICY, T0 + DAY).keyset
    [target] = [k for k in ks.keys if k.state is state]
    active = ks.active
    result = step(ks, POLICY, T0 + DAY + 10 * 60 * timedelta(seconds=1), Revoke(target.kid))
    assert result.keyset.active == active or result.keyset.active is not None
    assert target.kid not in {k["kid"] for k in result.keyset.jwks()["keys"]}
    again = step(result.keyset, POLICY, T0 + DAY + HOUR, Revoke(target.kid))
    assert not [t for t in again.transitions if t.event == "key.revoked"]


def test_revoking_an_unknown_kid_is_an_error() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    with pytest.raises(KeyNotFoundError, match="no key with kid nope"):
        step(ks, POLICY, T0, Revoke("nope"))


def test_downtime_activates_nothing_unpublished() -> None:
    """G4: down from 1h to 5 days: only the published successor activated, at its time."""
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset
    [b] = ks.pending
    result = step(ks, POLICY, T0 + 5 * DAY)
    ks = result.keyset
    assert ks.active is not None and ks.active.kid == b.kid
    [c] = ks.pending
    assert c.created_at == T0 + 5 * DAY
    assert c.activates_at == T0 + 5 * DAY + POLICY.publish_ahead


def test_view_applies_due_transitions_without_creating_keys() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset
    seen = view(ks, POLICY, T0 + 3 * DAY)
    assert len(seen.keys) == 1 and seen.pending == ()
    assert seen.active is not None and seen.active.kid == ks.pending[0].kid
    assert view(ks, POLICY, T0 + 13 * HOUR) is ks


def test_history_is_bounded() -> None:
    policy = Policy(timedelta(seconds=10), timedelta(seconds=5), timedelta(seconds=1), timedelta(0))
    ks = step(Keyset("default"), policy, T0).keyset
    for i in range(1, 400):
        ks = step(ks, policy, T0 + timedelta(seconds=5 * i)).keyset
    assert len(ks.history) == HISTORY_LIMIT


# -- properties -----------------------------------------------------------------------------

SECOND = timedelta(seconds=1)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    seconds = st.integers(min_value=1, max_value=90 * 86400)
    rotation = draw(seconds)
    ahead = draw(st.integers(min_value=1, max_value=rotation))
    lifetime = draw(seconds)
    skew = draw(st.integers(min_value=0, max_value=3600))
    return Policy(rotation * SECOND, ahead * SECOND, lifetime * SECOND, skew * SECOND)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Policy, list[tuple[timedelta, str]]]:
    policy = draw(policies())
    period = int(policy.rotation_period.total_seconds())
    gap = st.one_of(
        st.integers(min_value=0, max_value=max(1, period // 3)),  # a daemon ticking
        st.integers(min_value=period, max_value=period * 5),  # downtime past rotations
        st.integers(min_value=0, max_value=3),
    )
    action = st.sampled_from(
        ["tick"] * 6
        + ["rotate", "rotate-now", "revoke-active", "revoke-pending", "revoke-other"]
        + ["import-active", "import-retired"]
    )
    moves = draw(st.lists(st.tuples(gap, action), min_size=1, max_size=25))
    return policy, [(g * SECOND, a) for g, a in moves]


@dataclass
class Recorder:
    """Everything that happened, for checking the guarantees after the fact."""

    policy: Policy
    writes: list[tuple[datetime, Keyset]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    def jwks_kids(self, at: datetime) -> set[str]:
        """The kids a daemon serves at ``at``: the latest write at or before it, viewed then."""
        doc = None
        for when, keyset in self.writes:
            if when <= at:
                doc = keyset
        if doc is None:
            return set()
        return {k["kid"] for k in view(doc, self.policy, at).jwks()["keys"]}

    def signer(self, at: datetime) -> str | None:
        doc = None
        for when, keyset in self.writes:
            if when <= at:
                doc = keyset
        active = None if doc is None else view(doc, self.policy, at).active
        return None if active is None else active.kid


def command_for(action: str, keyset: Keyset, now: datetime, policy: Policy) -> Command | None:
    if action == "tick":
        return TICK
    if action.startswith("import-"):
        made = fake_key()
        if action == "import-active":
            return Import(made.kid, made.alg, made.public_jwk, made.private_jwk)
        # published for as long as a key keyrotd retired (the G3 check below holds for it too)
        return Import(made.kid, made.alg, made.public_jwk, until=now + policy.retention)
    if action in {"rotate", "rotate-now"}:
        return Rotate(now=action == "rotate-now")
    candidates = {
        "revoke-active": [k for k in keyset.keys if k.state is KeyState.ACTIVE],
        "revoke-pending": list(keyset.pending),
        "revoke-other": list(keyset.retired),
    }[action]
    return Revoke(candidates[0].kid) if candidates else None


def check_document(keyset: Keyset) -> None:
    # G1: exactly one active key after bootstrap.
    assert sum(k.state is KeyState.ACTIVE for k in keyset.keys) == 1
    assert len(keyset.pending) <= 1
    # G5: no private member, no expired or revoked key in the JWKS.
    jwks = keyset.jwks()
    gone = {k.kid for k in keyset.history}
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["kid"] not in gone
        assert jwk["use"] == "sig" and jwk["alg"]
    # Private key kept by pending and active keys only (docs/guarantees.md table).
    for key in (*keyset.keys, *keyset.history):
        holds = key.state in {KeyState.PENDING, KeyState.ACTIVE}
        assert (key.private_jwk is not None) == holds, key
    assert len(keyset.history) <= HISTORY_LIMIT


def simulate(
    policy: Policy,
    moves: list[tuple[timedelta, str]],
    after_each_step: Callable[[Keyset, Policy, datetime], None] = lambda *_: None,
) -> tuple[Recorder, datetime]:
    """Bootstrap at T0, then play ``moves`` (a gap, then an action); every write is recorded."""
    record = Recorder(policy)
    now = T0
    result = step(Keyset("default"), policy, now)
    keyset = result.keyset
    record.writes.append((now, keyset))
    record.transitions += result.transitions
    for gap, action in moves:
        now += gap
        command = command_for(action, keyset, now, policy)
        if command is None:
            continue
        result = step(keyset, policy, now, command)
        if result.changed:
            keyset = result.keyset
            record.writes.append((now, keyset))
            record.transitions += result.transitions
        after_each_step(keyset, policy, now)
    return record, now


def check_step(keyset: Keyset, policy: Policy, now: datetime) -> None:
    check_document(keyset)
    check_document(view(keyset, policy, now + policy.rotation_period))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_guarantees_hold_after_every_step(
    scenario: tuple[Policy, list[tuple[timedelta, str]]],
) -> None:
    policy, moves = scenario
    record, _ = simulate(policy, moves, after_each_step=check_step)

    created = {t.kid: t.at for t in record.transitions if t.event == "key.created"}
    retired_at = {t.kid: t.at for t in record.transitions if t.event == "key.retired"}
    revoked = {t.kid for t in record.transitions if t.event == "key.revoked"}
    for t in record.transitions:
        if t.event == "key.activated" and t.exception is None:
            # G2 and G4: a scheduled activation follows publication by publish_ahead.
            assert t.at - created[t.kid] >= policy.publish_ahead, t
        if t.event == "key.expired":
            # G3: out of the JWKS no sooner than token_lifetime + clock_skew after signing ended.
            assert t.kid not in revoked
            assert t.at - retired_at[t.kid] >= policy.retention, t


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=20))
def test_cached_verifiers_never_meet_an_unknown_kid(
    scenario: tuple[Policy, list[tuple[timedelta, str]]], signing_points: list[float]
) -> None:
    """Verifiers whose JWKS is up to ``publish_ahead`` old (daemon refresh + HTTP cache + their own
    cache of ``publish_ahead - refresh_interval - jwks_max_age``) accept every token of up to
    ``token_lifetime`` signed outside the emergency exceptions."""
    policy, moves = scenario
    record, end = simulate(policy, moves)

    emergency = {t.kid: t.at for t in record.transitions if t.exception is not None}
    revoked = {t.kid for t in record.transitions if t.event == "key.revoked"}
    events = sorted(
        {w for w, _ in record.writes}
        | {t.at for t in record.transitions}
        | {k.expires_at for _, ks in record.writes for k in ks.keys if k.expires_at}
    )
    for point in signing_points:
        signed = T0 + (end - T0) * point
        kid = record.signer(signed)
        assert kid is not None
        if kid in revoked:
            continue  # revocation is meant to break tokens
        if kid in emergency and signed - emergency[kid] < policy.publish_ahead:
            continue  # G2's announced exceptions
        window_start = signed - policy.publish_ahead
        window_end = signed + policy.retention
        if window_end > end:
            continue  # the future of this token was not simulated
        checks = [window_start, window_end, *(e for e in events if window_start <= e <= window_end)]
        for at in checks:
            if at < T0:
                continue
            assert kid in record.jwks_kids(at), (kid, signed, at)


def test_republish_counts_a_slowly_written_key_as_published_when_the_write_returned() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset
    [successor] = ks.pending
    late = T0 + 12 * HOUR + timedelta(seconds=5)
    result = step(ks, POLICY, late, Republish(frozenset({successor.kid})))
    [redated] = result.keyset.pending
    assert redated.created_at == late
    assert redated.activates_at == late + POLICY.publish_ahead
    assert result.transitions == ()
    again = step(result.keyset, POLICY, late, Republish(frozenset({successor.kid})))
    assert not again.changed


def test_postpone_moves_what_fell_due_within_a_forward_jump() -> None:
    ks = step(Keyset("default"), POLICY, T0).keyset
    ks = step(ks, POLICY, T0 + 12 * HOUR).keyset  # B pending for 24h
    before_jump = T0 + 12 * HOUR + 30 * 60 * timedelta(seconds=1)
    [pending] = ks.pending
    jumped = before_jump + 20 * HOUR  # the wall clock leaps past B's activation
    result = step(ks, POLICY, jumped, Postpone(20 * HOUR))
    [moved] = result.keyset.pending
    assert moved.kid == pending.kid
    assert moved.activates_at == T0 + DAY + 20 * HOUR
    assert [t.event for t in result.transitions] == []

    ks = step(result.keyset, POLICY, T0 + DAY + 20 * HOUR).keyset  # B activates, A retires
    [retired] = ks.retired
    assert retired.expires_at == T0 + DAY + 20 * HOUR + POLICY.retention
    again = T0 + DAY + 20 * HOUR + 30 * 60 * timedelta(seconds=1) + 3 * HOUR
    result = step(ks, POLICY, again, Postpone(3 * HOUR))
    assert [k.expires_at for k in result.keyset.retired] == [retired.expires_at + 3 * HOUR]
    # Scheduled before the jump began: left as it was (it was due anyway).
    late = step(ks, POLICY, again, Postpone(timedelta(minutes=10)))
    assert late.keyset.retired == ()


def test_import_active_signs_at_once_keeps_the_successor_and_restarts_the_period() -> None:
    first = step(Keyset("default"), POLICY, T0).keyset  # A active; B published at T0 + 12h
    with_successor = step(first, POLICY, T0 + 13 * HOUR).keyset
    [successor] = with_successor.pending
    made = fake_key()
    at = T0 + 14 * HOUR
    result = step(
        with_successor, POLICY, at, Import(made.kid, "ES256", made.public_jwk, made.private_jwk)
    )
    active = result.keyset.active
    assert active is not None and active.kid == made.kid and active.activates_at == at
    [still] = result.keyset.pending
    assert still.kid == successor.kid and still.activates_at == at + POLICY.rotation_period
    events = [(t.event, t.kid, t.exception) for t in result.transitions]
    assert ("key.activated", made.kid, "import --as active") in events
    assert ("key.retired", first.keys[0].kid, None) in events
    again = Import(made.kid, "ES256", made.public_jwk, made.private_jwk)
    with pytest.raises(KeyrotdError, match="already has key"):
        step(result.keyset, POLICY, at, again)
    revoked = step(result.keyset, POLICY, at, Revoke(made.kid)).keyset
    with pytest.raises(KeyrotdError, match="revoked"):
        step(revoked, POLICY, at, again)
    other = fake_key()
    refused = Import(
        other.kid,
        "ES256",
        other.public_jwk,
        until=at + DAY,
        revoked_elsewhere=frozenset({other.kid}),
    )
    with pytest.raises(KeyrotdError, match="revoked"):
        step(revoked, POLICY, at, refused)
