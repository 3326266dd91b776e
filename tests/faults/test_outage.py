"""Outages: storage unreachable, then slow, for longer than a rotation period, under a
real ``keyrotd run`` subprocess reached over real HTTP.

File backend: the daemon runs as ``nobody`` and the test (root) makes its storage directory
unreadable to it (mode 000), then gives it back. AWS backend: the daemon talks to moto's server
through a proxy that the test switches to "down" (connections reset), then to "slow" (each request
held 1.5 s), then back.

A watcher polls the JWKS and the admin ``signing-key`` endpoint every 50 ms throughout and checks,
in real elapsed time: every answer is a 200 JWKS; the signing key is always in it (nothing is
lost); a new signing key was in the JWKS ``publish_ahead`` before it first signed (G2, and G4
after the outage: nothing unpublished activates); a key leaves the JWKS no sooner than
``token_lifetime + clock_skew`` after it last signed (G3). ``/readyz`` stays 200 throughout
(the JWKS is served: an outage must not pull the daemon out of a load balancer) and names the
keyset ``degraded`` during the outage, the failure metrics count, and rotation resumes by itself
afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from keyrotd.lifecycle.commands import TICK
from keyrotd.model import Policy
from keyrotd.storage import Storage, Versioned
from keyrotd.storage.file import FileStorage
from keyrotd.storage.interface import ReadResult, read_each
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import ManualClock
from tests.support.daemon import NOBODY, Daemon, free_port, start_daemon
from tests.support.http import metric

PUBLISH_AHEAD = 2.5
RETENTION = 1.5
ROTATION = 5.0
OUTAGE = 6.0  # longer than a rotation period
POLL = 0.05
TOLERANCE = 0.4  # polling granularity and the daemon's own scheduling latency
ADMIN_TOKEN = "outage-test-admin-token-0123456789"

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_token_file = "{token}"
refresh_interval = "1s"
jwks_max_age = "1s"

[logging]
format = "json"

[[keysets]]
name = "default"
algorithm = "ES256"
rotation_period = "5s"
publish_ahead = "2500ms"
token_lifetime = "1s"
clock_skew = "500ms"
verifier_cache = "1s"
"""


@dataclass
class Poll:
    at: float
    jwks_status: int
    kids: frozenset[str]
    signer: str | None
    ready: int


@dataclass
class Watcher:
    """Polls the daemon in a thread until stopped; keeps every observation."""

    daemon: Daemon
    polls: list[Poll] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        while not self._stop.is_set():
            try:
                jwks = self.daemon.get("/.well-known/jwks.json")
                signing = self.daemon.get("/keysets/default/signing-key", auth)
                ready = self.daemon.get("/readyz")
            except OSError as error:
                self.errors.append(f"{type(error).__name__}: {error}")
            else:
                kids = frozenset(k["kid"] for k in jwks.json()["keys"])  # type: ignore[index]
                signer = signing.json()["active"]["kid"] if signing.status == 200 else None  # type: ignore[index]
                self.polls.append(Poll(time.monotonic(), jwks.status, kids, signer, ready.status))
            self._stop.wait(POLL)

    def since(self, start: float) -> list[Poll]:
        return [p for p in self.polls if p.at >= start]

    def check(self) -> dict[str, float]:
        """The guarantees over every poll; returns figures (seconds) for the report."""
        assert self.errors == [], self.errors[:5]
        assert self.polls
        first_published: dict[str, float] = {}
        first_signed: dict[str, float] = {}
        last_signed: dict[str, float] = {}
        removed: dict[str, float] = {}
        previous = self.polls[0].at
        for poll in self.polls:
            assert poll.jwks_status == 200
            assert poll.ready == 200, poll  # serving: ready, even while storage fails
            assert poll.signer is not None and poll.signer in poll.kids, poll
            # Published some time after the previous poll: take the earliest (the daemon's favour:
            # a stalled watcher must not look like an early activation).
            for kid in poll.kids:
                first_published.setdefault(kid, previous)
            previous = poll.at
            first_signed.setdefault(poll.signer, poll.at)
            last_signed[poll.signer] = poll.at
            for kid in first_published:
                if kid not in poll.kids:
                    removed.setdefault(kid, poll.at)
        initial = self.polls[0].kids  # published before the watcher started: times unknown
        shortest_publish = min(
            (first_signed[k] - first_published[k] for k in first_signed if k not in initial),
            default=float("inf"),
        )
        if shortest_publish < PUBLISH_AHEAD - TOLERANCE:
            t0 = self.polls[0].at
            names = {k: f"K{i}" for i, k in enumerate(first_published)}
            shown: object = None
            for poll in self.polls:  # the timeline of changes, for the failure report
                signer = names.get(poll.signer or "")
                line = (sorted(names[k] for k in poll.kids), signer, poll.ready)
                if line != shown:
                    print(f"{poll.at - t0:7.2f}", *line)
                shown = line
        assert shortest_publish >= PUBLISH_AHEAD - TOLERANCE, f"G2: {shortest_publish:.2f}s"
        kept = [removed[k] - last_signed[k] for k in removed if k in last_signed]
        shortest_kept = min(kept, default=float("inf"))
        assert shortest_kept >= RETENTION - TOLERANCE, f"G3: {shortest_kept:.2f}s"
        return {
            "polls": len(self.polls),
            "signers": len(first_signed),
            "shortest_publish": shortest_publish,
            "shortest_kept": shortest_kept,
        }


def degraded(daemon: Daemon) -> object:
    """The keysets ``/readyz`` names as degraded (storage failing); it answers 200 all along."""
    reply = daemon.get("/readyz")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert isinstance(body, dict)
    return body["degraded"]


def wait_for_fresh_activation(daemon: Daemon) -> str:
    """Wait until the signing key just changed and no successor is published yet: the outage then
    swallows the moment the successor is due (G4's situation)."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    state: dict[str, str | None] = {"signer": None}

    def changed_without_successor() -> bool:
        body = daemon.get("/keysets/default/signing-key", auth).json()
        assert isinstance(body, dict)
        signer = body["active"]["kid"]
        previous, state["signer"] = state["signer"], signer
        return previous is not None and signer != previous and body["next"] is None

    daemon.wait_for(changed_without_successor, 3 * ROTATION, "an activation", pause=0.02)
    assert state["signer"] is not None
    return state["signer"]


def outage_and_recovery(
    daemon: Daemon, break_storage: object, slow_storage: object, heal_storage: object
) -> dict[str, float]:
    with Watcher(daemon) as watcher:
        signer = wait_for_fresh_activation(daemon)
        failures_before = metric(daemon, "keyrotd_storage_failures_total") or 0.0
        start = time.monotonic()
        break_storage()  # type: ignore[operator]
        daemon.wait_for(lambda: degraded(daemon) == ["default"], OUTAGE, "/readyz degraded")
        time.sleep(max(0.0, start + OUTAGE - time.monotonic()))  # the outage itself
        failures = (metric(daemon, "keyrotd_storage_failures_total") or 0.0) - failures_before
        during = watcher.since(start)
        assert {p.signer for p in during} == {signer}, "G4: a key activated during the outage"
        slow_storage()  # type: ignore[operator]
        time.sleep(2.0)
        heal_storage()  # type: ignore[operator]
        healed = time.monotonic()
        daemon.wait_for(lambda: degraded(daemon) == [], 15, "/readyz not degraded again")
        recovered = time.monotonic() - healed
        # Rotation resumes: a successor is published after the outage, then activates.
        daemon.wait_for(
            lambda: bool(watcher.polls) and watcher.polls[-1].signer != signer,
            15,
            "the next activation after the outage",
        )
        resumed = time.monotonic() - healed
    figures = watcher.check()
    assert failures > 0, "the storage failures were not counted"
    figures |= {"failures": failures, "ready_again": recovered, "next_activation": resumed}
    return figures


def report(label: str, figures: dict[str, float]) -> None:
    print(
        f"{label}: outage {OUTAGE:.0f}s (rotation period {ROTATION:.0f}s) then 2s slow; "
        f"{figures['polls']:.0f} JWKS polls all 200 with the signing key in them; "
        f"{figures['failures']:.0f} storage failures counted; /readyz 200 throughout, undegraded "
        f"{figures['ready_again']:.1f}s after healing, next activation after "
        f"{figures['next_activation']:.1f}s; shortest publish-before-signing "
        f"{figures['shortest_publish']:.2f}s (>= {PUBLISH_AHEAD}s), shortest kept-after-signing "
        f"{figures['shortest_kept']:.2f}s (>= {RETENTION}s)"
    )


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody can traverse (pytest's temp root is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="keyrotd-outage-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_token(path: Path, owner: int | None = None) -> Path:
    path.write_text(ADMIN_TOKEN + "\n")
    path.chmod(0o600)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as nobody")
def test_file_storage_unreadable_then_slow_for_longer_than_a_rotation(open_dir: Path) -> None:
    store = open_dir / "store"
    store.mkdir(mode=0o700)
    os.chown(store, NOBODY, NOBODY)
    port = free_port()
    token = write_token(open_dir / "admin.token", NOBODY)
    config = open_dir / "keyrotd.toml"
    config.write_text(CONFIG.format(port=port, token=token) + f'\n[storage]\npath = "{store}"\n')
    config.chmod(0o644)
    lock_holder: list[int] = []

    def hold_the_lock() -> None:
        """Slow file storage: another process holds the keyset's write lock."""
        import fcntl

        store.chmod(0o700)
        fd = os.open(store / "default.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        lock_holder.append(fd)

    def release() -> None:
        store.chmod(0o700)
        for fd in lock_holder:
            os.close(fd)  # releases the lock

    daemon = start_daemon(config, port, log_path=open_dir / "daemon.log", as_nobody=True)
    try:
        figures = outage_and_recovery(
            daemon,
            break_storage=lambda: store.chmod(0o000),
            slow_storage=hold_the_lock,
            heal_storage=release,
        )
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_text()[-2000:]
    assert "permission denied" in daemon.log_text()
    report("file storage, daemon as nobody", figures)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from tests.support.moto import moto_endpoint

    with moto_endpoint() as url:
        yield url


def test_aws_storage_down_then_slow_for_longer_than_a_rotation(
    moto_url: str, tmp_path: Path
) -> None:
    from tests.support.moto import AWS_TEST_ENVIRONMENT, AWS_VARIABLES_TO_CLEAR, REGION

    from .proxy import faulty_proxy

    environ = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES_TO_CLEAR}
    environ |= AWS_TEST_ENVIRONMENT
    port = free_port()
    token = write_token(tmp_path / "admin.token")
    with faulty_proxy(moto_url) as proxy:
        config = tmp_path / "keyrotd.toml"
        config.write_text(
            CONFIG.format(port=port, token=token)
            + f'\n[storage]\ntype = "aws"\nsecret_prefix = "outage-{port}/"\n'
            f'region = "{REGION}"\nendpoint_url = "{proxy.url}"\n'
        )
        daemon = start_daemon(config, port, log_path=tmp_path / "daemon.log", environ=environ)
        try:
            figures = outage_and_recovery(
                daemon,
                break_storage=proxy.down,
                slow_storage=lambda: proxy.slow(1.5),
                heal_storage=proxy.up,
            )
        finally:
            code = daemon.stop()
    assert code == 0, daemon.log_text()[-2000:]
    report("AWS storage through a proxy", figures)


# --- slow storage, in-process with an injected clock -------------------------------------------


class SlowStorage:
    """A file storage whose writes take ``latency`` on the injected clock: the document becomes
    visible (is published) only when the write returns."""

    def __init__(self, inner: Storage, clock: ManualClock, latency: timedelta) -> None:
        self.inner = inner
        self.clock = clock
        self.latency = latency
        self.max_document_size = inner.max_document_size
        self.published_at: list[datetime] = []

    def location(self, keyset: str) -> str:
        return self.inner.location(keyset)

    def read(self, keyset: str) -> Versioned | None:
        return self.inner.read(keyset)

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        return read_each(self, keysets)

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        self.clock.advance(self.latency)
        version = self.inner.write(keyset, data, expected_version)
        self.published_at.append(self.clock.now)
        return version

    def list_keysets(self) -> list[str]:
        return self.inner.list_keysets()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("latency", [2, 30, 13 * 3600], ids=["2s", "30s", "13h"])
def test_a_slow_write_does_not_shorten_publish_ahead(tmp_path: Path, latency: int) -> None:
    """G2 under slow storage: a successor planned at t but written (visible) at t + latency must
    still be in the JWKS ``publish_ahead`` before it signs, i.e. activate no sooner than
    ``written + publish_ahead`` (the planner's ``now`` is taken before the write). The manager
    re-dates such keys with a second write; with a latency above ``publish_ahead`` (13h here)
    readers could still see the key due between the two writes: that residual window is
    reported, not closed."""
    policy = Policy(
        rotation_period=timedelta(hours=24),
        publish_ahead=timedelta(hours=12),
        token_lifetime=timedelta(hours=1),
        clock_skew=timedelta(minutes=5),
    )
    clock = ManualClock()
    storage = SlowStorage(FileStorage(tmp_path), clock, timedelta(seconds=latency))
    manager = KeysetWriter(storage, KeysetSpec("default", "EdDSA", 2048, policy), clock)
    manager.apply()
    clock.advance(timedelta(hours=12))  # the successor is due now
    writes_before = len(storage.published_at)

    outcome = manager.apply(TICK)

    visible = storage.published_at[writes_before]  # the write that first held the successor
    [successor] = manager.load().keyset.pending
    assert successor.activates_at is not None
    assert successor.activates_at - visible >= policy.publish_ahead, (
        f"published at {visible}, activates at {successor.activates_at}"
    )
    assert successor.created_at >= visible - timedelta(seconds=1)
    assert any(t.event == "key.created" for t in outcome.transitions)
