"""What the planner is told to do: the commands, ``plan``, which applies one, and its ``Plan``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from keyrotd.lifecycle.events import Transition
from keyrotd.lifecycle.planner import OutOfKeys, Planner
from keyrotd.model import Jwk, Key, Keyset, Policy
from keyrotd.observations import Poll

if TYPE_CHECKING:
    from keyrotd.keys import NewKey  # made by the caller: the planner makes none


@dataclass(frozen=True)
class Tick:
    """Apply what is due at ``now``: activations, expiries, a successor when one is due."""


@dataclass(frozen=True)
class Rotate:
    """``keyrotd rotate``: bring the next rotation forward; ``now`` is the emergency variant."""

    now: bool = False
    settle: timedelta | None = None
    """With ``now``: the least age of the successor it activates (``--now`` is refused for a
    younger one or none, :func:`keyrotd.rotating.refuse_rotate_now`). None: no such check
    (``--force``)."""


@dataclass(frozen=True)
class Revoke:
    """``keyrotd revoke KID``: drop the key from the JWKS at once."""

    kid: str


@dataclass(frozen=True)
class Republish:
    """A slow write made ``kids`` visible only now, later than the time they were planned with:
    count them as published now, and activating no sooner than ``publish_ahead`` after (G2)."""

    kids: frozenset[str]


@dataclass(frozen=True)
class Postpone:
    """The wall clock jumped forward by ``by`` (measured against a monotonic clock).

    What was scheduled after the jump began happens ``by`` later, so that keys still spend
    ``publish_ahead`` in the JWKS before they sign and ``token_lifetime + clock_skew`` after they
    stop, in elapsed time (G2, G3). Later is always safe: a key published or kept longer breaks
    no token.
    """

    by: timedelta


@dataclass(frozen=True)
class Observed:
    """The ``observe`` URLs were polled: record what they served, confirm who they all served."""

    poll: Poll


@dataclass(frozen=True)
class Import:
    """``keyrotd import``: adopt a key made elsewhere (docs/cli.md).

    ``until`` None: it signs at once (``private_jwk`` required), the active key retires as by
    ``rotate --now``, a pending successor stays pending and the next rotation counts from now.
    ``until`` set: it is published, retired, until then, and never signs. A kid the keyset holds
    or ever revoked (``revocations.ever_revoked``, with ``revoked_elsewhere``) is refused."""

    kid: str
    alg: str
    public_jwk: Jwk
    private_jwk: Jwk | None = field(default=None, repr=False)
    until: datetime | None = None
    revoked_elsewhere: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Restore:
    """``keyrotd restore``: revoke every live kid of ``revoked`` (the revision file's), then add
    back ``keys`` (retired, verification only) that the keyset neither holds nor ever revoked.
    ``rewrite``: the keyset planned on is the backup itself, written even when nothing changed."""

    keys: tuple[Key, ...] = ()
    revoked: frozenset[str] = frozenset()
    rewrite: bool = False


@dataclass(frozen=True)
class Retain:
    """A daemon signed with ``key`` until now, later than the document says it stopped: it could
    not read storage for longer than two ``refresh_interval`` (an outage, a partition) while the
    retirement was written. Keep the key in the JWKS until ``until`` (now + ``token_lifetime +
    clock_skew``, G3 counted from when it really stopped signing), bringing it back from the
    history if it expired meanwhile. A revoked key is never brought back."""

    key: Key
    until: datetime


Command = Tick | Rotate | Revoke | Republish | Postpone | Observed | Import | Restore | Retain
TICK: Final = Tick()


@dataclass(frozen=True)
class Plan:
    keyset: Keyset
    transitions: tuple[Transition, ...]
    changed: bool = False
    """The document differs from the input and must be written."""
    needs_keys: int = 0
    """More fresh keys are needed: generate this many in all and plan again."""


def plan(
    keyset: Keyset,
    policy: Policy,
    now: datetime,
    command: Command = TICK,
    fresh: tuple[NewKey, ...] = (),
) -> Plan:
    """The next state of ``keyset`` at ``now`` after ``command``; pure and deterministic."""
    work = Planner(keyset, policy, now, fresh)
    try:
        # Both re-date keys before anything falls due on the old schedule.
        if isinstance(command, Republish):
            work.republish(command.kids)
        elif isinstance(command, Postpone):
            work.postpone(command.by)
        work.materialize()
        if isinstance(command, Import):  # before ensure_active: an imported key may be the first
            work.import_key(
                command.kid,
                command.alg,
                command.public_jwk,
                command.private_jwk,
                command.until,
                command.revoked_elsewhere,
            )
        work.ensure_active()
        if isinstance(command, Rotate):
            work.rotate(command.now, command.settle)
        elif isinstance(command, Revoke):
            work.revoke_kid(command.kid)
        elif isinstance(command, Observed):
            work.observed(command.poll)
        elif isinstance(command, Restore):
            work.restore(command.keys, command.revoked)
        elif isinstance(command, Retain):
            work.retain(command.key, command.until)
        work.materialize()
        work.ensure_successor()
    except OutOfKeys:
        return Plan(keyset, (), needs_keys=work.used)
    rewrite = isinstance(command, Restore) and command.rewrite
    if not work.transitions and work.keys == list(keyset.keys) and not rewrite:
        return Plan(keyset, (), changed=False)
    result = Keyset(
        name=keyset.name,
        keys=tuple(work.keys),
        history=tuple(work.history),
        updated_at=now,
    )
    return Plan(result, tuple(work.transitions), changed=True)
