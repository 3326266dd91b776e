"""The policy check (docs/guarantees.md): settings that cannot keep the guarantees."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keyrotd.config import KeysetSettings, Settings, check_policy, load_settings
from keyrotd.durations import parse_duration
from keyrotd.errors import ConfigError


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own: ./keyrotd.toml is the file loaded."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(directory: Path, body: str) -> None:
    (directory / "keyrotd.toml").write_text(body, encoding="utf-8")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[[keysets]]\nrotation_period = "24h"\npublish_ahead = "2d"\n',
            "keyrotd.toml: keysets[0].publish_ahead (2d) is longer than "
            "keysets[0].rotation_period (1d): a key is published at most one rotation period "
            "ahead: lower publish_ahead or raise rotation_period",
        ),
        (
            '[[keysets]]\npublish_ahead = "5m"\n',
            "keyrotd.toml: keysets[0].publish_ahead (5m) is not above server.refresh_interval + "
            "max(server.jwks_max_age, keysets[0].verifier_cache) (30s + max(5m, 30s) = 5m30s): "
            "verifiers could miss a new key before it signs: raise publish_ahead above 5m30s, "
            "or lower refresh_interval or jwks_max_age (verifier_cache only if every verifier "
            "refetches sooner: see docs/guarantees.md)",
        ),
        (
            '[server]\nrefresh_interval = "1s"\njwks_max_age = "1s"\n'
            '[[keysets]]\nrotation_period = "1h"\npublish_ahead = "4s"\n',
            "keyrotd.toml: keysets[0].publish_ahead (4s) is not above server.refresh_interval + "
            "max(server.jwks_max_age, keysets[0].verifier_cache) (1s + max(1s, 30s) = 31s): "
            "verifiers could miss a new key before it signs: raise publish_ahead above 31s, "
            "or lower refresh_interval or jwks_max_age (verifier_cache only if every verifier "
            "refetches sooner: see docs/guarantees.md)",
        ),
        (
            '[server]\nrefresh_interval = "1s"\njwks_max_age = "1s"\n'
            '[[keysets]]\nname = "a"\n[[keysets]]\nname = "b"\nrotation_period = "1h"\n'
            'publish_ahead = "1m"\nverifier_cache = "10m"\n',
            "keyrotd.toml: keysets[1].publish_ahead (1m) is not above server.refresh_interval + "
            "max(server.jwks_max_age, keysets[1].verifier_cache) (1s + max(1s, 10m) = 10m1s): "
            "verifiers could miss a new key before it signs: raise publish_ahead above 10m1s, "
            "or lower refresh_interval or jwks_max_age (verifier_cache only if every verifier "
            "refetches sooner: see docs/guarantees.md)",
        ),
        (
            '[[keysets]]\nverifier_cache = "-1s"\n',
            'keyrotd.toml: keysets[0].verifier_cache: "-1s" is negative: '
            "use a duration of 0 or more",
        ),
        (
            '[server]\nrefresh_interval = "0s"\n',
            "keyrotd.toml: server.refresh_interval (0s) must be above 0s: use e.g. 30s",
        ),
        (
            '[[keysets]]\ntoken_lifetime = "0"\n',
            "keyrotd.toml: keysets[0].token_lifetime (0s) must be above 0s: use e.g. 30s",
        ),
        (
            '[[keysets]]\nrotation_period = "0s"\npublish_ahead = "0s"\n',
            "keyrotd.toml: keysets[0].rotation_period (0s) must be above 0s: use e.g. 30s",
        ),
        (
            '[[keysets]]\nname = "a"\n[[keysets]]\nname = "b"\n[[keysets]]\nname = "a"\n',
            'keyrotd.toml: keysets[2].name "a" is already the name of keysets[0]: '
            "give every keyset its own name",
        ),
    ],
)
def test_policy_errors_name_the_settings(in_tmp: Path, body: str, message: str) -> None:
    write(in_tmp, body)
    with pytest.raises(ConfigError) as raised:
        load_settings(None, {})
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("publish_ahead", "verifier_cache", "accepted"),
    [("31s", "30s", False), ("31.001s", "30s", True), ("4s", "2s", True), ("4s", "3s", False)],
)
def test_publish_ahead_must_exceed_the_verifier_cache(
    in_tmp: Path, publish_ahead: str, verifier_cache: str, accepted: bool
) -> None:
    """node jose keeps a JWKS up to 30 s past an unknown kid whatever max-age says."""
    write(
        in_tmp,
        '[server]\nrefresh_interval = "1s"\njwks_max_age = "1s"\n[[keysets]]\n'
        f'rotation_period = "1h"\npublish_ahead = "{publish_ahead}"\n'
        f'verifier_cache = "{verifier_cache}"\n',
    )
    if accepted:
        keyset = load_settings(None, {}).keyset()
        assert keyset.verifier_cache == parse_duration(verifier_cache)
    else:
        with pytest.raises(ConfigError, match=r"keysets\[0\]\.verifier_cache\) \(1s \+ max"):
            load_settings(None, {})


def test_verifier_cache_defaults_to_30s() -> None:
    assert KeysetSettings().verifier_cache == timedelta(seconds=30)


def test_check_policy_on_settings_built_in_code() -> None:
    check_policy(Settings())
    too_fast = Settings(keysets=(KeysetSettings(publish_ahead=timedelta(seconds=1)),))
    with pytest.raises(ConfigError, match=r"^configuration: keysets\[0\]\.publish_ahead \(1s\)"):
        check_policy(too_fast)
