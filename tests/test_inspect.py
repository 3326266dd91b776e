"""``keyrotd inspect``: every cause from a crafted token, in-process, cross-checked with PyJWT.

The keyset is built with the manager on a fake clock that ends just before the real time (the
command reads the real clock): key A expired, B revoked, C active, D pending.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.inspection import CAUSES, KeySource, inspect_token
from keyrotd.keys import generate_key
from keyrotd.lifecycle.commands import Revoke
from keyrotd.model import Jwk
from keyrotd.storage import open_storage
from keyrotd.tokens import b64url_encode, import_key, json_part, sign_compact
from tests.support.clock import T0_MARCH_NOON as T0
from tests.support.clock import ManualClock
from tests.support.keysets import open_writer
from tests.test_cli import open_dir, run_unprivileged, unreadable_store  # noqa: F401 (a fixture)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class World:
    config: Path
    start: datetime
    """When key A became the first key; everything else is relative to it."""
    keys: dict[str, dict[str, str]] = field(repr=False)
    """Private JWKs captured while the keys were live: A expired, B revoked, C active, D
    pending, O of the other keyset, X never issued."""
    jwks: dict[str, Any]

    def kid(self, name: str) -> str:
        return self.keys[name]["kid"]

    def at(self, offset: timedelta) -> int:
        return int((self.start + offset).timestamp())


def write_config(directory: Path) -> Path:
    path = directory / "keyrotd.toml"
    path.write_text(
        f'[storage]\npath = "{directory / "data"}"\n'
        '[[keysets]]\nname = "default"\nalgorithm = "ES256"\nrotation_period = "1d"\n'
        'publish_ahead = "12h"\ntoken_lifetime = "1h"\nclock_skew = "5m"\n'
        '[[keysets]]\nname = "other"\nalgorithm = "ES256"\n'
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    config = write_config(tmp_path_factory.mktemp("inspect"))
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    start = datetime.now(UTC).replace(microsecond=0) - 2 * DAY - 18 * HOUR
    clock = ManualClock(start)
    mgr = open_writer(storage, settings.keyset("default"), clock)
    keys: dict[str, dict[str, str]] = {}

    def step(offset: timedelta, capture: str | None = None, pending: bool = False) -> None:
        clock.now = start + offset
        keyset = mgr.apply().keyset
        key = keyset.pending[0] if pending else keyset.active
        if capture and key is not None:
            keys[capture] = dict(key.private())

    step(timedelta(0), "A")
    step(12 * HOUR, "B", pending=True)
    step(DAY)
    step(DAY + 2 * HOUR)  # A leaves the JWKS
    step(DAY + 12 * HOUR, "C", pending=True)
    step(2 * DAY)
    clock.now = start + 2 * DAY + HOUR
    mgr.apply(Revoke(keys["B"]["kid"]))
    step(2 * DAY + 12 * HOUR, "D", pending=True)  # D activates 6h after the real now
    other = open_writer(storage, settings.keyset("other"), clock)
    active = other.apply().keyset.active
    assert active is not None
    keys["O"] = dict(active.private())
    made = generate_key("ES256")
    keys["X"] = {**made.private_jwk, "kid": made.kid, "alg": "ES256", "use": "sig"}
    jwks = dict(mgr.view(datetime.now(UTC)).jwks())
    storage.close()
    return World(config, start, keys, jwks)


def sign(jwk: Jwk, claims: dict[str, Any], **header: Any) -> str:
    return sign_compact(
        {"alg": jwk["alg"], "kid": jwk["kid"], "typ": "JWT", **header},
        claims,
        import_key(jwk, jwk["alg"]),
    )


def unsigned(header: Any, claims: Any, signature: bytes = b"\x01" * 64) -> str:
    return f"{json_part(header)}.{json_part(claims)}.{b64url_encode(signature)}"


def now() -> int:
    return int(datetime.now(UTC).timestamp())


def fresh(**claims: Any) -> dict[str, Any]:
    return {"sub": "alice", "aud": "api", "iss": "https://auth.example", "iat": now(),
            "exp": now() + 600, **claims}  # fmt: skip


def run(world: World, *argv: str) -> tuple[int, str, str]:
    """``keyrotd --config CONFIG inspect ARGV`` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(world.config), "inspect", *argv])
    return code, out.getvalue(), err.getvalue()


def pyjwt_accepts(
    world: World, token: str, audience: str | None = None, issuer: str | None = None
) -> bool:
    """What a PyJWT verifier holding the served JWKS, with the keyset's 5m leeway, decides."""
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        key = jwt.PyJWKSet.from_dict(world.jwks)[kid]
        jwt.decode(
            token,
            key,
            algorithms=[key.algorithm_name],
            leeway=300,
            audience=audience,
            issuer=issuer,
            options={"verify_aud": audience is not None},
        )
    except (jwt.PyJWTError, KeyError):
        return False
    return True


# -- every cause ----------------------------------------------------------------------------------


def test_a_good_token_is_valid(world: World) -> None:
    key = jwt.PyJWK(world.keys["C"]).key  # minted by PyJWT, not by keyrotd
    token = jwt.encode(fresh(), key, algorithm="ES256", headers={"kid": world.kid("C")})
    code, out, err = run(world, token, "--audience", "api", "--issuer", "https://auth.example")
    first, checked, header, claims = out.splitlines()  # no hint: nothing to fix
    assert (code, err) == (0, "")
    assert first.startswith(
        f"valid: signed by {world.kid('C')} (active) of keyset default: the current signing key; "
        "the token expires at "
    )
    assert re.search(r"\(in (10m|9m5\ds)\)$", first)
    assert checked.startswith("  checked against keyset default at ")
    assert json.loads(header.removeprefix("  header: ")) == {
        "alg": "ES256", "kid": world.kid("C"), "typ": "JWT"}  # fmt: skip
    assert json.loads(claims.removeprefix("  claims: "))["sub"] == "alice"
    assert pyjwt_accepts(world, token, "api", "https://auth.example")


def test_a_token_of_the_pending_key_is_valid_but_says_so(world: World) -> None:
    code, out, _ = run(world, sign(world.keys["D"], fresh()))
    activates = (world.start + 3 * DAY).isoformat(timespec="seconds").replace("+00:00", "Z")
    assert code == 0
    assert out.startswith(
        f"valid: signed by {world.kid('D')} (pending) of keyset default: it is not yet the "
        f"signing key (it activates at {activates}); the token expires at "
    )
    assert "the issuer signs with a key before its time" in out


def test_expiry_within_the_clock_skew_is_valid(world: World) -> None:
    token = sign(world.keys["C"], fresh(iat=now() - 900, exp=now() - 120))
    code, out, _ = run(world, token)
    assert code == 0 and "ago, within the clock_skew)" in out.splitlines()[0]
    assert pyjwt_accepts(world, token)


def crafted(world: World) -> dict[str, tuple[str, list[str], str, str]]:
    """name -> (token, extra arguments, cause, a phrase of the detail or hint)."""
    c, good = world.keys["C"], sign(world.keys["C"], fresh())
    head, body, signature = good.split(".")
    tampered_claims = json_part({**jwt.decode(good, options={"verify_signature": False}),
                                 "sub": "mallory"})  # fmt: skip
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    revoked_at = world.start + 2 * DAY + HOUR
    return {
        "garbage": ("not a token at all", [], "incorrect format",
                    "expected 3 dot-separated parts, found 1"),
        "two parts": (f"{head}.{body}", [], "incorrect format",
                      "expected 3 dot-separated parts, found 2"),
        "bad base64": (f"{head}.{body}!.{signature}", [], "incorrect format",
                       "the payload is not base64url"),
        "bad json": (f"{b64url_encode(b'{not json')}.{body}.{signature}", [], "incorrect format",
                     "the header is not JSON"),
        "payload not an object": (unsigned({"alg": "ES256", "kid": c["kid"]}, [1, 2]), [],
                                  "incorrect format", "the payload is JSON but not an object"),
        "alg none": (unsigned({"alg": "none", "kid": c["kid"]}, fresh(), b""), [],
                     "incorrect format", 'alg "none"'),
        "no kid": (unsigned({"alg": "ES256"}, fresh()), [], "incorrect format",
                   "the header has no kid"),
        "exp not a number": (sign(c, fresh(exp="tomorrow")), [], "incorrect format",
                             'claim exp is "tomorrow", not a number of seconds'),
        "alg of another key type": (unsigned({"alg": "RS256", "kid": c["kid"]}, fresh()), [],
                                    "signature mismatch", "the header says alg RS256 but key"),
        "alg of the same key type": (sign(c, fresh(), alg="ES384"), [], "signature mismatch",
                                     "the header says alg ES384 but key"),
        "alg HS256 confusion": (unsigned({"alg": "HS256", "kid": c["kid"]}, fresh()), [],
                                "signature mismatch", "an algorithm swap"),
        "unknown kid": (sign(world.keys["X"], fresh()), [], "unknown key",
                        "it was never issued by keyset default"),
        "kid of another keyset": (sign(world.keys["O"], fresh()), [], "unknown key",
                                  "but keyset other issued it"),
        "revoked kid": (sign(world.keys["B"], fresh(iat=world.at(2 * DAY - HOUR))), [],
                        "revoked key", f"was revoked at {revoked_at:%Y-%m-%dT%H:%M:%SZ}"),
        "revoked kid used later": (sign(world.keys["B"], fresh()), [], "revoked key",
                                   "the issuer kept signing with a revoked key"),
        "expired kid": (sign(world.keys["A"], fresh(iat=world.at(12 * HOUR),
                                                    exp=world.at(13 * HOUR))), [],
                        "expired key", "the token had expired before its key left the JWKS"),
        "expired kid used after retirement": (
            sign(world.keys["A"], fresh(iat=world.at(DAY + HOUR / 2),
                                        exp=world.at(DAY + HOUR))), [],
            "expired key", "the issuer used a key it should have dropped"),
        "expired kid outlived": (sign(world.keys["A"], fresh(iat=world.at(DAY - HOUR / 2),
                                                             exp=world.at(DAY + 3 * HOUR))), [],
                                 "expired key", "the token outlived its key"),
        "tampered payload": (f"{head}.{tampered_claims}.{signature}", [], "signature mismatch",
                             "the signature does not match key"),
        "tampered signature": (f"{head}.{body}.{flipped}", [], "signature mismatch",
                               "the signature does not match key"),
        "truncated signature": (f"{head}.{body}.{signature[:40]}", [], "signature mismatch",
                                "the signature does not match key"),
        "expired": (sign(c, fresh(iat=now() - 3600, exp=now() - 600)), [], "expired token",
                    "beyond the clock_skew of 5m"),
        "not yet valid": (sign(c, fresh(nbf=now() + 600)), [], "expired token",
                          "not yet valid: its nbf is "),
        "issued in the future": (sign(c, fresh(iat=now() + 600, exp=now() + 900)), [],
                                 "expired token", "not yet valid: it was issued at "),
        "wrong audience": (good, ["--audience", "web"], "audience mismatch",
                           "aud is api; expected web"),
        "no audience": (sign(c, {"exp": now() + 60}), ["--audience", "api"], "audience mismatch",
                        "the token has no aud claim"),
        "wrong issuer": (good, ["--issuer", "https://other.example"], "issuer mismatch",
                         "iss is https://auth.example; expected https://other.example"),
        "first cause wins": (sign(world.keys["B"], fresh(exp=now() - 3600)),
                             ["--audience", "web"], "revoked key", "was revoked at"),
    }  # fmt: skip


CASES = [
    "garbage", "two parts", "bad base64", "bad json", "payload not an object", "alg none",
    "no kid", "exp not a number", "alg of another key type", "alg of the same key type",
    "alg HS256 confusion",
    "unknown kid", "kid of another keyset", "revoked kid", "revoked kid used later",
    "expired kid", "expired kid used after retirement", "expired kid outlived",
    "tampered payload", "tampered signature", "truncated signature", "expired", "not yet valid",
    "issued in the future", "wrong audience", "no audience", "wrong issuer", "first cause wins",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_each_cause_is_named_with_exit_1(world: World, case: str) -> None:
    token, extra, cause, phrase = crafted(world)[case]
    code, out, err = run(world, token, *extra)
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == f"invalid: {cause}"
    assert lines[2].startswith("  hint: ")
    assert phrase in out
    audience = extra[1] if extra[:1] == ["--audience"] else None
    issuer = extra[1] if extra[:1] == ["--issuer"] else None
    assert not pyjwt_accepts(world, token, audience, issuer)


@pytest.mark.parametrize("case", ["not yet valid", "issued in the future"])
def test_a_token_from_the_future_is_an_expired_token_not_yet_valid(world: World, case: str) -> None:
    token, *_ = crafted(world)[case]
    code, out, _ = run(world, token)
    lines = out.splitlines()
    assert code == 1
    assert lines[0] == "invalid: expired token"
    assert lines[1].startswith("  not yet valid: ")
    assert re.search(r", (10m|9m5\ds) from now, beyond the clock_skew of 5m$", lines[1])
    _, out, _ = run(world, token, "--json")
    assert json.loads(out)["detail"].startswith("not yet valid: ")


def test_the_cases_cover_every_cause(world: World) -> None:
    assert {cause for _, _, cause, _ in crafted(world).values()} == set(CAUSES)
    assert sorted(CASES) == sorted(crafted(world))


def test_the_expired_key_detail_gives_both_times(world: World) -> None:
    token, *_ = crafted(world)["expired kid used after retirement"]
    _, out, _ = run(world, token)
    retired = world.start + DAY
    removed = retired + HOUR + timedelta(minutes=5)
    assert out.splitlines()[1] == (
        f"  signed with key {world.kid('A')}, retired at {retired:%Y-%m-%dT%H:%M:%SZ} and "
        f"removed from the JWKS at {removed:%Y-%m-%dT%H:%M:%SZ}"
    )
    assert "it signed this token 30m after the key retired" in out


def test_json_output(world: World) -> None:
    token, *_ = crafted(world)["revoked kid"]
    code, out, _ = run(world, token, "--json")
    report = json.loads(out)
    assert code == 1
    assert report["valid"] is False and report["cause"] == "revoked key"
    assert report["kid"] == world.kid("B") and report["alg"] == "ES256"
    assert report["key_state"] == "revoked"
    assert report["key"]["revoked_at"].startswith(f"{world.start + 2 * DAY + HOUR:%Y-%m-%dT%H}")
    assert report["claims"]["sub"] == "alice"
    assert set(report) >= {"detail", "hint", "header", "source", "checked_at"}


def test_a_decodable_token_of_incorrect_format_still_shows_header_and_claims(world: World) -> None:
    token, *_ = crafted(world)["alg none"]
    code, out, _ = run(world, token)
    assert code == 1
    assert f'  header: {{"alg": "none", "kid": "{world.kid("C")}"}}' in out.splitlines()
    assert any(line.startswith('  claims: {"sub": "alice"') for line in out.splitlines())


def test_json_output_of_garbage(world: World) -> None:
    code, out, _ = run(world, "garbage", "--json")
    report = json.loads(out)
    assert code == 1
    assert report["cause"] == "incorrect format"
    assert report["header"] is None and report["claims"] is None and report["key"] is None


def test_no_private_key_material_is_ever_printed(world: World) -> None:
    private = {world.keys[name]["d"] for name in "ABCD"}
    for token, extra, _, _ in crafted(world).values():
        for output in (run(world, token, *extra), run(world, token, *extra, "--json")):
            assert not any(secret in output[1] for secret in private)
    code, out, _ = run(world, sign(world.keys["C"], fresh()), "--json")
    assert code == 0 and set(json.loads(out)["key"]) == {
        "kid", "alg", "state", "created_at", "activates_at", "retired_at", "expires_at",
        "revoked_at"}  # fmt: skip


def test_the_token_can_come_on_stdin(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    token = sign(world.keys["C"], fresh())
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"Bearer {token}\n".encode())))
    code, out, _ = run(world)
    assert code == 0 and out.startswith("valid: ")


def test_an_unreadable_stdin_is_an_error_not_a_traceback(world: World) -> None:
    code, out, err = run(world, "-")  # pytest's stdin refuses reads
    assert (code, out) == (1, "")
    assert err.startswith("keyrotd: cannot read the token from stdin (")
    assert err.endswith("): pass the token as the argument\n")


def test_an_empty_stdin(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, out, _ = run(world, "-")
    assert code == 1 and out.splitlines()[:2] == [
        "invalid: incorrect format",
        "  the token is empty",
    ]


def test_an_unknown_keyset_is_a_usage_error(world: World) -> None:
    code, out, err = run(world, "x.y.z", "--keyset", "nope")
    assert (code, out) == (2, "")
    assert err == 'keyrotd: unknown keyset "nope": use one of: default, other\n'


def test_keyset_and_jwks_url_exclude_each_other(world: World) -> None:
    code, _, err = run(world, "x.y.z", "--keyset", "default", "--jwks-url", "http://x/")
    assert code == 2 and "not allowed with argument" in err


# -- the checks, with literal times ---------------------------------------------------------------


def test_clock_skew_boundaries() -> None:
    made = generate_key("ES256")
    jwk = {**made.private_jwk, "kid": made.kid, "alg": "ES256", "use": "sig"}
    public = {**made.public_jwk, "kid": made.kid, "alg": "ES256", "use": "sig"}
    keys = KeySource.of_jwks({"keys": [public]}, "test", clock_skew=timedelta(seconds=30))
    at = int(T0.timestamp())

    def cause(**claims: int) -> str | None:
        return inspect_token(sign(jwk, claims), keys, T0).cause

    assert cause(exp=at - 29) is None
    assert cause(exp=at - 30) == "expired token"  # exp + skew must be after now (as PyJWT)
    assert cause(nbf=at + 30) is None
    assert cause(nbf=at + 31) == "expired token"
    assert cause(iat=at + 31) == "expired token"


def test_a_retired_key_still_verifies_and_a_late_signature_is_flagged() -> None:
    from keyrotd.lifecycle.commands import plan
    from keyrotd.model import Keyset, Policy

    policy = Policy(DAY, 12 * HOUR, HOUR, timedelta(minutes=5))
    first, second = generate_key("ES256"), generate_key("ES256")
    keyset = plan(Keyset("default"), policy, T0, fresh=(first,)).keyset
    keyset = plan(keyset, policy, T0 + 12 * HOUR, fresh=(second,)).keyset
    private = dict(keyset.active.private()) if keyset.active else {}
    keyset = plan(keyset, policy, T0 + DAY).keyset
    keys = KeySource.of_keyset(keyset, policy)
    now_ = T0 + DAY + HOUR / 2
    early = sign(
        private, {"iat": int((T0 + 20 * HOUR).timestamp()), "exp": int(now_.timestamp()) + 60}
    )
    late = sign(
        private, {"iat": int((T0 + DAY + HOUR / 4).timestamp()), "exp": int(now_.timestamp()) + 60}
    )
    verdict = inspect_token(early, keys, now_)
    assert verdict.valid and verdict.key is not None and verdict.key.state == "retired"
    assert verdict.detail.startswith(
        f"signed by {first.kid} (retired) of keyset default: retired at "
    )
    late_verdict = inspect_token(late, keys, now_)
    assert late_verdict.valid
    assert late_verdict.hint.startswith("the issuer signed it 15m after the key retired")


# -- --jwks-url against a plain static file server ------------------------------------------------


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def static_jwks(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``jwks.json`` (the served JWKS, ``alg`` left out of the keys) from http.server."""
    directory = tmp_path_factory.mktemp("static")
    keys = [{k: v for k, v in key.items() if k != "alg"} for key in world.jwks["keys"]]
    (directory / "jwks.json").write_text(json.dumps({"keys": keys}))
    (directory / "not-a-jwks.json").write_text(json.dumps({"issuer": "https://auth.example"}))
    (directory / "not-json.txt").write_text("<html>a login page</html>")
    handler = functools.partial(Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_jwks_url_valid(world: World, static_jwks: str) -> None:
    code, out, _ = run(
        world, sign(world.keys["C"], fresh()), "--jwks-url", f"{static_jwks}/jwks.json"
    )
    assert code == 0
    assert out.startswith(
        f"valid: signed by {world.kid('C')} (in the JWKS at {static_jwks}/jwks.json)"
    )


@pytest.mark.parametrize(
    ("case", "cause", "phrase"),
    [
        ("revoked kid", "unknown key", "a JWKS keeps no history"),
        ("expired kid", "unknown key", "a JWKS keeps no history"),
        ("unknown kid", "unknown key", "is not in the JWKS at "),
        ("tampered payload", "signature mismatch", "the signature does not match"),
        ("alg of another key type", "signature mismatch", "RS256"),
        ("expired", "expired token", "beyond the clock_skew of 5m"),
        ("wrong audience", "audience mismatch", "aud is api; expected web"),
    ],
)
def test_jwks_url_causes(
    world: World, static_jwks: str, case: str, cause: str, phrase: str
) -> None:
    token, extra, _, _ = crafted(world)[case]
    code, out, _ = run(world, token, *extra, "--jwks-url", f"{static_jwks}/jwks.json")
    assert code == 1 and out.splitlines()[0] == f"invalid: {cause}" and phrase in out


def test_jwks_url_uses_five_minutes_of_leeway(world: World, static_jwks: str) -> None:
    url = f"{static_jwks}/jwks.json"
    inside = sign(world.keys["C"], fresh(iat=now() - 900, exp=now() - 240))
    outside = sign(world.keys["C"], fresh(iat=now() - 900, exp=now() - 360))
    assert run(world, inside, "--jwks-url", url)[0] == 0
    assert run(world, outside, "--jwks-url", url)[0] == 1


# -- exit 3: the keys to judge by cannot be read ---------------------------------------------------


def assert_cannot_read_keys(code: int, out: str, err: str, *names: str) -> None:
    """Exit 3, nothing on stdout, one line on stderr naming each of ``names``, no traceback."""
    assert (code, out) == (3, ""), err
    assert err.startswith("keyrotd: ") and err.count("\n") == 1, err
    assert all(name in err for name in names), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("path", "phrase"),
    [
        ("missing.json", "HTTP 404"),
        ("not-a-jwks.json", "not a JWKS (no list of keys)"),
        ("not-json.txt", "is not JSON"),
    ],
)
def test_jwks_url_that_serves_no_jwks_exits_3(
    world: World, static_jwks: str, path: str, phrase: str
) -> None:
    url = f"{static_jwks}/{path}"
    assert_cannot_read_keys(*run(world, "x.y.z", "--jwks-url", url), url, phrase)


def test_unreachable_jwks_url_exits_3(world: World) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.server_close()  # nothing listens there any more
    code, out, err = run(world, sign(world.keys["C"], fresh()), "--jwks-url", url)
    assert_cannot_read_keys(code, out, err, url, "cannot fetch the JWKS", "Connection refused")


def inspect_with(config: Path, *argv: str) -> tuple[int, str, str]:
    return run(World(config, datetime.now(UTC), {}, {}), *argv)


def test_storage_without_the_keyset_document_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "nowhere"}"\n')
    document = tmp_path / "nowhere" / "default.json"
    code, out, err = inspect_with(config, "x.y.z")
    assert_cannot_read_keys(code, out, err, f"keyset default has no document at {document}")


def test_a_corrupt_keyset_document_exits_3_and_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "data"}"\n')
    assert main(["--config", str(config), "rotate"]) == 0
    document = tmp_path / "data" / "default.json"
    document.write_bytes(b"garbage")
    code, out, err = inspect_with(config, "x.y.z")
    assert_cannot_read_keys(code, out, err, str(document), "keyrotd never overwrites it")
    assert document.read_bytes() == b"garbage"


def test_unreadable_storage_exits_3(open_dir: Path) -> None:  # noqa: F811 (the fixture)
    store, config = unreadable_store(open_dir)
    code, out, err = run_unprivileged("--config", str(config), "inspect", "x.y.z")
    assert_cannot_read_keys(code, out, err, f"permission denied on {store}")


def test_jwks_url_must_be_http(world: World) -> None:
    code, _, err = run(world, "x.y.z", "--jwks-url", "file:///etc/passwd")
    assert code == 2 and "is not an http(s) URL" in err


# -- never a traceback ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ALGS = st.sampled_from(["ES256", "RS256", "EdDSA", "HS256", "none", "NONE", ""]) | JSON
CLAIM_NAMES = st.sampled_from(["exp", "nbf", "iat", "aud", "iss", "sub", "jti"]) | st.text(
    max_size=4
)
OPTIONS = st.lists(
    st.sampled_from([("--json",), ("--audience", "api"), ("--issuer", "https://auth.example")]),
    max_size=3,
    unique=True,
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def flat(options: list[tuple[str, ...]]) -> list[str]:
    return list(itertools.chain.from_iterable(options))


def check_outcome(code: int, out: str, err: str, options: list[tuple[str, ...]]) -> None:
    assert code in (0, 1), (code, err)
    assert err == ""
    if ("--json",) in options:
        report = json.loads(out)
        assert report["cause"] in (*CAUSES, None)
        assert report["valid"] is (report["cause"] is None)
    else:
        first = out.splitlines()[0]
        assert first.startswith("valid: signed by ") or first in {f"invalid: {c}" for c in CAUSES}
        assert (code == 0) == first.startswith("valid: ")


@FUZZ
@given(data=st.binary(max_size=200), options=OPTIONS)
def test_arbitrary_bytes_on_stdin(
    world: World, data: bytes, options: list[tuple[str, ...]]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        code, out, err = run(world, "-", *flat(options))
    check_outcome(code, out, err, options)


@FUZZ
@given(
    token=(st.text(alphabet="AZaz09-_.=+/ \x00é", max_size=60) | st.text(max_size=30)).filter(
        lambda token: token != "-"  # that one means stdin
    ),
    options=OPTIONS,
)
def test_arbitrary_text(world: World, token: str, options: list[tuple[str, ...]]) -> None:
    code, out, err = run(world, *flat(options), "--", token)
    check_outcome(code, out, err, options)


@FUZZ
@given(
    header=st.dictionaries(st.text(max_size=5), JSON, max_size=3),
    alg=ALGS,
    kid=st.sampled_from(["A", "B", "C", "D", "O", "X"]) | JSON,
    claims=st.dictionaries(CLAIM_NAMES, JSON, max_size=5),
    signature=st.binary(max_size=80),
    options=OPTIONS,
)
def test_arbitrary_headers_and_payloads(
    world: World,
    header: dict[str, Any],
    alg: Any,
    kid: Any,
    claims: dict[str, Any],
    signature: bytes,
    options: list[tuple[str, ...]],
) -> None:
    if isinstance(kid, str) and kid in world.keys:
        kid = world.kid(kid)
    token = unsigned({**header, "alg": alg, "kid": kid}, claims, signature)
    code, out, err = run(world, token, *flat(options))
    check_outcome(code, out, err, options)


@FUZZ
@given(
    claims=st.dictionaries(CLAIM_NAMES, JSON | st.integers(min_value=-(2**70), max_value=2**70)),
    options=OPTIONS,
)
def test_arbitrary_claims_with_a_good_signature(
    world: World, claims: dict[str, Any], options: list[tuple[str, ...]]
) -> None:
    """Past the signature check: the time, audience and issuer checks get arbitrary values."""
    code, out, err = run(world, sign(world.keys["C"], claims), *flat(options))
    check_outcome(code, out, err, options)


GLUE = ("keyrotd.storage", "keyrotd.config", "keyrotd.writer", "keyrotd.cli")
"""What the pure checker must not load: storage, configuration loading, the writer, the CLI."""


def test_the_checker_imports_no_storage_config_manager_or_cli() -> None:
    """``python -X importtime -c "import keyrotd.inspection"``: every module it loads, by name."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import keyrotd.inspection"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "keyrotd.inspection.checks" in loaded  # the probe sees the package's own modules
    glue = [name for name in loaded if any(name == g or name.startswith(f"{g}.") for g in GLUE)]
    assert glue == []
