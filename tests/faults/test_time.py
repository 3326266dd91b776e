"""Time: the wall clock jumps forward past a rotation period and back by an hour.

What "early" and "unpublished" mean here. keyrotd records every lifecycle time in the document
in *wall-clock* time and the planner compares wall-clock times: a key activates when
``now >= activates_at >= created_at + publish_ahead``, a retired key leaves when
``now >= expires_at = retired_at + token_lifetime + clock_skew``. So two readings of G2 and G3:

- on paper: the document's own timestamps satisfy G2 and G3. That holds whatever the clock does
  (tested below for arbitrary sequences of jumps), and nothing ever goes back: an active key
  stays active, a retired key stays retired, an expiry is never before its due time.
- in elapsed time (what verifiers experience): the key was really in the served JWKS for
  ``publish_ahead`` before it signed, and really stayed ``token_lifetime + clock_skew`` after it
  stopped. A *backward* jump only delays transitions: elapsed time between two events is then
  longer than their wall-clock difference, so elapsed-time G2/G3 follow from the paper ones.
  A *forward* jump of J would make everything due within J happen at once: a successor published
  a minute before the jump would activate (G2 broken in elapsed time) and the key it replaces
  would leave the JWKS at once (G3 broken). A long-lived writer (the daemon's KeysetWriter,
  given ``time.monotonic``) compares the wall clock's progress with the monotonic clock's between
  writes and postpones the schedule by the jump (``lifecycle.Postpone``):
  ``test_forward_jump_keeps_g2_and_g3_in_elapsed_time``. A short-lived CLI process cannot notice
  a jump; it applies what is due on the wall clock (``..._keeps_the_guarantees_on_paper``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrotd.lifecycle.commands import TICK, Command, Rotate
from keyrotd.model import Keyset, KeyState, Policy, from_json
from keyrotd.storage.file import FileStorage
from keyrotd.times import CLOCK_JUMP
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import T0, ManualClock
from tests.support.daemon import Daemon, free_port, start_daemon
from tests.support.keysets import POLICY

from .helpers import SECOND, History

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@dataclass
class Host:
    """One keyset on a file store, written through a KeysetWriter whose wall clock can jump.

    ``true`` is the real (elapsed) time; the manager sees ``true + offset``. Every write is
    recorded with both times, so the guarantees can be checked on paper and in elapsed time.
    """

    directory: Path
    policy: Policy = POLICY
    watches_monotonic: bool = True
    """Whether the manager compares the wall clock with the monotonic (true) clock, as the daemon's
    does; a CLI process lives too briefly to notice a jump."""
    true: datetime = T0
    offset: timedelta = timedelta(0)
    history: History = field(init=False)
    published: dict[str, datetime] = field(default_factory=dict)
    """kid -> true time of the first write that held it."""
    signing: dict[str, datetime] = field(default_factory=dict)
    """kid -> true time it first signed (became active in what readers see)."""
    stopped: dict[str, datetime] = field(default_factory=dict)
    """kid -> true time it last signed."""
    removed: dict[str, datetime] = field(default_factory=dict)
    """kid -> true time it left what readers see."""

    def __post_init__(self) -> None:
        self.clock = ManualClock(self.true)
        self.history = History(self.policy)
        spec = KeysetSpec("default", "EdDSA", 2048, self.policy)
        monotonic = self.monotonic if self.watches_monotonic else None
        self.manager = KeysetWriter(
            FileStorage(self.directory), spec, self.clock, monotonic=monotonic
        )

    def monotonic(self) -> float:
        return (self.true - T0).total_seconds()

    @property
    def wall(self) -> datetime:
        return self.clock.now

    def elapse(self, delta: timedelta) -> None:
        self.true += delta
        self.clock.now = self.true + self.offset

    def jump(self, delta: timedelta) -> None:
        self.offset += delta
        self.clock.now = self.true + self.offset

    def apply(self, command: Command = TICK) -> Keyset:
        outcome = self.manager.apply(command)
        self.history.report(outcome.transitions)
        self.observe()
        return outcome.keyset

    def observe(self) -> Keyset:
        """What a reader (the daemon's JWKS, ``signing-key``) sees now; recorded in true time."""
        stored = self.manager.load().keyset
        self.history.observe(stored, self.wall)
        seen = self.manager.view(self.wall)
        live = {k.kid for k in seen.keys}
        for key in stored.keys:
            self.published.setdefault(key.kid, self.true)
        active = seen.active
        assert active is not None
        self.signing.setdefault(active.kid, self.true)
        self.stopped[active.kid] = self.true
        for kid in self.published:
            if kid not in live:
                self.removed.setdefault(kid, self.true)
        return seen

    def elapsed_time_violations(self) -> list[str]:
        """G2 and G3 measured in true time (announced exceptions excepted)."""
        found = []
        for kid, first in self.signing.items():
            if kid in self.history.exceptions:
                continue
            if first - self.published[kid] < self.policy.publish_ahead:
                found.append(f"G2: {kid} signed {first - self.published[kid]} after publication")
        for kid, gone in self.removed.items():
            if kid in self.stopped and kid not in self.history.revoked:
                kept = gone - self.stopped[kid]
                if kept < self.policy.retention:
                    found.append(f"G3: {kid} left the JWKS {kept} after it last signed")
        return found


def keys_by_state(keyset: Keyset) -> dict[str, KeyState]:
    return {k.kid: k.state for k in (*keyset.keys, *keyset.history)}


def started(tmp_path: Path, *, watches_monotonic: bool = True) -> tuple[Host, str, str]:
    """A keyset whose successor B was published at 12h, to activate at 24h; A is active."""
    host = Host(tmp_path, watches_monotonic=watches_monotonic)
    first = host.apply()
    host.elapse(12 * HOUR)
    second = host.apply()
    [b] = second.pending
    a = first.active
    assert a is not None and b.activates_at == T0 + 24 * HOUR
    return host, a.kid, b.kid


# --- forward ---------------------------------------------------------------------------------


def test_forward_jump_past_a_rotation_period_keeps_the_guarantees_on_paper(
    tmp_path: Path,
) -> None:
    """A writer that cannot notice the jump (a CLI process) applies what fell due within it."""
    host, a, b = started(tmp_path, watches_monotonic=False)
    host.elapse(MINUTE)
    host.jump(25 * HOUR)  # wall: T0 + 37h01m

    keyset = host.apply()

    states = keys_by_state(keyset)
    assert states[a] is KeyState.EXPIRED and states[b] is KeyState.ACTIVE
    active, expired = keyset.find(b), keyset.find(a)
    assert active is not None and expired is not None
    # Recorded at the times they were due, not at the time of the jump.
    assert active.activates_at == T0 + 24 * HOUR
    assert expired.retired_at == T0 + 24 * HOUR
    assert expired.expires_at == T0 + 24 * HOUR + POLICY.retention
    # The next successor is published at the new wall time and waits publish_ahead from it.
    [c] = keyset.pending
    assert c.created_at == host.wall
    assert c.activates_at == host.wall + POLICY.publish_ahead
    assert host.history.unexplained_activations() == []


def test_forward_jump_keeps_g2_and_g3_in_elapsed_time(tmp_path: Path) -> None:
    """A long-lived writer (the daemon) notices the jump against the monotonic clock and postpones
    the schedule by it: B still spends publish_ahead in the JWKS before it signs and A stays
    token_lifetime + clock_skew after it stops, in elapsed time."""
    host, a, b = started(tmp_path)
    host.elapse(MINUTE)
    host.jump(25 * HOUR)
    host.elapse(timedelta(seconds=1))  # the daemon's next tick
    keyset = host.apply()
    postponed = keyset.find(b)
    assert postponed is not None and postponed.state is KeyState.PENDING
    assert postponed.activates_at == T0 + 24 * HOUR + 25 * HOUR + CLOCK_JUMP  # with a margin
    for _ in range(4):  # through B's activation and A's expiry, in true time
        host.elapse(6 * HOUR)
        host.apply()
    states = keys_by_state(host.observe())
    assert states[b] is KeyState.ACTIVE
    assert states[a] is KeyState.EXPIRED
    assert host.elapsed_time_violations() == []


# --- backward --------------------------------------------------------------------------------


def test_backward_jump_after_an_activation_un_retires_nothing(tmp_path: Path) -> None:
    host, a, b = started(tmp_path)
    host.elapse(12 * HOUR + timedelta(seconds=1))  # 24h00m01s: B activates, A retires
    before = host.apply()
    assert keys_by_state(before) == {a: KeyState.RETIRED, b: KeyState.ACTIVE}

    host.jump(-HOUR)  # wall: 23h00m01s, before B's activation time
    for command in (TICK, Rotate(), TICK):
        host.elapse(MINUTE)
        host.apply(command)
    after = host.observe()

    assert after.active is not None and after.active.kid == b
    retired = after.find(a)
    assert retired is not None and retired.state is KeyState.RETIRED
    assert retired.private_jwk is None
    assert retired.expires_at == T0 + 24 * HOUR + POLICY.retention
    # `rotate` at the earlier wall time published C; it waits publish_ahead of wall time.
    [c] = after.pending
    assert c.activates_at is not None and c.activates_at - c.created_at >= POLICY.publish_ahead
    # A stays in the JWKS until its expiry on the (late) wall clock: an hour longer in real time.
    host.elapse(HOUR + 2 * MINUTE)
    assert a in {k.kid for k in host.observe().keys}
    host.elapse(HOUR)
    host.apply()
    assert host.removed[a] - host.stopped[a] >= POLICY.retention + HOUR - 5 * MINUTE
    assert host.elapsed_time_violations() == []


def test_backward_jump_before_the_activation_is_written_delays_it(tmp_path: Path) -> None:
    """Readers had already seen B active (``view`` applies due activations in memory); after the
    wall clock goes back an hour and before any write, they see A sign again for that hour.
    A keeps its private key (nothing was written) and stays in the JWKS far past the tokens it
    signs, so verifiers accept both; the activation is then written at its recorded time."""
    host, a, b = started(tmp_path)
    host.elapse(12 * HOUR + timedelta(seconds=1))
    seen = host.observe()
    assert seen.active is not None and seen.active.kid == b

    host.jump(-HOUR)
    seen = host.observe()
    assert seen.active is not None and seen.active.kid == a
    assert {k.kid for k in seen.keys} == {a, b}  # B stays published

    host.elapse(HOUR)
    keyset = host.apply()
    active = keyset.find(b)
    assert active is not None and active.state is KeyState.ACTIVE
    assert active.activates_at == T0 + 24 * HOUR
    assert host.elapsed_time_violations() == []


# --- any sequence of jumps -----------------------------------------------------------------------

MOVES = st.one_of(
    st.tuples(st.just("elapse"), st.integers(0, 26 * 3600)),
    st.tuples(st.just("jump"), st.integers(-3600, 0)),
    st.tuples(st.just("jump"), st.integers(24 * 3600, 30 * 3600)),
    st.tuples(st.sampled_from(["tick", "rotate", "rotate-now"]), st.just(0)),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(moves=st.lists(MOVES, min_size=1, max_size=25))
def test_any_sequence_of_jumps_keeps_the_guarantees_on_paper(
    tmp_path_factory: pytest.TempPathFactory, moves: list[tuple[str, int]]
) -> None:
    """Forward jumps past a rotation period and backward jumps of up to an hour, between ticks and
    commands: every document keeps one active key, G3 on its timestamps, and no recorded time is
    ever rewritten (nothing goes back from retired to active). With backward jumps only, G2 and
    G3 also hold in elapsed time."""
    host = Host(tmp_path_factory.mktemp("store"))
    host.apply()
    forward_jumps = 0
    for move, amount in moves:
        if move == "elapse":
            host.elapse(timedelta(seconds=amount))
        elif move == "jump":
            host.jump(timedelta(seconds=amount))
            forward_jumps += amount > 0
        else:
            host.apply(TICK if move == "tick" else Rotate(now=move == "rotate-now"))
        host.observe()
    host.apply()
    assert host.history.unexplained_activations() == []
    if not forward_jumps:
        assert host.elapsed_time_violations() == []


# --- a real daemon under libfaketime -----------------------------------------------------------
#
# Debian's ``faketime`` package preloads libfaketime into the daemon; the offset is read from a
# file at every clock call (FAKETIME_NO_CACHE), so the test moves the daemon's wall clock while
# it runs. CLOCK_MONOTONIC is left real (FAKETIME_DONT_FAKE_MONOTONIC), as a jump guard needs.
# Skipped where the library is not installed (``apt-get install faketime``).

LIBFAKETIME = next(
    (
        path
        for path in (
            Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
            Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
            Path("/usr/lib/faketime/libfaketime.so.1"),
        )
        if path.exists()
    ),
    None,
)
DAEMON_POLICY = """
[server]
listen = "127.0.0.1:{port}"
admin_token_file = "{token}"
refresh_interval = "1s"
jwks_max_age = "1s"

[storage]
path = "{store}"

[[keysets]]
name = "default"
algorithm = "ES256"
rotation_period = "6s"
publish_ahead = "3s"
token_lifetime = "1s"
clock_skew = "1s"
verifier_cache = "1s"
"""
TOKEN = "faketime-admin-token-3b9e0d7c52a1f846"
needs_libfaketime = pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime not installed")


@dataclass
class FakedDaemon:
    daemon: Daemon
    offset_file: Path
    config: Path
    store: Path

    def shift(self, seconds: int) -> None:
        self.offset_file.write_text(f"{seconds:+d}\n")

    def served(self) -> tuple[list[str], str]:
        jwks = self.daemon.get("/.well-known/jwks.json")
        assert jwks.status == 200
        signing = self.daemon.get(
            "/keysets/default/signing-key", {"Authorization": f"Bearer {TOKEN}"}
        )
        kids = [k["kid"] for k in jwks.json()["keys"]]  # type: ignore[index]
        signer = signing.json()["active"]["kid"]  # type: ignore[index]
        assert signer in kids, "the signing key is not in the JWKS"
        return kids, signer

    def stored(self) -> Keyset:
        stored = FileStorage(self.store).read("default")
        assert stored is not None
        return from_json(stored.data, stored.location)


@pytest.fixture
def faked_daemon(tmp_path: Path) -> Iterator[FakedDaemon]:
    assert LIBFAKETIME is not None
    token = tmp_path / "admin.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    port = free_port()
    config = tmp_path / "keyrotd.toml"
    store = tmp_path / "store"
    config.write_text(DAEMON_POLICY.format(port=port, token=token, store=store))
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    environ = dict(os.environ) | {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    daemon = start_daemon(config, port, log_path=tmp_path / "daemon.log", environ=environ)
    try:
        yield FakedDaemon(daemon, offset, config, store)
    finally:
        assert daemon.stop() == 0


def watch(faked: FakedDaemon, seconds: float) -> list[tuple[float, list[str], str]]:
    polls = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids, signer = faked.served()
        polls.append((time.monotonic(), kids, signer))
        time.sleep(0.02)
    return polls


@needs_libfaketime
@pytest.mark.alone  # seconds-wide windows of real time: another worker's container build starved it
def test_daemon_forward_jump_past_a_rotation_period(faked_daemon: FakedDaemon) -> None:
    """The daemon's clock jumps +10 s (rotation period 6 s) right after it published a successor.

    The daemon notices the jump against its monotonic clock and postpones the schedule by it: the
    JWKS is served throughout with the signing key in it, the successor still signs only after
    publish_ahead (3 s) of real time, the old key stays token_lifetime + clock_skew (2 s) after it
    last signed, and the stored documents keep G1-G3 on paper."""
    history = History(Policy(6 * SECOND, 3 * SECOND, SECOND, SECOND))
    faked_daemon.daemon.wait_for(
        lambda: len(faked_daemon.served()[0]) == 2, 15, "a published successor", pause=0.02
    )
    published = time.monotonic()
    before_kids, old_signer = faked_daemon.served()
    faked_daemon.shift(+10)
    polls = watch(faked_daemon, 7.0)
    history.report(faked_daemon.daemon.transitions())
    history.observe(faked_daemon.stored())
    assert history.unexplained_activations() == []
    assert all(signer in kids for _, kids, signer in polls)

    [successor] = [k for k in before_kids if k != old_signer]
    # In the documents: the daemon's wall clock ran exactly 10 s ahead after the shift, so in
    # real time the successor signed activates_at - 10 s, published at created_at (before it).
    stored = faked_daemon.stored()
    new, old = stored.find(successor), stored.find(old_signer)
    assert new is not None and new.activates_at is not None
    assert old is not None and old.expires_at is not None and old.retired_at is not None
    assert new.activates_at - 10 * SECOND - new.created_at >= 3 * SECOND
    assert old.expires_at - old.retired_at >= 2 * SECOND
    # As served: polled every ~20 ms over HTTP on a busy machine, hence the slack.
    signed = next((at for at, _, signer in polls if signer == successor), None)
    last_old = max(at for at, _, signer in polls if signer == old_signer)
    removed = next((at for at, kids, _ in polls if old_signer not in kids), None)
    assert signed is not None and removed is not None
    print(
        f"forward jump: successor signed {signed - published:.2f}s after it was seen published "
        f"(publish_ahead 3s); old key left the JWKS {removed - last_old:.2f}s after it was last "
        "seen signing (retention 2s)"
    )
    slack = 0.3
    assert signed - published >= 3 - slack
    assert removed - last_old >= 2 - slack
    assert any(e.get("event") == "clock.jumped" for e in faked_daemon.daemon.log_events())


@needs_libfaketime
@pytest.mark.alone  # seconds-wide windows of real time, as above
def test_daemon_backward_jump_by_an_hour(faked_daemon: FakedDaemon) -> None:
    """The daemon's clock goes back an hour: nothing un-retires or disappears, the JWKS is served
    throughout, and an operator's ``keyrotd rotate`` from a host with a right clock is still
    served within ``refresh_interval`` (+ slack). Before the daemon's jump watch (2bd6dd5),
    APScheduler kept its wall-clock wake-ups and the refresh stopped for the hour."""
    faked = faked_daemon
    kids_before, signer_before = faked.served()
    faked.shift(-3600)
    polls = watch(faked, 1.0)
    assert {signer for _, _, signer in polls} == {signer_before}
    assert all(set(kids_before) <= set(kids) for _, kids, _ in polls)

    result = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "--config", str(faked.config), "rotate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [created] = re.findall(r"key\.created (\S+)", result.stdout)
    faked.daemon.wait_for(
        lambda: created in faked.served()[0], 3.0, "the daemon to serve the CLI's new key"
    )
    assert faked.served()[1] == signer_before  # nothing activated or un-retired meanwhile
    assert any(e.get("event") == "clock.jumped" for e in faked.daemon.log_events())
