"""What the fault tests share: a checker of the guarantees over a recorded history, and a scanner
for private key material in anything keyrotd prints, logs or serves.

The checker works on the keyset documents themselves (the times they record) plus the lifecycle
transitions the writers reported, because a writer killed or beaten in a race may have written a
document it never reported.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keyrotd.keys import PRIVATE_MEMBERS
from keyrotd.lifecycle.events import Transition
from keyrotd.lifecycle.planner import view
from keyrotd.model import Key, Keyset, KeyState, Policy

SECOND = timedelta(seconds=1)


def activated(key: Key) -> bool:
    """Whether the key ever signed (a revoked pending key never did)."""
    if key.state in {KeyState.ACTIVE, KeyState.RETIRED, KeyState.EXPIRED}:
        return True
    return key.state is KeyState.REVOKED and key.retired_at is not None


def check_document(keyset: Keyset, policy: Policy) -> None:
    """The guarantees one stored document must satisfy on its own (G1, G3, G5, section 3)."""
    states = [k.state for k in keyset.keys]
    assert states.count(KeyState.ACTIVE) == 1, f"G1: {states}"
    assert states.count(KeyState.PENDING) <= 1, f"more than one successor: {states}"
    gone = {k.kid for k in keyset.history}
    for jwk in keyset.jwks()["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk), "G5: private member in the JWKS"
        assert jwk["kid"] not in gone, "G5: expired or revoked key in the JWKS"
    for key in (*keyset.keys, *keyset.history):
        holds = key.state in {KeyState.PENDING, KeyState.ACTIVE}
        if key.in_custody:  # its private half is in a token or a KMS (docs/issuers.md)
            assert key.private_jwk is None, f"private key in the document: {key}"
        else:
            assert (key.private_jwk is not None) == holds, f"private key kept wrongly: {key}"
        if key.state in {KeyState.RETIRED, KeyState.EXPIRED}:
            assert key.retired_at is not None and key.expires_at is not None, key
            assert key.expires_at - key.retired_at >= policy.retention, f"G3: {key}"


def kept_longer(before: Key, after: Key) -> bool:
    """``after`` is ``before`` kept in the JWKS longer: retired again, with a later expiry, by a
    replica that learned late that it had stopped signing with it (``lifecycle.Retain``)."""
    return (
        before.state in (KeyState.RETIRED, KeyState.EXPIRED)
        and after.state is KeyState.RETIRED
        and before.expires_at is not None
        and after.expires_at is not None
        and after.expires_at > before.expires_at
    )


@dataclass
class History:
    """Every document and transition seen from a keyset, checked against G1-G3 and for loss.

    ``exceptions`` holds the kids whose activation a writer reported as an announced exception to
    G2 (first key, ``rotate --now``, revoke of the active key). ``allow_unreported`` is a predicate
    for activations nobody reported because their writer died right after writing them.
    """

    policy: Policy
    documents: int = 0
    records: dict[str, Key] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    exceptions: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    activations: int = 0

    def report(self, transitions: Iterable[Transition]) -> None:
        """Transitions a writer saw succeed (printed or returned after its write)."""
        for transition in transitions:
            if transition.event == "key.created":
                self.created.add(transition.kid)
            elif transition.event == "key.activated":
                self.activations += 1
                if transition.exception is not None:
                    self.exceptions.add(transition.kid)
            elif transition.event == "key.revoked":
                self.revoked.add(transition.kid)

    def observe(self, keyset: Keyset, now: datetime | None = None) -> None:
        """A document read or written at some point; ``now`` also checks the view at that time."""
        self.documents += 1
        check_document(keyset, self.policy)
        if now is not None:
            check_document(view(keyset, self.policy, now), self.policy)
        for key in (*keyset.keys, *keyset.history):
            before = self.records.get(key.kid)
            if before is not None:
                self._check_consistent(before, key)
            self.records[key.kid] = key

    def _check_consistent(self, before: Key, after: Key) -> None:
        """Recorded times never change once set (a pending key's schedule may move, and a slow
        write re-dates the publication of the keys it created to when it returned)."""
        if before.state is KeyState.PENDING and after.created_at > before.created_at:
            assert after.activates_at is not None and before.activates_at is not None
            assert after.activates_at >= before.activates_at, ("re-dated earlier", before, after)
        else:
            assert after.created_at == before.created_at, (before, after)
        if activated(before):
            assert after.activates_at == before.activates_at, ("activation moved", before, after)
        if before.retired_at is not None and before.state is not KeyState.ACTIVE:
            assert after.retired_at == before.retired_at, ("retirement moved", before, after)
        order = [KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED, KeyState.EXPIRED]
        if kept_longer(before, after):
            return  # a replica that signed with it late brought it back (lifecycle.Retain)
        if before.state in order and after.state in order:
            assert order.index(after.state) >= order.index(before.state), ("went back", before)

    def unexplained_activations(self) -> list[Key]:
        """Keys that signed before being published ``publish_ahead`` without a reported reason."""
        early = []
        for kid, key in self.records.items():
            if not activated(key) or kid in self.exceptions:
                continue
            assert key.activates_at is not None
            if key.activates_at - key.created_at < self.policy.publish_ahead:
                early.append(key)
        return early

    def check_nothing_lost(self, final: Keyset) -> None:
        """Every key ever reported or seen is still in the document or left it legitimately."""
        present = {k.kid for k in (*final.keys, *final.history)}
        for kid in self.created | set(self.records):
            if kid in present:
                continue
            record = self.records.get(kid)
            assert record is not None, f"key {kid} was created and then lost"
            # It left the bounded history after leaving the JWKS the right way.
            assert record.state in {KeyState.EXPIRED, KeyState.REVOKED}, f"lost: {record}"


# --- secrets -------------------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def secret_needles(private_jwks: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Strings that must never appear in an output, each mapped to what it is.

    For every private member: its base64url value, the standard base64 and hex forms of its bytes,
    and its big-endian integer in decimal (what a careless ``repr`` of a key number would show).
    """
    needles: dict[str, str] = {}
    for jwk in private_jwks:
        kid = jwk.get("kid", "?")
        for member in sorted(PRIVATE_MEMBERS & set(jwk)):
            value = jwk[member]
            needles[value] = f"{kid}.{member} (base64url)"
            raw = _b64url_decode(value)
            if raw is None or len(raw) < 16:
                continue
            needles[base64.b64encode(raw).decode().rstrip("=")] = f"{kid}.{member} (base64)"
            needles[raw.hex()] = f"{kid}.{member} (hex)"
            needles[str(int.from_bytes(raw, "big"))] = f"{kid}.{member} (decimal)"
    return needles


def find_secrets(text: str | bytes, needles: Mapping[str, str]) -> list[str]:
    """What private material ``text`` contains (case-insensitive for the hex form)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lowered = text.lower()
    found = []
    for needle, what in needles.items():
        haystack = lowered if what.endswith("(hex)") else text
        if needle in haystack:
            found.append(what)
    return found
