"""keyrotd.signing_key_format: a keyset's schedule and the signing-key wire format, both
directions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from keyrotd import KeyrotdError
from keyrotd.keys import generate_key
from keyrotd.model import Key, Keyset, KeyState, Policy
from keyrotd.signing_key_format import (
    SigningKeys,
    parse_signing_key,
    signing_key_body,
    signing_keys_of,
)
from tests.support.clock import T0_DECEMBER as T0
from tests.support.keysets import POLICY

HOUR = timedelta(hours=1)


def key(state: KeyState, created_at: datetime, activates_at: datetime | None) -> Key:
    new = generate_key("ES256")
    return Key(
        kid=new.kid,
        alg=new.alg,
        state=state,
        created_at=created_at,
        activates_at=activates_at,
        public_jwk=new.public_jwk,
        private_jwk=new.private_jwk,
    )


def wire(schedule: SigningKeys) -> object:
    """The body as a client receives it: through JSON text."""
    return json.loads(json.dumps(signing_key_body(schedule)))


def test_the_schedule_is_the_active_key_and_the_earliest_scheduled_successor() -> None:
    active = key(KeyState.ACTIVE, T0, T0)
    later = key(KeyState.PENDING, T0 + HOUR, T0 + 30 * HOUR)
    sooner = key(KeyState.PENDING, T0 + 2 * HOUR, T0 + 24 * HOUR)
    awaiting = key(KeyState.PENDING, T0, None)
    keyset = Keyset("api", (active, later, awaiting, sooner))
    schedule = signing_keys_of(keyset, POLICY, "somewhere")
    assert schedule.active == active.private()
    assert schedule.next == sooner.private()
    assert schedule.next_activates_at == T0 + 24 * HOUR
    assert (schedule.token_lifetime, schedule.publish_ahead) == (HOUR, 12 * HOUR)


def test_no_active_key_is_an_error_naming_the_keyset_and_where() -> None:
    keyset = Keyset("api", (key(KeyState.PENDING, T0, T0 + HOUR),))
    with pytest.raises(KeyrotdError, match=r"keyset api has no active key \(/data/api.json\)"):
        signing_keys_of(keyset, POLICY, "/data/api.json")


def test_the_wire_format_round_trips() -> None:
    active = key(KeyState.ACTIVE, T0, T0)
    successor = key(KeyState.PENDING, T0 + HOUR, T0 + 24 * HOUR + timedelta(microseconds=250))
    schedule = signing_keys_of(Keyset("api", (active, successor)), POLICY, "somewhere")
    body = wire(schedule)
    assert body == {
        "active": active.private(),
        "next": successor.private(),
        "next_activates_at": "2026-12-02T12:00:00.000250Z",
        "token_lifetime": 3600,
        "publish_ahead": 43200,
        "issuer": None,
    }
    assert parse_signing_key(body) == schedule
    named = signing_keys_of(Keyset("api", (active, successor)), POLICY, "x", "https://a.example/t")
    assert wire(named)["issuer"] == "https://a.example/t"  # type: ignore[index]
    assert parse_signing_key(wire(named)) == named


def test_durations_go_out_as_whole_seconds_rounded_down() -> None:
    """Integer decoders (Go, serde) refuse ``3600.0``: the text holds integers."""
    active = key(KeyState.ACTIVE, T0, T0)
    policy = Policy(
        rotation_period=24 * HOUR,
        publish_ahead=timedelta(seconds=90.9),
        token_lifetime=timedelta(seconds=59.5),
        clock_skew=timedelta(0),
    )
    body = signing_key_body(signing_keys_of(Keyset("api", (active,)), policy, "somewhere"))
    assert type(body["token_lifetime"]) is int
    assert type(body["publish_ahead"]) is int
    text = json.dumps(body)
    assert '"token_lifetime": 59,' in text
    assert text.endswith('"publish_ahead": 90, "issuer": null}')
    parsed = parse_signing_key(json.loads(text))
    assert parsed.token_lifetime == timedelta(seconds=59)
    assert parsed.publish_ahead == timedelta(seconds=90)


def test_a_successor_awaiting_confirmation_goes_out_with_a_null_time() -> None:
    active = key(KeyState.ACTIVE, T0, T0)
    awaiting = key(KeyState.PENDING, T0 + HOUR, None)
    schedule = signing_keys_of(Keyset("api", (active, awaiting)), POLICY, "somewhere")
    body = wire(schedule)
    assert isinstance(body, dict)
    assert body["next"] == awaiting.private()
    assert body["next_activates_at"] is None
    parsed = parse_signing_key(body)
    assert parsed.next == awaiting.private()
    assert parsed.next_activates_at is None


def test_no_successor_goes_out_as_two_nulls() -> None:
    active = key(KeyState.ACTIVE, T0, T0)
    body = wire(signing_keys_of(Keyset("api", (active,)), POLICY, "somewhere"))
    assert isinstance(body, dict)
    assert (body["next"], body["next_activates_at"]) == (None, None)
    assert parse_signing_key(body).next is None


def test_a_time_without_a_next_key_is_refused() -> None:
    body = wire(signing_keys_of(Keyset("api", (key(KeyState.ACTIVE, T0, T0),)), POLICY, "x"))
    assert isinstance(body, dict)
    body["next_activates_at"] = "2026-12-02T12:00:00Z"
    with pytest.raises(ValueError, match="next_activates_at is set but next is null"):
        parse_signing_key(body)


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("token_lifetime", 3600.5, None),
        ("token_lifetime", 0, "token_lifetime is not a positive number of seconds"),
        ("token_lifetime", True, "token_lifetime is not a positive number of seconds"),
        ("publish_ahead", 0, None),
        ("publish_ahead", -1, "publish_ahead is not a positive number of seconds"),
        ("next_activates_at", 1764590400, "next_activates_at is not an RFC 3339 string"),
        ("active", {"kid": "k", "alg": "ES256"}, "active is not a private JWK"),
    ],
)
def test_each_member_is_checked(member: str, value: object, message: str | None) -> None:
    active = key(KeyState.ACTIVE, T0, T0)
    successor = key(KeyState.PENDING, T0 + HOUR, T0 + 24 * HOUR)
    body = wire(signing_keys_of(Keyset("api", (active, successor)), POLICY, "x"))
    assert isinstance(body, dict)
    body[member] = value
    if message is None:
        assert getattr(parse_signing_key(body), member) == timedelta(seconds=value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=message):
            parse_signing_key(body)


def test_the_daemon_serves_the_wire_format_as_compact_json() -> None:
    """``GET /keysets/{name}/signing-key``'s body, byte for byte."""
    from keyrotd.config import KeysetSettings
    from keyrotd.daemon.state import ServedKeyset

    settings = KeysetSettings(
        name="api",
        algorithm="ES256",
        rotation_period=24 * HOUR,
        publish_ahead=timedelta(seconds=43200.5),
        token_lifetime=HOUR,
        clock_skew=timedelta(minutes=5),
    )
    active = key(KeyState.ACTIVE, T0, T0)
    successor = key(KeyState.PENDING, T0 + HOUR, T0 + 24 * HOUR)
    published = ServedKeyset.compute(settings, Keyset("api", (active, successor)), T0 + HOUR)
    expected = (
        f'{{"active":{json.dumps(active.private(), separators=(",", ":"))},'
        f'"next":{json.dumps(successor.private(), separators=(",", ":"))},'
        '"next_activates_at":"2026-12-02T12:00:00Z","token_lifetime":3600,"publish_ahead":43200,'
        '"issuer":null}'
    )
    assert published.signing_key() == expected.encode()
