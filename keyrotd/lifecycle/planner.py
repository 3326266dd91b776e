"""The rule itself: the planner's working state, its steps, its due times, and ``view``.

It takes no command (``plan`` in :mod:`keyrotd.lifecycle.commands` maps each onto these steps),
so that ``status`` and the served views load the rule without the commands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from keyrotd.errors import KeyNotFoundError, KeyrotdError
from keyrotd.lifecycle.events import FIRST_KEY, IMPORTED, Due, EventName, Transition
from keyrotd.model import HISTORY_LIMIT, Jwk, Key, Keyset, KeyState, Policy
from keyrotd.propagation import awaiting, observe
from keyrotd.revocations import ever_revoked

if TYPE_CHECKING:
    from keyrotd.keys import NewKey  # made by the caller: the planner (and status) make none
    from keyrotd.observations import Poll


class OutOfKeys(Exception):
    """The planner needs more fresh keys than it was given (``Plan.needs_keys``)."""


class Planner:
    """Mutable working state of one ``plan`` call; never escapes it."""

    def __init__(self, keyset: Keyset, policy: Policy, now: datetime, fresh: tuple[NewKey, ...]):
        self.name = keyset.name
        self.keys = list(keyset.keys)
        self.history = list(keyset.history)
        self.policy = policy
        self.now = now
        self.fresh = list(fresh)
        self.used = 0
        self.transitions: list[Transition] = []

    # -- queries -------------------------------------------------------------------------
    def active(self) -> Key | None:
        return next((k for k in self.keys if k.state is KeyState.ACTIVE), None)

    def pending(self) -> list[Key]:
        return sorted(
            (k for k in self.keys if k.state is KeyState.PENDING),
            key=lambda k: (k.activates_at or k.created_at, k.created_at),
        )

    # -- primitive changes ---------------------------------------------------------------
    def _swap(self, old: Key, new: Key) -> None:
        self.keys[self.keys.index(old)] = new

    def _emit(self, event: EventName, kid: str, at: datetime, exception: str | None = None) -> None:
        self.transitions.append(Transition(event, kid, at, exception))

    def _to_history(self, key: Key, entry: Key) -> None:
        self.keys.remove(key)
        self.history = [*self.history, entry][-HISTORY_LIMIT:]

    def new_key(self, activates_at: datetime, *, gated: bool = False) -> Key:
        """A new pending key; ``gated``: a successor, awaiting confirmation if URLs are observed."""
        if self.used >= len(self.fresh):
            self.used += 1
            raise OutOfKeys
        made = self.fresh[self.used]
        self.used += 1
        observed = self.policy.observe if gated else ()
        key = Key(
            kid=made.kid,
            alg=made.alg,
            state=KeyState.PENDING,
            created_at=self.now,
            activates_at=None if observed else activates_at,
            public_jwk=made.public_jwk,
            private_jwk=made.private_jwk,
            handle=made.handle,
            propagation=awaiting(activates_at, observed, self.now) if observed else None,
        )
        self.keys.append(key)
        self._emit("key.created", key.kid, self.now)
        return key

    def activate(self, key: Key, at: datetime, exception: str | None = None) -> None:
        """Make ``key`` the signing key at ``at``; the current one retires at the same instant."""
        current = self.active()
        if current is not None:
            self.retire(current, at)
        self._swap(key, key.replace(state=KeyState.ACTIVE, activates_at=at))
        self._emit("key.activated", key.kid, at, exception)

    def retire(self, key: Key, at: datetime) -> None:
        retired = key.replace(
            state=KeyState.RETIRED,
            retired_at=at,
            expires_at=self.expires_after(at),
            drop_private=True,
        )
        self._swap(key, retired)
        self._emit("key.retired", key.kid, at)

    def expire(self, key: Key) -> None:
        assert key.expires_at is not None
        entry = key.replace(state=KeyState.EXPIRED, drop_private=True, drop_public=True)
        entry = dataclasses.replace(entry, propagation=None)
        self._to_history(key, entry)
        self._emit("key.expired", key.kid, key.expires_at)

    def revoke(self, key: Key) -> None:
        entry = key.replace(
            state=KeyState.REVOKED,
            revoked_at=self.now,
            retired_at=self.now if key.state is KeyState.ACTIVE else None,
            drop_private=True,
            drop_public=True,
        )
        self._to_history(key, dataclasses.replace(entry, propagation=None))
        self._emit("key.revoked", key.kid, self.now)

    # -- the rule's times: the steps below take theirs from here, and so does everyone else -
    def successor_due(self, signs_from: datetime) -> datetime:
        """When a key signing from ``signs_from`` needs a published successor: ``publish_ahead``
        before its ``rotation_period`` ends (G2, G4)."""
        return signs_from + self.policy.rotation_period - self.policy.publish_ahead

    def expires_after(self, retired_at: datetime) -> datetime:
        """When a key that stopped signing at ``retired_at`` leaves the JWKS (G3)."""
        return retired_at + self.policy.retention

    def scheduled(self) -> list[tuple[datetime, int, Key]]:
        """Every activation (0) and expiry (1) the document fixes, due or not, in key order:
        what ``materialize`` (and so ``view``) applies once ``now`` reaches it."""
        found: list[tuple[datetime, int, Key]] = []
        for key in self.keys:
            if key.state is KeyState.PENDING and key.activates_at is not None:
                found.append((key.activates_at, 0, key))
            elif key.state is KeyState.RETIRED and key.expires_at is not None:
                found.append((key.expires_at, 1, key))
        return found

    def due(self) -> tuple[Due, ...]:
        """Every instant at which the plan changes by itself, soonest first (ties in key order):
        each activation (and the active key's retirement with the first), each expiry, and,
        with no successor yet, when ``ensure_successor`` publishes one."""
        items = [
            Due(at, "key.activated", key.kid, "starts signing")
            if kind == 0
            else Due(at, "key.expired", key.kid, "leaves the JWKS")
            for at, kind, key in self.scheduled()
        ]
        active = self.active()
        if active is not None:
            activations = [d.at for d in items if d.event == "key.activated"]
            if activations:
                items.append(Due(min(activations), "key.retired", active.kid, "stops signing"))
            if active.activates_at is not None and not self.pending():
                due = self.successor_due(active.activates_at)
                items.append(Due(due, "key.created", None, "a successor is published"))
        return tuple(sorted(items, key=lambda d: d.at))

    def key_needed_at(self) -> datetime | None:
        """When the next new key is needed: the successor of the last scheduled key (the latest
        pending key's schedule, else the active key's activation). None: one is needed now."""
        pending = [k.scheduled_at for k in self.pending() if k.scheduled_at is not None]
        active = self.active()
        start = max(pending) if pending else (active.activates_at if active else None)
        return None if start is None else self.successor_due(start)

    # -- steps ---------------------------------------------------------------------------
    def materialize(self) -> None:
        """Apply every scheduled activation and expiry up to ``now``, in time order."""
        while True:
            due = [d for d in self.scheduled() if d[0] <= self.now]
            if not due:
                return
            at, kind, key = min(due, key=lambda d: (d[0], d[1], d[2].created_at))
            if kind == 0:
                self.activate(key, at)
            else:
                self.expire(key)

    def ensure_active(self) -> None:
        """G1: after bootstrap there is always exactly one active key."""
        if self.active() is not None:
            return
        pending = self.pending()
        if pending:
            self.activate(
                pending[0], self.now, "no active key: published successor activated early"
            )
            return
        first = not self.history
        key = self.new_key(self.now)
        self.activate(key, self.now, FIRST_KEY if first else "no active key")

    def ensure_successor(self) -> None:
        """Publish a successor ``publish_ahead`` before the active key's period ends (G2, G4)."""
        active = self.active()
        if active is None or self.pending():
            return
        assert active.activates_at is not None
        if self.now >= self.successor_due(active.activates_at):
            period_end = active.activates_at + self.policy.rotation_period
            self.new_key(max(self.now + self.policy.publish_ahead, period_end), gated=True)

    def rotate(self, emergency: bool, settle: timedelta | None = None) -> None:
        pending = self.pending()
        if emergency:
            if settle is not None:
                from keyrotd.rotating import refuse_rotate_now  # rotate --now only

                refuse_rotate_now(self.name, pending[0] if pending else None, self.now, settle)
            key = pending[0] if pending else self.new_key(self.now)
            self.activate(key, self.now, "rotate --now")
        elif pending:
            first = pending[0]
            soonest = max(first.created_at + self.policy.publish_ahead, self.now)
            self._reschedule(first, lambda at: min(at, soonest))
        else:
            self.new_key(self.now + self.policy.publish_ahead, gated=True)

    def _reschedule(self, key: Key, when: Callable[[datetime], datetime]) -> None:
        """Move a pending key's scheduled time; a confirmed activation time never moves
        (docs/guarantees.md), an awaiting successor's time-based schedule does."""
        progress = key.propagation
        if progress is None:
            assert key.activates_at is not None
            self._swap(key, dataclasses.replace(key, activates_at=when(key.activates_at)))
        elif key.awaiting:
            moved = dataclasses.replace(progress, scheduled_at=when(progress.scheduled_at))
            self._swap(key, dataclasses.replace(key, propagation=moved))

    def republish(self, kids: frozenset[str]) -> None:
        for key in self.pending():
            if key.kid in kids and key.created_at < self.now:
                soonest = self.now + self.policy.publish_ahead
                self._reschedule(key, lambda at: max(at, soonest))  # noqa: B023 (called at once)
                redated = next(k for k in self.keys if k.kid == key.kid)
                self._swap(redated, dataclasses.replace(redated, created_at=self.now))

    def postpone(self, by: timedelta) -> None:
        jump_began = self.now - by
        for key in list(self.keys):
            scheduled = key.scheduled_at
            if key.state is KeyState.PENDING and scheduled and scheduled > jump_began:
                self._reschedule(key, lambda at: at + by)
            elif key.state is KeyState.RETIRED and key.expires_at and key.expires_at > jump_began:
                self._swap(key, dataclasses.replace(key, expires_at=key.expires_at + by))

    def observed(self, poll: Poll) -> None:
        for key in self.pending():
            seen = observe(key, poll, self.policy.verifier_cache, self.now)
            if seen != key:
                self._swap(key, seen)
                if seen.activates_at is not None:
                    self._emit("key.confirmed", key.kid, poll.at)

    def restore(self, keys: tuple[Key, ...], revoked: frozenset[str]) -> None:
        """``keyrotd restore``: no revoked kid stays live (the active one hands over as by
        ``revoke``); ``keys`` the keyset never held are added as they are (retired)."""
        for key in list(self.keys):
            if key.kid in revoked and key in self.keys:
                self.revoke_kid(key.kid)
        known = {k.kid for k in (*self.keys, *self.history)}
        self.keys += [k for k in keys if k.kid not in known and k.kid not in revoked]

    def retain(self, kept: Key, until: datetime) -> None:
        """``commands.Retain``: ``kept`` stays in the JWKS until ``until`` at least."""
        current = next((k for k in self.keys if k.kid == kept.kid), None)
        if current is not None:
            late = current.expires_at is not None and current.expires_at < until
            if current.state is KeyState.RETIRED and late:
                self._swap(current, dataclasses.replace(current, expires_at=until))
                self._emit("key.retained", kept.kid, self.now)
            return
        entry = next((k for k in self.history if k.kid == kept.kid), None)
        if entry is None or entry.state is not KeyState.EXPIRED or kept.public_jwk is None:
            return  # revoked, or not this keyset's: never brought back
        self.history.remove(entry)
        back = dataclasses.replace(
            entry, state=KeyState.RETIRED, expires_at=until, public_jwk=kept.public_jwk
        )
        later = [i for i, k in enumerate(self.keys) if k.created_at > back.created_at]
        self.keys.insert(later[0] if later else len(self.keys), back)
        # expired by this very plan (its view of the document), it never left the JWKS
        self.transitions = [
            t for t in self.transitions if (t.event, t.kid) != ("key.expired", kept.kid)
        ]
        self._emit("key.retained", kept.kid, self.now)

    def revoke_kid(self, kid: str) -> None:
        key = next((k for k in self.keys if k.kid == kid), None)
        if key is None:
            if any(k.kid == kid for k in self.history):
                return  # already out of the JWKS (revoked or expired): nothing to do
            raise KeyNotFoundError(
                f"keyset {self.name} has no key with kid {kid}",
                "list the kids with `keyrotd status`",
            )
        if key.state is not KeyState.ACTIVE:
            self.revoke(key)
            return
        pending = self.pending()
        successor = pending[0] if pending else self.new_key(self.now)
        self.revoke(key)
        self.activate(successor, self.now, "revoke of the active key")

    def import_key(
        self,
        kid: str,
        alg: str,
        public_jwk: Jwk,
        private_jwk: Jwk | None,
        until: datetime | None,
        revoked_elsewhere: frozenset[str],
    ) -> None:
        """Adopt a key made elsewhere (``commands.Import``, whose fields these are)."""
        if ever_revoked(kid, self.history, revoked_elsewhere):
            raise KeyrotdError(
                f"keyset {self.name}: key {kid} was revoked; a revoked key never comes back",
                "import another key",
            )
        held = next((k for k in (*self.keys, *self.history) if k.kid == kid), None)
        if held is not None:
            raise KeyrotdError(
                f"keyset {self.name} already has key {kid} ({held.state.value})",
                "nothing to import; see `keyrotd status`",
            )
        key = Key(
            kid=kid,
            alg=alg,
            state=KeyState.PENDING,
            created_at=self.now,
            public_jwk=public_jwk,
            private_jwk=private_jwk,
        )
        if until is not None:
            retired = key.replace(
                state=KeyState.RETIRED,
                retired_at=self.now,
                expires_at=until,
                drop_private=True,
            )
            self.keys.append(retired)
            self._emit("key.created", kid, self.now)
            self._emit("key.retired", kid, self.now)
            return
        assert private_jwk is not None
        self.keys.append(key)
        self._emit("key.created", kid, self.now)
        self.activate(key, self.now, IMPORTED)
        next_period = self.now + self.policy.rotation_period
        for successor in self.pending():  # the next rotation counts from the import
            soonest = max(successor.created_at + self.policy.publish_ahead, next_period)
            self._reschedule(successor, lambda at: soonest)  # noqa: B023 (called at once)


def view(keyset: Keyset, policy: Policy, now: datetime) -> Keyset:
    """What readers see at ``now``: the stored document with due activations and expiries applied.

    It creates nothing, so it is safe for the JWKS, ``status`` and issuers between writes.
    """
    work = Planner(keyset, policy, now, ())
    work.materialize()
    if not work.transitions:
        return keyset
    return dataclasses.replace(keyset, keys=tuple(work.keys), history=tuple(work.history))
