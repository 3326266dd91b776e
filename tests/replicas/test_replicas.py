"""Three replicas, one AWS endpoint: real ``keyrotd run`` subprocesses on moto's server
(127.0.0.1, a port of its own), reached over real HTTP; the tests read the secrets with boto3.

One moto server and one set of three replicas serve the whole module (starting them costs
seconds, the CI budget is tight); two keysets rotate every 3 s on them: ``e2e`` (RS256, the
daemon issue's end-to-end policy) and ``default`` (ES256, raced by the CLI: the same timings but
a 10 s token lifetime). A recorder polls every replica's JWKS and every keyset's document all
along (``cluster.Recorder``); each test checks the part of the recording it caused, and every
version stored meanwhile, read back from moto (which keeps them all):

1. ``e2e`` with nothing but the replicas writing, for more than ten rotations (the issuer's
   replica SIGKILLed and started again halfway, as in the file-backend run): one successor per
   rotation, one active key in every document, no kid served by one replica and not by another
   for longer than ``refresh_interval`` + ``TOLERANCE``.
2. 50 CLI processes (``rotate``, ``rotate --now``, ``revoke``) on ``default`` racing the
   replicas: every kid ever created still in the document or gone the right way, never two
   active keys, the replicas in step as in 1 (with ``RACE_TOLERANCE``: the processes share the
   two cores with the replicas).
3. moto stopped (the server itself, then started again on the same port) for longer than a
   rotation: every JWKS request still answered 200, ``/readyz`` 200 naming the keysets degraded
   (an outage must not pull every replica out of a load balancer), then everything recovers by
   itself and nothing unpublished activates (G4).
4. The end-to-end issuer and verifiers of the file-backend test, across the replicas, in the
   same run as 1.

``test_aws_api_calls_per_key_lifecycle`` counts the API calls of a key's life at the default
policy, for the README's quota arithmetic.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from keyrotd.config import load_settings
from keyrotd.lifecycle.commands import TICK
from keyrotd.lifecycle.planner import view
from keyrotd.model import Key, KeyState, Policy, from_json
from keyrotd.storage.aws.storage import AwsStorage, RetryPolicy
from keyrotd.times import utc_now
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.daemon.test_rotation_e2e import KEYSET, MAX_AGE, PUBLISH_AHEAD, REFRESH, ROTATIONS
from tests.faults.helpers import activated
from tests.faults.test_races import Backend, Race
from tests.storage.test_aws import ApiCalls
from tests.support.clock import T0, ManualClock
from tests.support.daemon import TOKEN, Daemon
from tests.support.http import metric
from tests.support.moto import (
    REGION,
    MotoServer,
    fake_aws_environment,
)
from tests.support.waiting import wait_for

from . import e2e
from .cli import CliForks
from .cluster import (
    JWKS_TIMEOUT,
    Divergence,
    Recorder,
    Round,
    check_versions,
    divergences,
    explain,
    lost_swaps,
    make_replicas,
    stored_versions,
    transitions_in,
)

# replica clusters driven in real time: alone, as other workers' contention starves their races
pytestmark = [pytest.mark.slow, pytest.mark.alone]

E2E = e2e.NAME
RACED = "default"
KEYSETS = [dict(KEYSET), {**KEYSET, "name": RACED, "algorithm": "ES256", "token_lifetime": "10s"}]
"""``default`` rotates as ``e2e`` does, but keeps a retired key 11 s (not 3 s) in the JWKS: the
race's revokes, however late a busy machine runs them, still find most of their keys there."""
SERVER = {"refresh_interval": f"{REFRESH}s", "jwks_max_age": f"{MAX_AGE}s"}
REPLICAS = 3
TOLERANCE = 0.5
"""Allowed beyond ``refresh_interval`` for a change to reach every replica: one storage read (moto
answers from this test process), the scheduler's latency and the HTTP answer, on a shared
two-core machine. Checked against ``Divergence.seen``, which the observer's own delays cannot
lengthen."""
RACE_TOLERANCE = 1.5
"""The same while 50 CLI processes share the two cores with the replicas (seen: up to 0.6 s on a
quiet machine, 1.1 s with the machine's load at 30)."""
CLI_RUNS = 50
WAVES = 5
WAVE_PAUSE = 0.5
"""The CLI processes are released in waves, so that they aim at more than one set of keys."""
OUTAGE = 5.0
"""How long moto stays stopped: longer than a rotation period (3 s)."""


# --- the cluster ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    directory: Path
    moto: MotoServer
    prefix: str
    replicas: list[Daemon]
    policies: dict[str, Policy]
    observer: AwsStorage
    recorder: Recorder
    environ: dict[str, str]

    @property
    def client(self) -> Any:
        return self.observer.client

    def secret(self, keyset: str) -> str:
        return self.prefix + keyset

    def storage(self) -> AwsStorage:
        return AwsStorage(secret_prefix=self.prefix, region=REGION, endpoint_url=self.moto.url)

    def unexplained_activations(self, keyset: str) -> list[Key]:
        """Keys of ``keyset`` that signed before being published ``publish_ahead``, other than the
        exceptions (first key, ``rotate --now``, revoke of the active key) a replica logged."""
        with self.recorder.lock:
            history = self.recorder.histories[keyset]
            for replica in self.replicas:
                history.report(transitions_in(replica.log_events(), keyset))
            return history.unexplained_activations()

    def versions(self) -> dict[str, list[str]]:
        return {name: stored_versions(self.client, self.secret(name)) for name in self.policies}


@pytest.fixture(scope="module")
def aws_environ() -> Iterator[dict[str, str]]:
    """moto's fake credentials and region in this module's environment; yields the environment
    of the replicas and CLI processes."""
    with fake_aws_environment():
        yield {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KEYROTD_", "NOTIFY_SOCKET", "WATCHDOG_"))
        }


@pytest.fixture(scope="module")
def moto(aws_environ: dict[str, str]) -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(
    moto: MotoServer, aws_environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    prefix = f"replicas-{uuid.uuid4().hex[:12]}/"
    storage = {"type": "aws", "secret_prefix": prefix, "region": REGION, "endpoint_url": moto.url}
    directory = tmp_path_factory.mktemp("replicas")
    replicas = make_replicas(
        directory,
        REPLICAS,
        storage=storage,
        server=SERVER,
        keysets=KEYSETS,
        env=aws_environ,
    )
    settings = load_settings(str(replicas[0].config), environ={})  # the fast policy is accepted
    policies = {keyset.name: keyset.policy for keyset in settings.keysets}
    observer = AwsStorage(
        secret_prefix=prefix,
        region=REGION,
        endpoint_url=moto.url,
        retry=RetryPolicy(max_attempts=1, connect_timeout=1, read_timeout=3),
    )
    recorder = Recorder(replicas, observer, policies)
    try:
        for replica in replicas:  # started together: they bootstrap both keysets in a race
            replica.start(wait=False)
        for replica in replicas:
            replica.wait_ready()
        recorder.start()
        wait_for(lambda: len(recorder.latest) == len(policies), 10, "the first documents")
        yield Cluster(directory, moto, prefix, replicas, policies, observer, recorder, aws_environ)
    finally:
        recorder.stop()
        codes = [stop(replica) for replica in replicas if replica.process is not None]
        observer.close()
    assert codes == [0] * REPLICAS, [r.log_text()[-2000:] for r in replicas]


def stop(replica: Daemon) -> int:
    """SIGTERM and its exit code; -1 if it had to be killed."""
    try:
        return replica.stop()
    except AssertionError:
        return -1


@dataclass(frozen=True)
class QuietRun:
    """``e2e.drive`` on the cluster, and the versions stored meanwhile (per keyset)."""

    drive: e2e.Drive
    versions: dict[str, list[str]]


@pytest.fixture(scope="module")
def quiet_run(cluster: Cluster) -> QuietRun:
    """More than ten rotations with nothing but the replicas writing (tests 1 and 4 share it)."""
    before = cluster.versions()
    drive = e2e.drive(cluster.replicas)
    after = cluster.versions()
    return QuietRun(drive, {name: after[name][len(before[name]) :] for name in after})


def check_in_step(
    found: list[Divergence], rounds: list[Round], keyset: str, tolerance: float = TOLERANCE
) -> None:
    """No kid seen served by some replicas and not by others for longer than
    ``refresh_interval + tolerance`` (``Divergence.seen``: what the answers prove, whatever the
    observer's own delays; ``describe`` also reports the outer bound)."""
    for divergence in found:
        assert divergence.finished, explain(divergence, rounds, keyset)
        assert divergence.seen <= REFRESH + tolerance, explain(divergence, rounds, keyset)


# --- 1. in step ----------------------------------------------------------------------------------


def test_three_replicas_rotate_one_keyset_in_step(cluster: Cluster, quiet_run: QuietRun) -> None:
    drive, recorder = quiet_run.drive, cluster.recorder
    start, end = drive.start, drive.end
    assert recorder.violations == []
    assert cluster.unexplained_activations(E2E) == [], "G2: activated before publish_ahead"
    with recorder.lock:
        records = list(recorder.histories[E2E].records.values())

    # Rotations and successors, from the documents: keys created in the run, activation times.
    created = sorted(
        (k for k in records if start <= k.created_at.timestamp() <= end),
        key=lambda k: k.created_at,
    )
    activations = sorted(
        k.activates_at
        for k in records
        if k.activates_at is not None
        and start <= k.activates_at.timestamp() <= end
        and k.state is not KeyState.REVOKED
    )
    assert len(activations) >= 10
    per_rotation = [sum(a <= k.created_at < b for k in created) for a, b in pairwise(activations)]
    assert per_rotation == [1] * len(per_rotation), "one successor per rotation"
    never_signed = [k.kid for k in created if not activated(k) and k.state is KeyState.PENDING]
    assert len(never_signed) <= 1, "a successor was replaced by another"
    assert all(activated(k) or k.kid in never_signed for k in created)

    # The same from the replicas' logs: each successor logged once, by the replica that wrote it.
    logged = [
        (n, t)
        for n, replica in enumerate(cluster.replicas)
        for t in transitions_in(replica.log_events(), E2E)
        if start <= t.at.timestamp() <= end
    ]
    made = [t.kid for _, t in logged if t.event == "key.created"]

    def created_ever() -> list[str]:
        return [
            t.kid
            for replica in cluster.replicas
            for t in transitions_in(replica.log_events(), E2E)
            if t.event == "key.created"
        ]

    # A replica logs its transitions just after its write returns: a key written as the run
    # ended can be in storage (and so in the records) a moment before its line is in the log.
    wait_for(lambda: {k.kid for k in created} <= set(created_ever()), 5, "every created key logged")
    made_ever = created_ever()
    assert len(made_ever) == len(set(made_ever)), "a successor was logged twice"
    # A write slower than a second re-dates its key's created_at (Republish), so a key logged
    # just inside the window may be dated just outside it, and the reverse: compare each way.
    assert {k.kid for k in created} <= set(made_ever)

    def recorded() -> set[str]:
        with recorder.lock:
            return {k.kid for k in recorder.histories[E2E].records.values()}

    # and the reverse: a key logged as the run ended is in the recorder's next poll of storage
    wait_for(lambda: set(made) <= recorded(), 5, "every logged key recorded")
    assert set(made) <= recorded()
    assert [t for _, t in logged if t.event == "key.activated" and t.exception] == []
    writers = Counter(n for n, t in logged if t.event == "key.created")
    lost = sum(lost_swaps(replica, E2E, start, end) for replica in cluster.replicas)

    # Every version stored meanwhile, the losing writers' included: one active key, one successor.
    checked = {
        name: check_versions(cluster.client, cluster.secret(name), versions, cluster.policies[name])
        for name, versions in quiet_run.versions.items()
    }

    # What the replicas served: the same kids but for refresh_interval + TOLERANCE (a change
    # under way when the run ended is followed until it has had that time to arrive).
    after = end + REFRESH + TOLERANCE
    wait_for(lambda: recorder.rounds[-1].start > after, 10, "the recorder to pass the run's end")
    rounds = recorder.between(start, after + 0.5)
    spans = {
        name: [d for d in divergences(rounds, name) if d.start < end] for name in cluster.policies
    }
    for name, found in spans.items():
        check_in_step(found, rounds, name)
    missed = [a for r in recorder.between(start, end) for a in r.answers if a.status != 200]
    down = drive.killed - JWKS_TIMEOUT, drive.back  # a request sent before the kill may be cut
    unexpected = [a for a in missed if a.replica != 0 or not down[0] <= a.at <= down[1]]
    assert unexpected == []
    print(
        f"\n{REPLICAS} replicas, {end - start:.1f}s: {len(activations)} rotations of {E2E}, "
        f"{len(created)} successors (one per rotation; written by replicas "
        f"{dict(sorted(writers.items()))}); {len(records)} keys in {recorder.documents(E2E)} "
        f"documents read, {checked} versions stored and checked "
        f"({len(quiet_run.versions[E2E]) / len(activations):.1f} PutSecretValue per rotation of "
        f"{E2E}, {lost / len(activations):.1f} compare-and-swaps lost per rotation); "
        f"{len(recorder.between(start, end))} JWKS rounds: divergences {describe(spans[E2E])} "
        f"for {E2E}, "
        f"{describe(spans[RACED])} for {RACED} (bound {REFRESH + TOLERANCE:.1f}s); "
        f"{len(missed)} JWKS requests unanswered or not 200, all to replica 0 between its "
        f"SIGKILL and its restart ({drive.back - drive.killed:.1f}s)"
    )


def describe(found: list[Divergence]) -> str:
    if not found:
        return "none"
    seen = sorted(d.seen for d in found)
    bound = max(d.bound for d in found)
    return (
        f"{len(found)}x, seen for median {seen[len(seen) // 2]:.2f}s, max {seen[-1]:.2f}s "
        f"(at most {bound:.2f}s)"
    )


# --- 4. the end-to-end verifier run across replicas -----------------------------------------------


def test_issuer_and_verifiers_across_replicas_never_fail(
    cluster: Cluster, quiet_run: QuietRun
) -> None:
    run = quiet_run.drive.run
    assert run.failures == []
    assert len(run.signed) >= ROTATIONS + 1  # ROTATIONS switches between signing keys
    assert run.checked["fresh"] == run.checked["before-expiry"] == sum(run.signed.values())
    activations = [
        t
        for replica in cluster.replicas
        for t in transitions_in(replica.log_events(), E2E)
        if t.event == "key.activated"
    ]
    assert len(activations) >= ROTATIONS
    assert run.secrets  # no private key value ever served appears in any replica's log
    for replica in cluster.replicas:
        for line in replica.log_text().splitlines():
            assert not any(secret in line for secret in run.secrets), line
            json.loads(line)
    print(
        f"\nissuer on replica 0 (SIGKILLed and restarted), verifiers on replicas 1 and 2: "
        f"{sum(run.signed.values())} tokens signed with {len(run.signed)} keys, each verified "
        f"right after signing and before expiry, 0 failures"
    )


# --- 2. CLI processes race the replicas -----------------------------------------------------------


CLI_COMMANDS = (
    ("rotate",),
    ("rotate", "--now", "--force"),
    ("revoke", "@newest"),
    ("revoke", "@active"),
    ("revoke", "@oldest"),
)
"""In turn; a role (``@newest`` ...) becomes a live kid when the process runs (see ``cli``)."""


def test_fifty_cli_processes_race_the_replicas(cluster: Cluster) -> None:
    """The processes run ``keyrotd.cli.main`` forked from one process that did the imports
    (see ``cli``), released in five waves of ten half a second apart; each revoke aims at a key
    still in the JWKS when it runs, and the others of its wave may aim at the same one."""
    recorder, policy = cluster.recorder, cluster.policies[RACED]
    race = Race(
        Backend("aws", cluster.storage, "", cluster.environ),
        cluster.replicas[0].config,
        recorder.histories[RACED],
        recorder.lock,
    )
    before = cluster.versions()[RACED]
    began = time.time()
    forks = CliForks(cluster.directory / "cli", race.config, cluster.environ)
    try:
        start = time.time()
        each = CLI_RUNS // WAVES
        for wave in range(WAVES):
            for index in range(wave * each, (wave + 1) * each):
                command = CLI_COMMANDS[index % len(CLI_COMMANDS)]
                forks.release(index, *command, "--keyset", RACED)
            if wave + 1 < WAVES:
                time.sleep(WAVE_PAUSE)  # pacing, not waiting for a condition
        results = forks.results(timeout=120)
        end = time.time()
    finally:
        forks.kill()
    assert [(r.argv, r.code, r.stderr) for r in results if r.code != 0] == []
    for result in results:
        race.report(result.transitions())

    # The replicas converge on what is stored.
    def converged() -> bool:
        rounds = recorder.between(end, time.time())
        stored = recorder.latest[RACED]
        served = view(stored.keyset, policy, utc_now()).jwks()["keys"]
        last = rounds[-1] if rounds else None
        return last is not None and last.served(RACED) == {frozenset(k["kid"] for k in served)}

    wait_for(converged, 10 * REFRESH + 5, "the replicas to serve the stored keys")
    settled = time.time() - end

    for replica in cluster.replicas:
        race.report(transitions_in(replica.log_events(), RACED))
    final = race.final()
    race.observe(final, utc_now())
    history = race.history
    assert recorder.violations == []
    history.check_nothing_lost(final)
    assert cluster.unexplained_activations(RACED) == []
    live, gone = {k.kid for k in final.keys}, {k.kid for k in final.history}
    dropped = history.created - live - gone  # left the bounded history the right way (checked)
    printed = [t for r in results for t in r.transitions()]
    emergencies = sum(t.exception == "rotate --now" for t in printed)
    assert emergencies == sum(r.argv[:2] == ("rotate", "--now") for r in results)
    versions = cluster.versions()[RACED][len(before) :]
    checked = check_versions(cluster.client, cluster.secret(RACED), versions, policy)
    found = divergences(recorder.between(start, end + settled), RACED)
    check_in_step(found, recorder.between(start, end + settled), RACED, RACE_TOLERANCE)
    revocations = sum(t.event == "key.revoked" for t in printed)
    assert revocations > 0, "the race revoked nothing"
    lost = sum(lost_swaps(replica, RACED, start, end) for replica in cluster.replicas)
    spans = [(r.released, r.finished) for r in results]
    already = Counter(
        line.split(" is already ")[1].split()[0]
        for r in results
        for line in r.stdout.splitlines()
        if " is already " in line
    )
    print(
        f"\n{CLI_RUNS} CLI processes (fork server ready in {start - began:.1f}s, released in "
        f"{WAVES} waves {WAVE_PAUSE}s apart, at most {peak(spans)} running at once, each "
        f"{min(e - s for s, e in spans):.1f}-{max(e - s for s, e in spans):.1f}s) against "
        f"{REPLICAS} replicas for {end - start:.1f}s: {revocations} revocations (and revokes of "
        f"keys already {dict(already)}), {emergencies} emergency rotations; the replicas lost "
        f"{lost} compare-and-swaps; {len(history.created)} keys ever created, none lost "
        f"({len(live)} in the JWKS, {len(gone & history.created)} in the history, "
        f"{len(dropped)} out of the bounded history after expiring or being revoked); "
        f"{history.documents} documents read and {checked} versions stored during the race "
        f"checked: one active key in each; replicas diverged {describe(found)} during the race "
        f"(bound {REFRESH + RACE_TOLERANCE:.1f}s), in step {settled:.1f}s after it"
    )


def peak(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


# --- 3. AWS stopped for longer than a rotation ----------------------------------------------------


def signing_keys(replica: Daemon) -> tuple[str, str | None]:
    body = replica.admin("GET", f"/keysets/{E2E}/signing-key", token=TOKEN).json()
    return body["active"]["kid"], (body["next"] or {}).get("kid")


def test_replicas_ride_out_a_stopped_aws_endpoint(cluster: Cluster, moto: MotoServer) -> None:
    """moto's server is stopped right after an activation, before the successor is due, and
    started again on the same port 5 s later (no proxy is needed: see
    ``tests.support.moto.MotoServer``)."""
    recorder, replicas, policy = cluster.recorder, cluster.replicas, cluster.policies[E2E]
    storage = cluster.observer
    seen: dict[str, str] = {}

    def fresh_activation() -> tuple[str, str] | None:
        """The stored signing key just changed and no successor is stored yet: the outage then
        swallows the moment the successor is due (G4's situation)."""
        stored = storage.read(E2E)
        assert stored is not None
        keyset = from_json(stored.data, stored.location)
        assert keyset.active is not None
        previous, seen["active"] = seen.get("active"), keyset.active.kid
        if previous is not None and keyset.active.kid != previous and not keyset.pending:
            return keyset.active.kid, stored.version
        return None

    signer, version = wait_for(fresh_activation, 3 * 3.0, "a fresh activation", every=0.02)
    cut = time.time()
    moto.stop()
    degraded: dict[int, float] = {}
    during: list[tuple[int, str, str | None, int]] = []

    def all_degraded() -> bool:
        for n, replica in enumerate(replicas):
            if n not in degraded and readiness(replica) == (200, [E2E, RACED]):
                degraded[n] = time.time() - cut
        return len(degraded) == REPLICAS

    try:
        wait_for(all_degraded, OUTAGE, "/readyz degraded on every replica", every=0.05)
        while time.time() < cut + OUTAGE:  # the outage itself, watched
            for n, replica in enumerate(replicas):
                active, successor = signing_keys(replica)
                during.append((n, active, successor, replica.get("/readyz", timeout=2).status))
            time.sleep(0.1)
    finally:
        moto.start()  # whatever happened: the module's other tests need it
    healed = time.time()
    stored = storage.read(E2E)
    assert stored is not None and stored.version == version, "moto lost its state, or a write"

    ready: dict[int, float] = {}

    def all_ready() -> bool:
        for n, replica in enumerate(replicas):
            if n not in ready and readiness(replica) == (200, []):
                ready[n] = time.time() - healed
        return len(ready) == REPLICAS

    wait_for(all_ready, 15, "/readyz not degraded on every replica")
    wait_for(
        lambda: all(signing_keys(r)[0] != signer for r in replicas),
        15,
        "the next activation on every replica",
    )
    resumed = time.time() - healed
    end = time.time()

    # During the outage: the same signing key, no successor, still ready (serving).
    assert {(active, successor, status) for _, active, successor, status in during} == {
        (signer, None, 200)
    }
    # Every JWKS request of the whole test answered 200, and what was served during the outage
    # was what had been loaded (less the keys that expired meanwhile).
    answers = recorder.answers(cut - 1.0, end)
    assert [a for a in answers if a.status != 200] == []
    for n in range(REPLICAS):
        mine = [a for a in answers if a.replica == n and a.keyset == E2E]
        loaded = next(a.kids for a in reversed(mine) if a.at < cut)
        assert all(a.kids <= loaded for a in mine if cut <= a.at < healed)
    # G4: the successor was stored after the outage and activated publish_ahead later; each
    # replica served it at least publish_ahead - refresh_interval - TOLERANCE before it signed.
    with recorder.lock:
        successor = recorder.histories[E2E].records[signing_keys(replicas[0])[0]]
    early = [(name, cluster.unexplained_activations(name)) for name in cluster.policies]
    assert successor.activates_at is not None
    assert successor.created_at.timestamp() >= healed - 0.1
    assert successor.activates_at - successor.created_at >= policy.publish_ahead
    assert early == [(name, []) for name in cluster.policies]
    ahead = {
        n: successor.activates_at.timestamp()
        - min(a.at for a in answers if a.replica == n and successor.kid in a.kids)
        for n in range(REPLICAS)
    }
    assert min(ahead.values()) >= PUBLISH_AHEAD - REFRESH - TOLERANCE, ahead
    failures = [(metric(r, "keyrotd_storage_failures_total") or 0.0) for r in replicas]
    assert all(count > 0 for count in failures)
    print(
        f"\nmoto stopped {OUTAGE:.0f}s (rotation period 3s), right after an activation: "
        f"{len(answers)} JWKS requests to {REPLICAS} replicas, all 200; /readyz degraded "
        f"after {fmt(degraded)}s, not again {fmt(ready)}s after moto was back; the old key signed "
        f"throughout; the successor was stored {successor.created_at.timestamp() - healed:.1f}s "
        f"after, served {fmt(ahead)}s before it signed, {resumed:.1f}s after recovery; storage "
        f"failures counted {failures}; moto kept version {version[:8]} across its restart"
    )


def readiness(replica: Daemon) -> tuple[int, list[str]]:
    """``/readyz``'s status and the keysets it names degraded (storage failing)."""
    reply = replica.get("/readyz", timeout=2)
    return reply.status, reply.json()["degraded"]


def fmt(values: dict[int, float]) -> str:
    return "/".join(f"{values[n]:.1f}" for n in sorted(values))


# --- API calls per key lifecycle (for the README) -------------------------------------------------


DEFAULT_POLICY = Policy(
    rotation_period=timedelta(hours=24),
    publish_ahead=timedelta(hours=24),
    token_lifetime=timedelta(hours=1),
    clock_skew=timedelta(minutes=5),
)


def lifecycle_calls(url: str, writers: int, rotations: int = 2) -> Counter[str]:
    """API calls per rotation at the default policy when ``writers`` replicas apply every
    scheduled transition at the same instant (their jobs fire at the transition's time)."""
    prefix = f"calls-{uuid.uuid4().hex[:12]}/"
    storages = [
        AwsStorage(secret_prefix=prefix, region=REGION, endpoint_url=url) for _ in range(writers)
    ]
    calls = [ApiCalls(storage) for storage in storages]
    clock = ManualClock(T0)
    spec = KeysetSpec("calls", "ES256", 2048, DEFAULT_POLICY)
    managers = [KeysetWriter(storage, spec, clock) for storage in storages]
    try:
        managers[0].apply(TICK)  # the first key, and its successor (publish_ahead = period)
        for recorded in calls:
            recorded.take()
        for rotation in range(1, rotations + 1):
            clock.now = T0 + rotation * DEFAULT_POLICY.rotation_period  # activate, retire, create
            together(managers)
            clock.advance(DEFAULT_POLICY.retention)  # the retired key expires
            together(managers)
        counts: Counter[str] = Counter()
        for recorded in calls:
            counts.update(recorded.take())
        final = managers[0].load().keyset
    finally:
        for storage in storages:
            storage.close()
    assert sorted(k.state.value for k in final.keys) == ["active", "pending"]
    return Counter({name: count // rotations for name, count in counts.items()})


def together(managers: list[KeysetWriter]) -> None:
    barrier = threading.Barrier(len(managers))
    errors: list[BaseException] = []

    def tick(manager: KeysetWriter) -> None:
        barrier.wait(10)
        try:
            manager.apply(TICK)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=tick, args=(m,)) for m in managers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


WRITE_QUOTA = ("PutSecretValue", "UpdateSecretVersionStage")


def test_aws_api_calls_per_key_lifecycle(moto: MotoServer) -> None:
    one = lifecycle_calls(moto.url, writers=1)
    assert {name: one[name] for name in WRITE_QUOTA} == {name: 2 for name in WRITE_QUOTA}
    assert set(one) == {"GetSecretValue", *WRITE_QUOTA}
    three = lifecycle_calls(moto.url, writers=3)
    writes = sum(three[name] for name in WRITE_QUOTA)
    assert 4 <= writes <= 2 * 3 * 2
    print(
        f"\nper key lifecycle (one rotation) at the default policy: one writer {dict(one)}; "
        f"three replicas firing together {dict(three)}: {writes} calls on the 50/s write quota"
    )
