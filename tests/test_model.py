"""The stored values (``keyrotd.model``): the document's JSON round trip, the bounded history,
``from_json`` errors naming the location, the successor and the JWKS order."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from keyrotd.errors import CorruptDocumentError
from keyrotd.keys import generate_key
from keyrotd.lifecycle.commands import plan
from keyrotd.model import (
    FORMAT,
    HISTORY_LIMIT,
    Key,
    Keyset,
    KeyState,
    Propagation,
    UrlProgress,
    from_json,
    to_json,
)
from tests.support.clock import T0_MARCH_MORNING as T0
from tests.support.keysets import EVERY_10_SECONDS as POLICY

SECOND = timedelta(seconds=1)
LOCATION = "/var/lib/keyrotd/main.json"


def advance(keyset: Keyset, now: datetime) -> Keyset:
    """One planner step with real keys (as the writer does it)."""
    needed = plan(keyset, POLICY, now).needs_keys
    fresh = tuple(generate_key("ES256") for _ in range(needed))
    return plan(keyset, POLICY, now, fresh=fresh).keyset


def rotated(times: int) -> Keyset:
    keyset = advance(Keyset("main"), T0)
    for i in range(1, times + 1):
        keyset = advance(keyset, T0 + 5 * i * SECOND)
    return keyset


def test_a_document_round_trips_through_json_in_every_state() -> None:
    keyset, seen = Keyset("main"), set()
    for i in range(48):
        keyset = advance(keyset, T0 + i * SECOND / 2)
        assert from_json(to_json(keyset), LOCATION) == keyset
        seen |= {k.state for k in (*keyset.keys, *keyset.history)}
    assert seen == {KeyState.ACTIVE, KeyState.PENDING, KeyState.RETIRED, KeyState.EXPIRED}
    assert json.loads(to_json(keyset))["format"] == FORMAT == "keyrotd/keyset/v1"


def test_an_awaiting_successor_and_its_progress_round_trip() -> None:
    key = generate_key("ES256")
    progress = Propagation(
        scheduled_at=T0,
        urls=(UrlProgress("https://a.example/jwks", first_seen=T0), UrlProgress("https://b")),
        max_age_lacking=timedelta(seconds=300),
    )
    awaiting = Key(
        key.kid, "ES256", KeyState.PENDING, T0, None, None, None, None,
        key.public_jwk, key.private_jwk, progress,
    )  # fmt: skip
    keyset = Keyset("main", (awaiting,), updated_at=T0)
    back = from_json(to_json(keyset), LOCATION)
    assert back == keyset
    [only] = back.keys
    assert only.awaiting and only.scheduled_at == T0
    assert only.propagation is not None and only.propagation.lacking == ()


def test_the_private_key_never_shows_in_repr() -> None:
    keyset = rotated(2)
    secrets = [k.private_jwk["d"] for k in keyset.keys if k.private_jwk is not None]
    assert secrets
    text = repr(keyset)
    assert not [s for s in secrets if s in text]


def test_the_history_keeps_the_newest_entries_without_key_material() -> None:
    keyset = rotated(200)
    assert len(keyset.history) == HISTORY_LIMIT
    more = advance(keyset, T0 + 5 * 201 * SECOND + 10 * SECOND)
    assert len(more.history) == HISTORY_LIMIT
    assert more.history[: HISTORY_LIMIT - 1] == keyset.history[-(HISTORY_LIMIT - 1) :]
    assert all(h.private_jwk is None and h.public_jwk is None for h in more.history)
    assert from_json(to_json(more), LOCATION).history == more.history


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (b"{not json", "document"),
        (b"[]", "document"),
        (b'{"name": "main", "keys": [{"kid": "k"}]}', "keys.0.alg"),
        (b'{"name": "main", "keys": [], "updated_at": "yesterday"}', "updated_at"),
        (b'{"keys": []}', "name"),
    ],
)
def test_an_unreadable_document_is_an_error_naming_its_location_and_field(
    document: bytes, where: str
) -> None:
    with pytest.raises(CorruptDocumentError) as raised:
        from_json(document, LOCATION)
    message = raised.value.message
    assert message.startswith(f"{LOCATION}: not a valid keyrotd keyset document ({where}: ")
    assert (
        raised.value.hint
        == "restore it from a backup or move it aside; keyrotd never overwrites it"
    )
    assert "\n" not in str(raised.value)


def test_a_document_of_another_format_names_both_formats() -> None:
    data = json.loads(to_json(Keyset("main")))
    data["format"] = "keyrotd/keyset/v9"
    with pytest.raises(CorruptDocumentError) as raised:
        from_json(json.dumps(data).encode(), LOCATION)
    assert raised.value.message == f"{LOCATION}: unsupported document format 'keyrotd/keyset/v9'"
    assert "'keyrotd/keyset/v1'" in raised.value.hint


def test_an_error_about_a_private_member_does_not_echo_it() -> None:
    keyset = rotated(1)
    data = json.loads(to_json(keyset))
    secret = data["keys"][0]["private_jwk"]["d"]
    data["keys"][0]["private_jwk"]["d"] = [secret]  # not a string: invalid
    with pytest.raises(CorruptDocumentError) as raised:
        from_json(json.dumps(data).encode(), LOCATION)
    assert "private_jwk" in raised.value.message
    assert secret not in str(raised.value) and secret[:8] not in str(raised.value)


def key(kid: str, state: KeyState, created: int, activates: int | None) -> Key:
    made = generate_key("ES256")
    at = None if activates is None else T0 + activates * SECOND
    private = made.private_jwk if state in (KeyState.PENDING, KeyState.ACTIVE) else None
    return Key(kid, "ES256", state, T0 + created * SECOND, at, None, None, None,
               made.public_jwk, private)  # fmt: skip


def test_the_successor_is_the_earliest_scheduled_then_an_awaiting_one() -> None:
    active = key("a", KeyState.ACTIVE, 0, 0)
    late = key("late", KeyState.PENDING, 1, 90)
    early = key("early", KeyState.PENDING, 2, 60)
    awaiting = key("awaiting", KeyState.PENDING, 0, None)
    assert Keyset("main", (active, late, awaiting, early)).successor == early
    assert Keyset("main", (active, awaiting, late)).successor == late
    assert Keyset("main", (active, awaiting)).successor == awaiting
    assert Keyset("main", (active,)).successor is None


def test_a_pending_key_without_its_private_half_is_no_successor() -> None:
    active = key("a", KeyState.ACTIVE, 0, 0)
    public_only = Key("p", "ES256", KeyState.PENDING, T0, T0 + SECOND, public_jwk={"kty": "EC"})
    assert Keyset("main", (active, public_only)).successor is None


def test_the_jwks_lists_active_then_pending_then_retired_newest_first() -> None:
    keys = (
        key("r-old", KeyState.RETIRED, 0, 0),
        key("p", KeyState.PENDING, 3, 90),
        key("r-new", KeyState.RETIRED, 1, 1),
        key("a", KeyState.ACTIVE, 2, 2),
    )
    jwks = Keyset("main", keys).jwks()
    assert [j["kid"] for j in jwks["keys"]] == ["a", "p", "r-new", "r-old"]
    assert all(j["use"] == "sig" and j["alg"] == "ES256" and "d" not in j for j in jwks["keys"])
