"""Three ``keyrotd run`` replicas on one moto server, and what the tests record of them.

- moto's server is :class:`tests.support.moto.MotoServer` (the outage test checks the version id
  across a restart of it).
- :func:`make_replicas`: :class:`tests.support.daemon.Daemon` processes with one configuration
  each (AWS storage, their own port, the shared admin token), not started.
- :class:`Recorder`: two threads that run as long as the replicas. One polls the JWKS of every
  keyset on every replica in rounds (one replica after the other, then a pause) and keeps every
  answer; the other reads every keyset's current document (``GetSecretValue`` of
  ``AWSCURRENT``, through keyrotd's own storage) and checks it, and its view at that instant,
  with ``tests.faults.helpers.History`` (one active key, at most one successor, G3, G5,
  recorded times that never move).
- :func:`stored_versions` and :func:`check_versions`: every version moto holds of a secret, in the
  order they were put (moto never prunes them), each checked on its own: the documents of the
  writers that lost a compare-and-swap as well as the winners'.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from keyrotd.errors import StorageError
from keyrotd.lifecycle.events import Transition
from keyrotd.model import Keyset, Policy, from_json
from keyrotd.storage.aws.storage import AwsStorage
from keyrotd.times import utc_now
from tests.faults.helpers import History, check_document
from tests.support.config import render_config
from tests.support.daemon import TOKEN, Daemon, free_port

JWKS_POLL = 0.04
"""Pause between two rounds of JWKS requests (a round asks every keyset of every replica)."""
JWKS_TIMEOUT = 2.0
"""How long a JWKS request may wait for its answer."""
DOCUMENT_POLL = 0.2
"""Pause between two reads of the keyset documents (every version stored is checked anyway:
these reads add the view at the instant of the read, and keep moto, which shares this process's
interpreter, from being busy with the observer)."""


# --- replicas -------------------------------------------------------------------------------------


def make_replicas(
    directory: Path,
    count: int,
    *,
    storage: Mapping[str, object],
    server: Mapping[str, object],
    keysets: list[dict[str, object]],
    env: dict[str, str],
) -> list[Daemon]:
    """``count`` configured replicas (not started): JSON logs at debug level (they count the
    compare-and-swaps a replica lost), admin endpoints with ``TOKEN``."""
    token = directory / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    replicas = []
    for n in range(count):
        workdir = directory / f"replica-{n}"
        workdir.mkdir(parents=True)
        port = free_port()
        config = workdir / "keyrotd.toml"
        sections: dict[str, Mapping[str, object]] = {
            "storage": storage,
            "server": {"listen": f"127.0.0.1:{port}", "admin_token_file": token, **server},
            "logging": {"format": "json", "level": "debug"},  # debug: lost compare-and-swaps
        }
        config.write_text(render_config(sections, keysets))
        replicas.append(Daemon(workdir=workdir, config=config, port=port, env=env))
    return replicas


def transitions_in(events: Iterable[Mapping[str, Any]], keyset: str) -> list[Transition]:
    """The lifecycle transitions of ``keyset`` a replica wrote, from its JSON log events (not
    those it found in storage, written by another: ``"by": "storage"``)."""
    found = []
    for event in events:
        name = event.get("event")
        if event.get("by") == "storage" or event.get("keyset") != keyset:
            continue
        if isinstance(name, str) and name.startswith("key."):
            at = datetime.fromisoformat(str(event["at"]))
            found.append(Transition(name, str(event["kid"]), at, event.get("exception")))  # type: ignore[arg-type]
    return found


def lost_swaps(replica: Daemon, keyset: str, start: float, end: float) -> int:
    """How many compare-and-swaps of ``keyset`` the replica lost between ``start`` and ``end``
    (its debug log says each)."""
    lost = f"keyset {keyset}: lost a compare-and-swap"
    return sum(
        str(event.get("message", "")).startswith(lost)
        and start <= datetime.fromisoformat(str(event["ts"])).timestamp() <= end
        for event in replica.log_events()
    )


# --- recording ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One JWKS request: ``status`` 0 when no HTTP answer came (refused, reset, timed out)."""

    at: float  # wall clock (epoch seconds) when the request was sent
    replica: int
    keyset: str
    status: int
    kids: frozenset[str]


@dataclass(frozen=True)
class Round:
    """One JWKS request per keyset and replica, sent one after the other."""

    start: float
    end: float
    answers: tuple[Answer, ...]

    def served(self, keyset: str) -> set[frozenset[str]]:
        """The distinct kid sets the replicas that answered 200 served for ``keyset``."""
        return {a.kids for a in self.answers if a.keyset == keyset and a.status == 200}


@dataclass(frozen=True)
class Divergence:
    """Some replicas served ``kid`` and others did not (replicas that did not answer 200 have no
    say). A kid appears once and leaves once, so a divergence is one change reaching the replicas
    at different times. Two measures of how long it lasted:

    - ``seen``, what the answers prove: from the first answer already in the new state to the
      last answer still in the old one. A starved observer that misses rounds can only shorten it.
    - ``bound``, what it can have been at most: from the start of the last round that agreed
      before to the end of the first round that agreed after; the observer's gaps lengthen it.
    """

    kid: str
    start: float
    end: float
    seen: float
    finished: bool = True

    @property
    def bound(self) -> float:
        return self.end - self.start


def explain(divergence: Divergence, rounds: Sequence[Round], keyset: str) -> str:
    """The rounds around ``divergence``: when each began, how long after the previous one, and
    which replicas served the kid (``+``), did not (``.``) or did not answer 200 (``-``)."""
    lines = [
        f"{divergence.kid} in the JWKS of {keyset} (seen {divergence.seen:.2f}s, bound "
        f"{divergence.bound:.2f}s), replica 0, 1, ...:"
    ]
    previous: Round | None = None
    for now in rounds:
        if divergence.start - 1 <= now.start <= divergence.end + 0.5:
            gap = now.start - previous.start if previous else 0.0
            shown = "".join(
                "-" if a.status != 200 else "+" if divergence.kid in a.kids else "."
                for a in now.answers
                if a.keyset == keyset
            )
            lines.append(f"{now.start - divergence.start:+7.2f}s (+{gap:.2f}s) {shown}")
        previous = now
    return "\n".join(lines)


def divergences(rounds: Sequence[Round], keyset: str) -> list[Divergence]:
    """Every difference between the replicas' JWKS of ``keyset``, one per kid and change."""
    answers = [[a for a in r.answers if a.keyset == keyset and a.status == 200] for r in rounds]
    kids = {kid for found in answers for a in found for kid in a.kids}
    found: list[Divergence] = []
    for kid in sorted(kids):
        presence = [{kid in a.kids for a in some} for some in answers]
        streak: list[int] = []
        for index, states in enumerate([*presence, set()]):  # set(): flush a streak at the end
            if len(states) > 1:
                streak.append(index)
                continue
            if streak:
                found.append(_divergence(kid, rounds, answers, presence, streak, index))
                streak = []
    return found


def _divergence(
    kid: str,
    rounds: Sequence[Round],
    answers: Sequence[Sequence[Answer]],
    presence: Sequence[set[bool]],
    streak: list[int],
    after: int,
) -> Divergence:
    first, last = streak[0], streak[-1]
    finished = after < len(rounds)
    before = next((presence[i] for i in range(first - 1, -1, -1) if presence[i]), None)
    now_state = presence[after] if finished and presence[after] else None
    old = next(iter(before)) if before else (not next(iter(now_state)) if now_state else None)
    start = rounds[max(first - 1, 0)].start
    end = rounds[after].end if finished else rounds[last].end
    if old is None:
        return Divergence(kid, start, end, end - start, finished)
    in_streak = [a for i in streak for a in answers[i]]
    became = [a.at for a in in_streak if (kid in a.kids) != old]
    stayed = [a.at for a in in_streak if (kid in a.kids) == old]
    seen = max(0.0, max(stayed) - min(became)) if became and stayed else 0.0
    return Divergence(kid, start, end, seen, finished)


@dataclass
class Document:
    at: float  # wall clock of the read
    version: str
    keyset: Keyset


@dataclass
class Recorder:
    """Polls every replica's JWKS and every keyset's document until stopped (see the module)."""

    replicas: Sequence[Daemon]
    storage: AwsStorage
    policies: Mapping[str, Policy]
    rounds: list[Round] = field(default_factory=list)
    latest: dict[str, Document] = field(default_factory=dict)
    read_failures: int = 0
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.histories = {name: History(policy) for name, policy in self.policies.items()}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll_jwks, daemon=True),
            threading.Thread(target=self._read_documents, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def documents(self, keyset: str) -> int:
        """How many documents of ``keyset`` were read and checked."""
        return self.histories[keyset].documents

    def between(self, start: float, end: float) -> list[Round]:
        return [r for r in list(self.rounds) if r.start >= start and r.end <= end]

    def answers(self, start: float, end: float) -> list[Answer]:
        return [a for r in self.between(start, end) for a in r.answers]

    def _poll_jwks(self) -> None:
        while not self._stop.is_set():
            start = time.time()
            answers = tuple(
                self._jwks(n, replica, keyset)
                for keyset in self.policies
                for n, replica in enumerate(self.replicas)
            )
            self.rounds.append(Round(start, time.time(), answers))
            self._stop.wait(JWKS_POLL)

    def _jwks(self, n: int, replica: Daemon, keyset: str) -> Answer:
        at = time.time()
        try:
            reply = replica.get(f"/keysets/{keyset}/jwks.json", timeout=JWKS_TIMEOUT)
        except OSError:
            return Answer(at, n, keyset, 0, frozenset())
        kids = frozenset(k["kid"] for k in reply.json()["keys"]) if reply.status == 200 else None
        return Answer(at, n, keyset, reply.status, kids or frozenset())

    def _read_documents(self) -> None:
        while not self._stop.is_set():
            for name in self.policies:
                self._read(name)
            self._stop.wait(DOCUMENT_POLL)

    def _read(self, name: str) -> None:
        try:
            stored = self.storage.read(name)
        except StorageError:
            self.read_failures += 1  # moto stopped: the outage test
            return
        if stored is None:
            return
        at, now = time.time(), utc_now()
        keyset = from_json(stored.data, stored.location)
        try:
            with self.lock:
                self.histories[name].observe(keyset, now)
        except AssertionError as error:
            self.violations.append(f"{name} version {stored.version} at {now}: {error}")
        self.latest[name] = Document(at, stored.version, keyset)


def stored_versions(client: Any, secret: str) -> list[str]:
    """Every version id of ``secret``, in the order they were put (moto keeps them all)."""
    answer = client.list_secret_version_ids(SecretId=secret, IncludeDeprecated=True)
    assert not answer.get("NextToken"), "moto paged its version list"
    return [v["VersionId"] for v in answer["Versions"]]


def check_versions(client: Any, secret: str, versions: Iterable[str], policy: Policy) -> int:
    """Check every document in ``versions`` on its own (``check_document``); how many."""
    count = 0
    for version in versions:
        value = client.get_secret_value(SecretId=secret, VersionId=version)
        keyset = from_json(value["SecretString"].encode(), f"{secret} version {version}")
        try:
            check_document(keyset, policy)
        except AssertionError as error:
            raise AssertionError(f"{secret} version {version}: {error}") from None
        count += 1
    return count
