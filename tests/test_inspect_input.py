"""``keyrotd inspect``: a file name, a pasted ``Authorization: Bearer`` line, ``--clock-skew``, and
a hint only where one helps (docs/cli.md)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from tests.test_inspect import World, fresh, now, run, sign, static_jwks, world

__all__ = ["static_jwks", "world"]  # the fixtures, shared with tests/test_inspect.py


def test_a_file_name_is_read(world: World, tmp_path: Path) -> None:
    token = tmp_path / "token.txt"
    token.write_text(sign(world.keys["C"], fresh()) + "\n")
    code, out, err = run(world, str(token))
    assert (code, err) == (0, "")
    assert out.startswith(f"valid: signed by {world.kid('C')} (active)")


@pytest.mark.parametrize(
    "prefix", ["Authorization: Bearer ", "authorization:bearer ", "Bearer ", "  Bearer\t"]
)
def test_a_pasted_authorization_line_is_inspected(world: World, prefix: str) -> None:
    code, out, _ = run(world, prefix + sign(world.keys["C"], fresh()))
    assert code == 0, out
    assert out.startswith("valid: ")


def test_a_pasted_authorization_line_on_stdin(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = f"Authorization: Bearer {sign(world.keys['C'], fresh())}\r\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line.encode())))
    code, out, _ = run(world, "-")
    assert code == 0, out


def test_clock_skew_overrides_the_keysets(world: World) -> None:
    token = sign(world.keys["C"], fresh(iat=now() - 900, exp=now() - 180))
    assert run(world, token)[0] == 0  # within the keyset's 5m
    code, out, _ = run(world, token, "--clock-skew", "1m")
    assert code == 1
    assert out.splitlines()[0] == "invalid: expired token"
    assert "beyond the clock_skew of 1m" in out


def test_clock_skew_with_a_jwks_url(world: World, static_jwks: str) -> None:
    url = f"{static_jwks}/jwks.json"
    token = sign(world.keys["C"], fresh(iat=now() - 900, exp=now() - 600))
    assert run(world, token, "--jwks-url", url)[0] == 1  # beyond the default 5m
    code, out, _ = run(world, token, "--jwks-url", url, "--clock-skew", "15m")
    assert code == 0, out
    assert run(world, token, "--jwks-url", url, "--clock-skew", "PT1M")[0] == 1


def test_a_bad_clock_skew_is_a_usage_error(world: World) -> None:
    code, out, err = run(world, "x.y.z", "--clock-skew", "banana")
    assert (code, out) == (2, "")
    assert "--clock-skew" in err and err.count("\n") == 1


def test_a_valid_token_of_the_signing_key_has_no_hint(world: World, static_jwks: str) -> None:
    token = sign(world.keys["C"], fresh())
    for extra in ([], ["--jwks-url", f"{static_jwks}/jwks.json"]):
        code, out, _ = run(world, token, *extra)
        assert code == 0
        assert "hint:" not in out
        code, out, _ = run(world, token, "--json", *extra)
        assert json.loads(out)["hint"] is None


def test_a_valid_token_of_the_pending_key_keeps_its_hint(world: World) -> None:
    code, out, _ = run(world, sign(world.keys["D"], fresh()))
    assert code == 0
    assert "  hint: the issuer signs with a key before its time" in out


def test_an_invalid_token_keeps_its_hint(world: World) -> None:
    code, out, _ = run(world, sign(world.keys["C"], fresh(iat=now() - 9000, exp=now() - 3600)))
    assert code == 1
    assert "  hint: the holder needs a new token" in out
