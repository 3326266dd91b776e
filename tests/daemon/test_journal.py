"""What a daemon's log says: every lifecycle transition it sees, once, with who made it; every
line an event; failures once when they start and ``storage.recovered`` once when they end."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrotd.daemon.journal import REPEAT, Failures, Journal
from keyrotd.lifecycle.commands import TICK, Command, Revoke, Rotate
from keyrotd.model import Keyset, KeyState, Policy, from_json
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import ManualClock
from tests.support.daemon import Daemon

from .conftest import DaemonFactory

FAILURES = ("storage.read_failed", "storage.write_failed", "key.rotation_failed")


def cli(daemon: Daemon, *argv: str) -> str:
    """The real ``keyrotd`` command line on the daemon's configuration (exit 0 expected)."""
    result = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "--config", str(daemon.config), *argv],
        capture_output=True,
        text=True,
        env=daemon.env,
        cwd=daemon.workdir,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result.stdout


def stored(daemon: Daemon, name: str = "main") -> Keyset:
    found = FileStorage(daemon.data).read(name)
    assert found is not None
    return from_json(found.data, found.location)


def key_lines(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if str(e.get("event", "")).startswith("key.")]


def logged(daemon: Daemon, event: str, kid: str, by: str) -> bool:
    return any(
        (e["event"], e.get("kid"), e.get("by")) == (event, kid, by) for e in key_lines(daemon)
    )


def wait_refreshes(daemon: Daemon, count: int) -> None:
    """Let the daemon refresh ``count`` more times (refresh_interval is 1 s)."""
    time.sleep(count * 1.0 + 0.5)
    daemon.check_alive()


def test_transitions_made_by_the_cli_are_logged_by_storage_once(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start()
    first = stored(daemon)
    assert first.active is not None and first.successor is not None
    active, successor = first.active.kid, first.successor.kid
    for event, kid in (("key.created", active), ("key.activated", active)):
        daemon.wait_for(lambda e=event, k=kid: logged(daemon, e, k, "self"), 10, f"{event} self")

    cli(daemon, "revoke", active, "--keyset", "main")  # the successor takes over at once (G1)
    after = stored(daemon)
    assert after.active is not None and after.active.kid == successor
    fresh = [k.kid for k in after.keys if k.state is KeyState.PENDING]
    assert len(fresh) == 1
    expected = [("key.revoked", active), ("key.activated", successor), ("key.created", fresh[0])]
    for event, kid in expected:
        daemon.wait_for(lambda e=event, k=kid: logged(daemon, e, k, "storage"), 10, event)

    # The daemon's own revocation: by self, and not found again in storage by the next refreshes.
    assert daemon.admin("POST", f"/keysets/main/keys/{successor}/revoke").status == 200
    wait_refreshes(daemon, 3)
    lines = key_lines(daemon)
    assert {line["by"] for line in lines} == {"self", "storage"}
    assert all(line["keyset"] == "main" for line in lines)
    assert logged(daemon, "key.revoked", successor, "self")
    assert logged(daemon, "key.activated", fresh[0], "self")
    counts = Counter((line["event"], line["kid"]) for line in lines)
    assert [pair for pair, count in counts.items() if count > 1] == []


def test_every_line_is_an_event_through_a_storage_failure_and_recovery(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start()
    document = daemon.data / "main.json"
    aside = daemon.data / "main.json.aside"
    document.rename(aside)
    document.mkdir()  # reading it now fails (also as root, which chmod 000 would not stop)
    try:
        daemon.wait_for(
            lambda: any(e.get("event") == "storage.read_failed" for e in daemon.log_events()),
            20,
            "storage.read_failed",
        )
        wait_refreshes(daemon, 4)  # four more failed reads: within the minute, no line more
    finally:
        document.rmdir()
        aside.rename(document)
    daemon.wait_for(
        lambda: any(e.get("event") == "storage.recovered" for e in daemon.log_events()),
        20,
        "storage.recovered",
    )
    wait_refreshes(daemon, 2)
    assert daemon.stop() == 0
    events = daemon.log_events()  # every line is JSON (json_logs_only), or this raises
    assert [e for e in events if not isinstance(e.get("event"), str)] == []
    names = [e["event"] for e in events]
    assert names.count("storage.read_failed") == 1, names
    assert names.count("storage.recovered") == 1, names
    failure = next(e for e in events if e["event"] == "storage.read_failed")
    assert failure["keyset"] == "main" and failure["level"] == "error"
    recovered = next(e for e in events if e["event"] == "storage.recovered")
    assert recovered["keyset"] == "main"
    assert names.index("storage.read_failed") < names.index("storage.recovered")
    assert not any(name in FAILURES for name in names[names.index("storage.recovered") :])


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[tuple[str, int | None]]:
        return [(r.__dict__["event"], r.__dict__.get("count")) for r in self.records]


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("keyrotd.daemon")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_failure_is_logged_when_it_starts_then_once_a_minute(records: Records) -> None:
    now = [1000.0]
    failures = Failures("main", monotonic=lambda: now[0])
    for at in (0, 10, 59, REPEAT, REPEAT + 30, 2 * REPEAT + 1):
        now[0] = 1000.0 + at
        failures.failed("storage.read_failed", "file storage failed on /x: it is a directory")
    now[0] += 1
    failures.failed("storage.write_failed", "denied")  # another failure: a line of its own
    failures.succeeded()
    failures.succeeded()  # working, and already said so
    failures.failed("storage.read_failed", "again")  # a new outage: logged at once
    assert records.events() == [
        ("storage.read_failed", 1),
        ("storage.read_failed", 3),  # the first line, and the two failures not logged since
        ("storage.read_failed", 2),
        ("storage.write_failed", 1),
        ("storage.recovered", None),
        ("storage.read_failed", 1),
    ]
    assert {r.__dict__["keyset"] for r in records.records} == {"main"}


ACTIONS = st.sampled_from(["tick", "rotate", "revoke active", "revoke pending"])


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 40), ACTIONS, st.booleans()), max_size=14))
def test_the_journal_finds_every_transition_a_writer_made_once(
    steps: list[tuple[int, str, bool]],
) -> None:
    """Whatever documents a daemon happens to read (some, skipping others), the transitions it
    finds in storage are those another writer made since its first read, each once."""
    clock = ManualClock()
    policy = Policy(
        rotation_period=timedelta(seconds=30),
        publish_ahead=timedelta(seconds=10),
        token_lifetime=timedelta(seconds=5),
        clock_skew=timedelta(seconds=1),
    )
    made: list[tuple[str, str]] = []
    journal = Journal("main")
    handler = Records()
    logger = logging.getLogger("keyrotd")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        with tempfile.TemporaryDirectory() as directory:
            storage = FileStorage(Path(directory))
            writer = KeysetWriter(
                storage,
                KeysetSpec("main", "ES256", 2048, policy),
                clock,
                on_transition=lambda _name, t: made.append((t.event, t.kid)),
            )
            writer.apply()
            journal.saw(writer.load().keyset)  # the daemon starts: what it finds is given
            made.clear()
            for seconds, action, seen in steps:
                clock.advance(timedelta(seconds=seconds))
                keyset = writer.load().keyset
                command: Command = TICK
                if action == "rotate":
                    command = Rotate()
                elif action == "revoke active" and keyset.active is not None:
                    command = Revoke(keyset.active.kid)
                elif action == "revoke pending" and keyset.pending:
                    command = Revoke(keyset.pending[0].kid)
                writer.apply(command)
                if seen:
                    journal.saw(writer.load().keyset)
            journal.saw(writer.load().keyset)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    found = [(r.__dict__["event"], r.__dict__["kid"]) for r in handler.records]
    assert {r.__dict__["by"] for r in handler.records} <= {"storage"}
    assert sorted(found) == sorted(made)
