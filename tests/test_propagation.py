"""Propagation-gated activation (docs/guarantees.md): the pure rule, by example and by property.

Observed URLs are modelled as caches in front of the keyset: on each poll a URL answers with the
JWKS as it is now (and keeps it), with the copy it kept (late), with an older copy (flapping), or
fails (erroring); one may never refresh at all. Polls, ticks, ``rotate``, ``rotate --now`` and
downtime (time passing with nothing run) interleave at random.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrotd.cli import main
from keyrotd.config import KeysetSettings, load_settings
from keyrotd.errors import KeyrotdError
from keyrotd.lifecycle.commands import TICK, Command, Observed, Rotate
from keyrotd.lifecycle.events import Transition
from keyrotd.lifecycle.planner import view
from keyrotd.model import Keyset, Policy
from keyrotd.observations import Answer, Poll
from keyrotd.propagation import ANNOUNCE_SLACK
from tests.support.clock import T0_NEW_YEAR as T0
from tests.test_lifecycle import check_document, step

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
A, B = "https://cdn.example/jwks.json", "https://proxy.example/jwks.json"
OBSERVED = Policy(
    rotation_period=60 * MINUTE,
    publish_ahead=20 * MINUTE,
    token_lifetime=5 * MINUTE,
    clock_skew=MINUTE,
    observe=(A, B),
    verifier_cache=2 * MINUTE,
)
REFRESH = 30 * SECOND


def served(keyset: Keyset) -> frozenset[str]:
    return frozenset(k.kid for k in keyset.keys)


def poll(at_minutes: float, a: Answer, b: Answer) -> Observed:
    return Observed(Poll(T0 + at_minutes * MINUTE, {A: a, B: b}, REFRESH))


# -- by example ------------------------------------------------------------------------------


def test_a_successor_waits_for_every_url_then_activates_after_the_hold() -> None:
    ks = step(Keyset("k"), OBSERVED, T0).keyset
    ks = step(ks, OBSERVED, T0 + 40 * MINUTE).keyset
    [succ] = ks.pending
    assert succ.activates_at is None and succ.scheduled_at == T0 + 60 * MINUTE
    old = frozenset({ks.active.kid})  # type: ignore[union-attr]
    new = served(ks)

    # A serves it at 41 min; B is a cache that keeps the old JWKS (max-age 10 min) and then fails.
    ks = step(ks, OBSERVED, T0 + 41 * MINUTE, poll(41, Answer(new), Answer(old, 10 * MINUTE)))
    ks = ks.keyset
    [succ] = ks.pending
    assert succ.propagation is not None and succ.propagation.lacking == (B,)
    ks = step(ks, OBSERVED, T0 + 50 * MINUTE, poll(50, Answer(new), Answer(None))).keyset
    # Scheduled time passes: held, the active key keeps signing, nothing is announced.
    ks = step(ks, OBSERVED, T0 + 70 * MINUTE).keyset
    assert ks.pending[0].activates_at is None
    assert view(ks, OBSERVED, T0 + 500 * MINUTE).active.kid in old  # type: ignore[union-attr]

    result = step(ks, OBSERVED, T0 + 80 * MINUTE, poll(80, Answer(new), Answer(new)))
    assert [t.event for t in result.transitions] == ["key.confirmed"]
    [succ] = result.keyset.pending
    # T + H: B advertised 10 min while lacking it (more than verifier_cache).
    assert succ.activates_at == T0 + 90 * MINUTE
    assert succ.propagation is not None and succ.propagation.confirmed_at == T0 + 80 * MINUTE
    first_seen = {u.url: u.first_seen for u in succ.propagation.urls}
    assert first_seen == {A: T0 + 41 * MINUTE, B: T0 + 80 * MINUTE}

    # Later observations (even B losing it again) never move a written time.
    later = step(result.keyset, OBSERVED, T0 + 85 * MINUTE, poll(85, Answer(old), Answer(None)))
    assert not later.changed
    done = step(result.keyset, OBSERVED, T0 + 90 * MINUTE).keyset
    assert done.active is not None and done.active.kid == succ.kid
    [retired] = done.retired
    assert retired.retired_at == T0 + 90 * MINUTE  # G3 counts from when it actually stopped


def test_confirmation_announces_no_time_sooner_than_a_refresh_interval_ahead() -> None:
    ks = step(Keyset("k"), OBSERVED, T0).keyset
    ks = step(ks, OBSERVED, T0 + 40 * MINUTE).keyset
    everything = Answer(served(ks))
    confirmed = step(ks, OBSERVED, T0 + 100 * MINUTE, poll(100, everything, everything)).keyset
    [succ] = confirmed.pending
    hold = OBSERVED.verifier_cache
    assert succ.activates_at == max(T0 + 100 * MINUTE + hold, T0 + 100 * MINUTE + REFRESH)
    late = Observed(Poll(T0 + 100 * MINUTE, {A: everything, B: everything}, 10 * MINUTE))
    [slow] = step(ks, OBSERVED, T0 + 100 * MINUTE, late).keyset.pending
    assert slow.activates_at == T0 + 110 * MINUTE + ANNOUNCE_SLACK


def test_an_unchanged_observation_writes_nothing() -> None:
    ks = step(Keyset("k"), OBSERVED, T0).keyset
    ks = step(ks, OBSERVED, T0 + 40 * MINUTE).keyset
    lacking = poll(41, Answer(None), Answer(None))
    ks = step(ks, OBSERVED, T0 + 41 * MINUTE, lacking).keyset
    again = poll(42, Answer(None), Answer(None))
    assert not step(ks, OBSERVED, T0 + 42 * MINUTE, again).changed


def test_rotate_now_overrides_a_hold() -> None:
    ks = step(Keyset("k"), OBSERVED, T0).keyset
    ks = step(ks, OBSERVED, T0 + 70 * MINUTE).keyset
    [succ] = ks.pending
    result = step(ks, OBSERVED, T0 + 75 * MINUTE, Rotate(now=True))
    assert result.keyset.active is not None and result.keyset.active.kid == succ.kid
    [activation] = [t for t in result.transitions if t.event == "key.activated"]
    assert activation.exception == "rotate --now"


def test_without_observe_the_schedule_is_announced_at_publication() -> None:
    policy = Policy(60 * MINUTE, 20 * MINUTE, 5 * MINUTE, MINUTE)
    ks = step(step(Keyset("k"), policy, T0).keyset, policy, T0 + 40 * MINUTE).keyset
    [succ] = ks.pending
    assert succ.propagation is None and succ.activates_at == T0 + 60 * MINUTE


# -- by property -----------------------------------------------------------------------------

URLS = ("https://u0.example/j", "https://u1.example/j", "https://u2.example/j")


@st.composite
def policies(draw: st.DrawFn) -> tuple[Policy, timedelta]:
    rotation = draw(st.integers(4, 60)) * MINUTE
    ahead = draw(st.integers(1, rotation // MINUTE)) * MINUTE
    policy = Policy(
        rotation_period=rotation,
        publish_ahead=ahead,
        token_lifetime=draw(st.integers(1, 30)) * MINUTE,
        clock_skew=draw(st.integers(0, 5)) * MINUTE,
        observe=URLS[: draw(st.integers(1, 3))],
        verifier_cache=draw(st.integers(0, 10)) * MINUTE,
    )
    return policy, draw(st.integers(1, 5)) * MINUTE


ANSWERS = st.sampled_from(["fresh", "fresh", "stale", "older", "error"])
ACTIONS = st.sampled_from(["poll", "poll", "poll", "tick", "rotate", "now", "down"])


@dataclass
class World:
    """The stored document, each URL's cached copy and what every poll and activation showed."""

    policy: Policy
    refresh: timedelta
    keyset: Keyset = field(default_factory=lambda: Keyset("k"))
    cached: dict[str, frozenset[str]] = field(default_factory=dict)
    copies: list[frozenset[str]] = field(default_factory=list)
    polls: list[tuple[Poll, dict[str, frozenset[str] | None]]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    announced: dict[str, object] = field(default_factory=dict)
    first_poll: dict[str, int] = field(default_factory=dict)
    """Per kid, the index of the first poll made after it was published."""

    def run(self, now: object, command: Command) -> None:
        assert isinstance(now, type(T0))
        result = step(self.keyset, self.policy, now, command)
        if result.changed:
            self.keyset = result.keyset
            self.transitions += result.transitions
            for t in result.transitions:
                if t.event == "key.created":
                    self.first_poll[t.kid] = len(self.polls)
            self.copies.append(served(self.keyset))
        for key in self.keyset.pending:
            if key.activates_at is not None and key.propagation is not None:
                # once written, a confirmed activation time never moves
                assert self.announced.setdefault(key.kid, key.activates_at) == key.activates_at
        check_document(self.keyset)

    def answer(
        self, url: str, kind: str, max_age: timedelta
    ) -> tuple[Answer, frozenset[str] | None]:
        if kind == "error":
            return Answer(None, max_age), None
        if kind == "fresh" or url not in self.cached:
            self.cached[url] = served(self.keyset)
        kids = self.cached[url] if kind != "older" else self.copies[max(0, len(self.copies) - 3)]
        return Answer(kids, max_age), kids


@settings(max_examples=300, deadline=None)
@given(policies(), st.data())
def test_no_key_activates_before_every_url_served_it_for_the_hold(
    chosen: tuple[Policy, timedelta], data: st.DataObject
) -> None:
    policy, refresh = chosen
    world = World(policy, refresh)
    now = T0
    world.run(now, TICK)
    never = data.draw(st.sampled_from((None, *policy.observe)))  # a URL that never refreshes
    for _ in range(data.draw(st.integers(5, 60))):
        now += data.draw(st.integers(1, 20)) * MINUTE
        action = data.draw(ACTIONS)
        if action == "down":
            now += data.draw(st.integers(1, 5)) * policy.rotation_period
        elif action == "poll":
            answers, kids_seen = {}, {}
            for url in policy.observe:
                kind = "stale" if url == never else data.draw(ANSWERS)
                age = data.draw(st.integers(0, 15)) * MINUTE
                answers[url], kids_seen[url] = world.answer(url, kind, age)
            received = now + data.draw(st.integers(0, 30)) * SECOND
            observation = Poll(received, answers, refresh)
            world.polls.append((observation, kids_seen))
            world.run(received, Observed(observation))
            now = received
        else:
            command = {"tick": TICK, "rotate": Rotate(), "now": Rotate(now=True)}[action]
            world.run(now, command)
        # what readers see between writes activates nothing unconfirmed
        seen = view(world.keyset, policy, now + 10 * policy.rotation_period)
        assert all(k.awaiting for k in seen.pending if k.propagation is not None)
    check_activations(world)


def check_activations(world: World) -> None:
    policy = world.policy
    created = {t.kid: t.at for t in world.transitions if t.event == "key.created"}
    retired = {t.kid: t.at for t in world.transitions if t.event == "key.retired"}
    activated = [t for t in world.transitions if t.event == "key.activated"]
    for t in activated:
        if t.exception is not None or t.kid not in world.announced:
            continue
        # the first poll in which every URL served it: T; H from the answers lacking it before
        lacking_ages = [timedelta(0)]
        for observation, kids in world.polls[world.first_poll[t.kid] :]:
            missing = [u for u in policy.observe if t.kid not in (kids[u] or ())]
            lacking_ages += [observation.answers[u].max_age for u in missing]
            if not missing:
                hold = max(policy.verifier_cache, *lacking_ages)
                assert t.at >= observation.at + hold, (t, observation.at, hold)
                assert t.at >= observation.at + world.refresh
                assert t.at == world.announced[t.kid]
                break
        else:
            raise AssertionError(f"{t.kid} activated without a poll in which every URL served it")
        assert t.at - created[t.kid] >= policy.publish_ahead  # G2 still holds
    # never two active (check_document), and G3 counts from the actual stop
    for t in world.transitions:
        if t.event == "key.expired":
            assert t.at - retired[t.kid] >= policy.retention


@dataclass
class Store:
    """A document with a version, written by compare-and-swap (as both storage backends do)."""

    keyset: Keyset
    version: int = 0


@settings(max_examples=150, deadline=None)
@given(policies(), st.integers(2, 3), st.data())
def test_replicas_agree_on_the_time_the_first_confirmer_wrote(
    chosen: tuple[Policy, timedelta], replicas: int, data: st.DataObject
) -> None:
    """Replicas poll at their own times and see their own answers (a URL may answer one and fail
    another); each plans from the version it last read, and a lost compare-and-swap re-reads and
    re-plans, as the manager does. Whoever confirms first, every replica then uses that time."""
    policy, refresh = chosen
    store = Store(step(Keyset("k"), policy, T0).keyset)
    reads = [(store.version, store.keyset)] * replicas
    now = T0
    announced: dict[str, object] = {}
    activated: dict[str, object] = {}
    for _ in range(data.draw(st.integers(5, 40))):
        now += data.draw(st.integers(0, 5)) * MINUTE + data.draw(st.integers(0, 59)) * SECOND
        who = data.draw(st.integers(0, replicas - 1))
        if data.draw(st.booleans()):
            reads[who] = (store.version, store.keyset)  # this replica's refresh
        version, seen = reads[who]
        answers = {
            url: Answer(served(store.keyset) if data.draw(st.booleans()) else None, MINUTE)
            for url in policy.observe
        }
        polled = data.draw(st.booleans())
        command: Command = Observed(Poll(now, answers, refresh)) if polled else TICK
        result = step(seen, policy, now, command)
        if result.changed and version != store.version:  # lost the compare-and-swap
            result = step(store.keyset, policy, now, command)
        if result.changed:
            store = Store(result.keyset, store.version + 1)
            reads[who] = (store.version, store.keyset)
        for t in result.transitions if result.changed else ():
            if t.event == "key.activated" and t.exception is None:
                activated[t.kid] = t.at
        for key in store.keyset.keys:
            if key.propagation is not None and key.activates_at is not None:
                assert announced.setdefault(key.kid, key.activates_at) == key.activates_at
        for _, replica_view in reads:  # every replica's view agrees with what was written
            for key in replica_view.pending:
                if key.kid in announced and key.activates_at is not None:
                    assert key.activates_at == announced[key.kid]
    # about half the examples confirm at least one successor, most of those activate it
    for kid, at in activated.items():
        assert kid not in announced or at == announced[kid]


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        (["ftp://cdn.example/jwks.json"], "is not an http(s) URL (keysets[].observe)"),
        ([""], "is not an http(s) URL (keysets[].observe)"),
        ([A, A], "a URL is listed twice (keysets[].observe)"),
        (["https://user:secret@cdn.example/j"], "holds a user name or password"),
    ],
)
def test_bad_observe_urls_are_refused_naming_the_setting(
    urls: list[str], problem: str, tmp_path: Path
) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[[keysets]]\nname = "k"\nobserve = {json.dumps(urls)}\n')
    with pytest.raises(KeyrotdError) as caught:
        load_settings(str(config), {})
    assert problem in str(caught.value)
    assert "secret" not in str(caught.value)  # a password in a URL is not repeated


def test_observe_urls_reach_the_policy() -> None:
    settings = KeysetSettings(observe=[A, B], verifier_cache="7s")
    assert settings.policy.observe == (A, B)
    assert settings.policy.verifier_cache == 7 * SECOND


# -- the CLI ---------------------------------------------------------------------------------


def test_status_shows_an_awaiting_successor_and_the_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n[[keysets]]\nname = "k"\n'
        f'algorithm = "ES256"\nobserve = ["{A}"]\n'
    )
    assert main(["--config", str(config), "rotate"]) == 0  # the first key, then a successor
    assert main(["--config", str(config), "rotate"]) == 0
    out = capsys.readouterr().out
    assert "is published and awaits confirmation (observe)" in out
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "activates None" not in out
    assert f"awaiting confirmation: seen at 0/1 URLs, missing at {A} since " in out
    assert main(["--config", str(config), "status", "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)["keysets"]
    assert report["next_activates_at"] is None and report["held"] is None
