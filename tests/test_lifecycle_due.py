"""The rotation rule's times have one source, the planner (``Planner.due``): change the rule
there alone and the scheduler's wake-up, what the daemon serves, ``status`` and its timeline all
follow. Also: at each due time the planner does act, and not a moment before."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.scheduling import Rotator, replica_offset
from keyrotd.daemon.state import Board
from keyrotd.keys import generate_key
from keyrotd.lifecycle.commands import plan
from keyrotd.lifecycle.due import due_times, next_transition
from keyrotd.lifecycle.planner import Planner
from keyrotd.model import Keyset
from keyrotd.storage import open_storage
from keyrotd.times import rfc3339
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import ManualClock
from tests.support.config import render_config
from tests.support.waiting import wait_for

T0 = datetime(2031, 5, 1, 8, tzinfo=UTC)
"""Years ahead of the real clock: the scheduler's job at a time computed from it never runs."""
PERIOD, AHEAD = timedelta(hours=24), timedelta(hours=6)
SOONER = timedelta(hours=3)
"""How much earlier the changed rule publishes a successor."""
ONE_SECOND = timedelta(seconds=1)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "keyrotd.toml"
    keyset = {
        "name": "main",
        "algorithm": "ES256",
        "rotation_period": "24h",
        "publish_ahead": "6h",
    }
    sections = {"storage": {"type": "file", "path": tmp_path / "store"}}
    path.write_text(render_config(sections, [keyset]))
    return path


@pytest.fixture
def sooner_rule(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The rule changed in one place: a successor is due ``SOONER`` earlier. Returns when the
    first key's successor is now due."""
    original = Planner.successor_due

    def successor_due(self: Planner, signs_from: datetime) -> datetime:
        return original(self, signs_from) - SOONER

    monkeypatch.setattr(Planner, "successor_due", successor_due)
    return T0 + PERIOD - AHEAD - SOONER


def manager(config: Path, at: datetime) -> KeysetWriter:
    settings = load_settings(str(config))
    spec = KeysetSpec.from_settings(settings.keysets[0])
    return KeysetWriter(open_storage(settings.storage), spec, clock=lambda: at)


def stored(config: Path) -> Keyset:
    keysets = manager(config, T0)
    try:
        return keysets.load().keyset
    finally:
        keysets.storage.close()


def first_key(config: Path) -> None:
    """The keyset's first key, made at ``T0`` as a daemon makes it."""
    keysets = manager(config, T0)
    try:
        keysets.sync()
    finally:
        keysets.storage.close()


def test_the_scheduler_status_and_timeline_follow_a_rule_changed_in_the_planner(
    config: Path, sooner_rule: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    due = sooner_rule
    clock = ManualClock(T0)
    first_key(config)
    settings = load_settings(str(config))
    keyset = stored(config)
    assert not keyset.pending
    assert next_transition(keyset, settings.keysets[0].policy) == due

    # the daemon's scheduler wakes then, and the JWKS it serves may be cached until then
    clock.now = T0 + timedelta(minutes=1)
    board = Board()
    storage = open_storage(settings.storage)
    rotator = Rotator(storage, board, Metrics(lambda: board.snapshot), PERIOD, clock, replica="a")
    try:
        rotator.start(settings.keysets)
        wait_for(lambda: rotator.wakes_at("main") is not None, 10, "the transition job")
        assert rotator.wakes_at("main") == due + replica_offset("a", "main", PERIOD)
        assert board.snapshot.published["main"].changes_at == due.timestamp()
        # what it does when it wakes: publish a successor, not a second earlier
        clock.now = due - ONE_SECOND
        rotator.resync("main")
        assert not stored(config).pending
        clock.now = due
        rotator.resync("main")
        (successor,) = stored(config).pending
        assert successor.created_at == due
    finally:
        rotator.shutdown()
        storage.close()


def test_status_says_when_the_changed_rule_publishes_a_successor(
    config: Path, sooner_rule: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    due = sooner_rule
    first_key(config)
    capsys.readouterr()
    at = T0 + timedelta(hours=1)
    assert main(["--config", str(config), "status", "--json"], lambda: at) == 0
    (entry,) = json.loads(capsys.readouterr().out)["keysets"]
    assert entry["next_transition"] == rfc3339(due)
    assert main(["--config", str(config), "status"], lambda: at) == 0
    text = capsys.readouterr().out
    assert f"next transition: {rfc3339(due, 'seconds')} (in 14h): a successor is published" in text


def test_at_each_due_time_the_planner_acts_and_not_before(config: Path) -> None:
    """Walk a keyset from one due time to the next through several rotations: planning a
    moment before changes nothing, planning at it makes the change the planner announced."""
    first_key(config)
    policy = load_settings(str(config)).keysets[0].policy
    keyset = stored(config)
    seen: list[str] = []
    for _ in range(10):
        fresh = (generate_key("ES256"), generate_key("ES256"))
        first = due_times(keyset, policy)[0]
        assert not plan(keyset, policy, first.at - ONE_SECOND, fresh=fresh).transitions, first
        after = plan(keyset, policy, first.at, fresh=fresh)
        made = {(t.event, t.at) for t in after.transitions}
        assert (first.event, first.at) in made, (first, after.transitions)
        if first.kid is not None:
            assert first.kid in {t.kid for t in after.transitions if t.event == first.event}
        seen.append(first.event)
        keyset = after.keyset
    assert {"key.created", "key.activated", "key.expired"} <= set(seen)
