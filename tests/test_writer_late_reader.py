"""A daemon that could not read storage while another process retired its signing key.

Replica R holds the keyset with key A active. A CLI on another host runs ``keyrotd rotate``
(successor B, activating ``publish_ahead`` later), then storage goes dark for R (an outage, a
partition) past B's activation and past A's expiry. R kept signing with A all along: its last
document had no successor. When R reads again, the document says A stopped long ago and has left
the JWKS, so every token R's issuers signed with A in the meantime would be refused. R's sync
keeps A in the JWKS until ``token_lifetime + clock_skew`` after now (``lifecycle.Retain``), in
the document every replica reads. A replica that read the successor in time keeps nothing, and
a revoked key is never brought back.
"""

from __future__ import annotations

from datetime import timedelta

from keyrotd.lifecycle.commands import Retain, Revoke, Rotate, plan
from keyrotd.model import Key, Keyset, KeyState, from_json
from keyrotd.testing.memory import MemoryStorage
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import T0_MARCH_MORNING as T0
from tests.support.clock import ManualClock
from tests.support.keysets import POLICY

HOUR = timedelta(hours=1)
LAG = timedelta(seconds=30)
SPEC = KeysetSpec("main", "ES256", 2048, POLICY)
BLIND_UNTIL = T0 + 20 * HOUR
"""After B's activation (T0 + 13 h) and A's expiry (T0 + 14 h 05 min) on the CLI's schedule."""


def signing_an_hour_in() -> tuple[MemoryStorage, ManualClock, KeysetWriter, KeysetWriter, Key]:
    """A daemon (``reader_lag``) and a CLI on one store, an hour after the daemon read the
    keyset and began signing with its active key, A (returned last)."""
    storage, clock = MemoryStorage(), ManualClock(T0)
    daemon = KeysetWriter(storage, SPEC, clock, reader_lag=LAG)
    cli = KeysetWriter(storage, SPEC, clock)
    a = daemon.sync().keyset.active
    assert a is not None
    clock.advance(HOUR)
    return storage, clock, daemon, cli, a


def stored(storage: MemoryStorage) -> Keyset:
    read = storage.read("main")
    assert read is not None
    return from_json(read.data, "memory")


def jwks_kids(keyset: Keyset) -> set[str]:
    return {jwk["kid"] for jwk in keyset.jwks()["keys"]}


def test_a_key_signed_with_past_its_retirement_stays_for_the_retention_from_now() -> None:
    storage, clock, daemon, cli, a = signing_an_hour_in()
    b = cli.apply(Rotate()).keyset.pending[0]
    clock.now = BLIND_UNTIL  # the daemon read nothing since T0: it signed with A throughout

    outcome = daemon.sync()

    kept = next(k for k in outcome.keyset.keys if k.kid == a.kid)
    assert kept.state is KeyState.RETIRED
    assert kept.retired_at == T0 + 13 * HOUR  # the document's schedule, as written
    assert kept.expires_at == BLIND_UNTIL + POLICY.retention
    assert kept.private_jwk is None
    assert outcome.keyset.active is not None and outcome.keyset.active.kid == b.kid
    assert a.kid in jwks_kids(outcome.keyset)
    assert [t.event for t in outcome.transitions if t.kid == a.kid] == [
        "key.retired",
        "key.retained",
    ]
    # written, so every replica serves it, and it leaves once the retention has passed
    assert a.kid in jwks_kids(stored(storage))
    clock.now = BLIND_UNTIL + POLICY.retention + timedelta(seconds=1)
    assert a.kid not in jwks_kids(daemon.sync().keyset)


def test_a_key_retired_while_the_daemon_was_blind_but_not_yet_gone_is_kept_longer() -> None:
    storage, clock, daemon, cli, a = signing_an_hour_in()
    cli.apply(Rotate())
    clock.now = T0 + 13 * HOUR + 10 * timedelta(minutes=1)  # retired 10 min ago, not expired

    kept = next(k for k in daemon.sync().keyset.keys if k.kid == a.kid)

    assert kept.expires_at == clock.now + POLICY.retention
    assert a.kid in jwks_kids(stored(storage))


def test_a_daemon_that_read_the_successor_in_time_keeps_nothing() -> None:
    _, clock, daemon, cli, a = signing_an_hour_in()
    cli.apply(Rotate())
    clock.advance(LAG)
    daemon.sync()  # read in time: its own view switches to B at B's activation
    clock.now = BLIND_UNTIL

    outcome = daemon.sync()

    assert a.kid not in jwks_kids(outcome.keyset)
    assert all(t.event != "key.retained" for t in outcome.transitions)


def test_learning_of_a_rotate_now_within_the_refresh_interval_writes_nothing() -> None:
    storage, clock, daemon, cli, _a = signing_an_hour_in()
    cli.apply(Rotate(now=True))
    clock.advance(LAG)  # the next refresh, as planned
    before = storage.read("main")

    outcome = daemon.sync()

    assert not outcome.written
    assert storage.read("main") == before


def test_a_key_revoked_while_the_daemon_was_blind_is_never_brought_back() -> None:
    storage, clock, daemon, cli, a = signing_an_hour_in()
    cli.apply(Revoke(a.kid))
    clock.now = BLIND_UNTIL

    assert a.kid not in jwks_kids(daemon.sync().keyset)
    assert a.kid not in jwks_kids(stored(storage))


def test_a_cli_never_keeps_keys_it_did_not_serve() -> None:
    _, clock, _daemon, cli, a = signing_an_hour_in()
    cli.apply(Rotate())
    clock.now = BLIND_UNTIL

    assert a.kid not in jwks_kids(cli.sync().keyset)


def test_retain_in_the_planner_brings_an_expired_key_back_once() -> None:
    storage, _clock, _daemon, cli, a = signing_an_hour_in()
    cli.apply(Rotate())
    document = stored(storage)
    public = a.replace(state=KeyState.RETIRED, drop_private=True)
    until = BLIND_UNTIL + POLICY.retention

    first = plan(document, POLICY, BLIND_UNTIL, Retain(public, until))
    again = plan(first.keyset, POLICY, BLIND_UNTIL, Retain(public, until))

    assert first.changed and a.kid in jwks_kids(first.keyset)
    assert all(k.kid != a.kid for k in first.keyset.history)
    assert not again.changed  # idempotent: a second replica's retain changes nothing
