"""The writer's compare-and-swap loop (``KeysetWriter``): a lost swap re-reads and re-plans, the
attempts are bounded, fresh keys survive re-plans, and no key is generated under a lock.

The storage is a fake, not a mock: an in-memory store with real versions that loses the CAS the
first N times, because a rival writer gets in first (it writes a document of its own, or the same
bytes again, as another replica could). The last test uses the real file store and its lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from keyrotd.errors import ConflictError, StorageError
from keyrotd.keys import NewKey, generate_key
from keyrotd.lifecycle.commands import plan
from keyrotd.model import Keyset, from_json, to_json
from keyrotd.retries import COMPARE_AND_SWAP
from keyrotd.storage.file import FileStorage
from keyrotd.storage.interface import ReadResult, Versioned, read_each
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import T0_MARCH_MORNING as T0
from tests.support.keysets import POLICY_TWO_HOURS_AHEAD as POLICY

HOUR = timedelta(hours=1)
SPEC = KeysetSpec("main", "ES256", 2048, POLICY)
EMPTY = Keyset("main")


@dataclass
class Rival:
    """What the other writer does before each lost swap: ``own_keys`` writes a first key of its
    own into an empty store (a real competing plan), otherwise it writes the stored bytes again
    (a new version, as a replica's no-op republish would)."""

    own_keys: bool = False
    kids: list[str] = field(default_factory=list)

    def document(self, stored: bytes | None) -> bytes:
        if not self.own_keys:
            assert stored is not None, "a rival rewriting the document needs one"
            return stored
        fresh = tuple(generate_key("ES256") for _ in range(plan(EMPTY, POLICY, T0).needs_keys))
        self.kids += [k.kid for k in fresh]
        return to_json(plan(EMPTY, POLICY, T0, fresh=fresh).keyset)


def seeded() -> bytes:
    """A keyset written at T0 (its first key)."""
    fresh = tuple(generate_key("ES256") for _ in range(plan(EMPTY, POLICY, T0).needs_keys))
    return to_json(plan(EMPTY, POLICY, T0, fresh=fresh).keyset)


LATER = T0 + 30 * HOUR
"""The seeded successor activated: a new successor must be generated and written."""


@dataclass
class LosingStorage:
    """An in-memory store whose ``write`` loses the compare-and-swap ``losses`` times."""

    losses: float
    rival: Rival = field(default_factory=Rival)
    max_document_size: int = 1 << 20
    data: bytes | None = None
    version: int = 0
    reads: int = 0
    writes: int = 0
    busy: bool = False
    """True while a read or write is in progress (what a lock would cover)."""

    def location(self, keyset: str) -> str:
        return f"memory:{keyset}"

    def read(self, keyset: str) -> Versioned | None:
        self.busy, self.reads = True, self.reads + 1
        try:
            if self.data is None:
                return None
            return Versioned(self.data, str(self.version), self.location(keyset))
        finally:
            self.busy = False

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        return read_each(self, keysets)

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        self.busy, self.writes = True, self.writes + 1
        try:
            if self.losses > 0:
                self.losses -= 1
                self.data, self.version = self.rival.document(self.data), self.version + 1
            current = None if self.data is None else str(self.version)
            if current != expected_version:
                raise ConflictError(f"{self.location(keyset)} changed", "re-read it")
            self.data, self.version = data, self.version + 1
            return str(self.version)
        finally:
            self.busy = False

    def list_keysets(self) -> list[str]:
        return [] if self.data is None else ["main"]

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class CountingFactory:
    """Real key generation that records each call and whether the storage was busy then."""

    storage: LosingStorage | None = None
    made: list[str] = field(default_factory=list)
    busy_during: list[bool] = field(default_factory=list)

    def __call__(self, alg: str, rsa_key_size: int) -> NewKey:
        self.busy_during.append(self.storage is not None and self.storage.busy)
        key = generate_key(alg, rsa_key_size)
        self.made.append(key.kid)
        return key


def manager(
    storage: LosingStorage, factory: CountingFactory, now: datetime = LATER
) -> KeysetWriter:
    return KeysetWriter(storage, SPEC, clock=lambda: now, key_factory=factory)


def stored(storage: LosingStorage) -> Keyset:
    assert storage.data is not None
    return from_json(storage.data, "test")


def test_a_lost_swap_re_reads_and_re_plans_against_the_winner() -> None:
    storage = LosingStorage(losses=1, rival=Rival(own_keys=True))
    factory = CountingFactory(storage)
    outcome = manager(storage, factory, now=T0).apply()
    # plan (needs keys), plan with them and write (lost), re-read and re-plan: nothing to do
    assert (outcome.attempts, outcome.written, storage.reads, storage.writes) == (3, False, 2, 1)
    winner = stored(storage)
    assert winner.active is not None and winner.active.kid == storage.rival.kids[0]
    assert outcome.keyset == winner
    assert not set(factory.made) & {k.kid for k in winner.keys}  # our keys were never written


@pytest.mark.parametrize("losses", [1, 3, 7])
def test_n_lost_swaps_then_the_write_wins_with_the_keys_generated_once(losses: int) -> None:
    storage = LosingStorage(losses=losses, data=seeded())
    before = {k.kid for k in stored(storage).keys}
    factory = CountingFactory(storage)
    outcome = manager(storage, factory).apply()
    # one pass to learn how many keys are needed, then one write per attempt
    assert (outcome.attempts, outcome.written) == (losses + 2, True)
    assert storage.reads == losses + 1  # every lost swap re-reads
    assert storage.writes == losses + 1
    assert len(factory.made) == 1  # the successor made for the first plan, kept on re-plans
    assert {k.kid for k in stored(storage).keys} - before == set(factory.made)
    assert [t.event for t in outcome.transitions].count("key.created") == 1


def test_the_attempts_are_bounded_and_giving_up_says_why() -> None:
    storage = LosingStorage(losses=float("inf"), data=seeded())
    document = storage.data
    factory = CountingFactory(storage)
    with pytest.raises(StorageError) as raised:
        manager(storage, factory).apply()
    assert COMPARE_AND_SWAP.attempts == 50  # the one setting the CAS loop is paced by
    assert storage.writes == 49  # the first of the 50 passes generated the successor
    assert raised.value.message == "keyset main: gave up after 50 conflicting writes"
    assert raised.value.hint == "another writer keeps changing it; check for a runaway process"
    assert storage.data == document and len(factory.made) == 1


def test_no_key_is_generated_while_the_fake_storage_is_busy() -> None:
    storage = LosingStorage(losses=2)
    storage.rival.own_keys = True
    factory = CountingFactory(storage)
    manager(storage, factory, now=T0).apply()
    storage.rival.own_keys, storage.losses = False, 2
    manager(storage, factory).apply()
    assert len(factory.busy_during) >= 2
    assert not any(factory.busy_during)


def test_no_key_is_generated_while_the_file_lock_is_held(tmp_path: Path) -> None:
    """Each generation tries the keyset's real ``flock`` without blocking: it is always free."""
    store = FileStorage(tmp_path / "store")
    lock = tmp_path / "store" / "main.lock"
    free: list[bool] = []

    def factory(alg: str, rsa_key_size: int) -> NewKey:
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free.append(True)
            except BlockingIOError:
                free.append(False)
            finally:
                os.close(fd)
        return generate_key(alg, rsa_key_size)

    writer = KeysetWriter(store, SPEC, clock=lambda: T0, key_factory=factory)
    writer.apply()
    for day in range(1, 4):
        writer.clock = lambda day=day: T0 + day * 24 * HOUR + HOUR  # type: ignore[misc]
        writer.apply()
    assert len(free) >= 3 and all(free)
