"""Configuration (README.md): lookup, environment overrides, validation, policy, errors."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrotd.config import (
    KeysetSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    find_config_file,
    load_settings,
)
from keyrotd.errors import ConfigError, UsageError
from keyrotd.model import Policy
from keyrotd.storage.registry import BUILT_IN, COMMON_KEYS, chosen_backend
from tests.support.config import toml_value

EXAMPLE = Path(__file__).parent.parent / "config" / "keyrotd.toml"
SHORT_POLICY = """
[server]
refresh_interval = "1s"
jwks_max_age = "1s"

[[keysets]]
rotation_period = "6s"
publish_ahead = "3s"
token_lifetime = "2s"
clock_skew = "0s"
verifier_cache = "1s"
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(directory: Path, body: str, name: str = "keyrotd.toml") -> Path:
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def error_of(body: str, environ: dict[str, str] | None = None) -> str:
    """The one-line error of loading ``body`` as ./keyrotd.toml (the cwd is a tmp dir)."""
    write(Path.cwd(), body)
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ or {})
    return str(raised.value)


# --- lookup --------------------------------------------------------------------------------------


def test_no_file_means_defaults(in_tmp: Path) -> None:
    loaded = load_settings(None, {})
    assert loaded.model_dump(exclude={"storage"}) == Settings().model_dump(exclude={"storage"})
    assert loaded.config_file is None
    # the default's relative path, made absolute against the working directory
    assert loaded.storage == StorageSettings(type="file", path=in_tmp / "keyrotd-data")
    assert loaded.server.listen == "127.0.0.1:8080"
    assert loaded.server.refresh_interval == timedelta(seconds=30)
    assert loaded.server.jwks_max_age == timedelta(minutes=5)
    assert (loaded.logging.format, loaded.logging.level) == ("json", "info")
    assert loaded.keysets == (KeysetSettings(name="default"),)
    assert loaded.keysets[0].policy == Policy(
        rotation_period=timedelta(hours=24),
        publish_ahead=timedelta(hours=24),
        token_lifetime=timedelta(hours=1),
        clock_skew=timedelta(minutes=5),
    )


def test_lookup_order(in_tmp: Path) -> None:
    local = write(in_tmp, '[logging]\nlevel = "debug"\n')
    from_env = write(in_tmp, '[logging]\nlevel = "error"\n', "env.toml")
    explicit = write(in_tmp, '[logging]\nlevel = "warning"\n', "explicit.toml")
    environ = {"KEYROTD_CONFIG": str(from_env)}

    assert find_config_file(str(explicit), environ) == explicit
    assert find_config_file(None, environ) == from_env
    assert find_config_file(None, {}) == Path("keyrotd.toml")
    assert find_config_file(None, {"KEYROTD_CONFIG": ""}) == Path("keyrotd.toml")
    assert load_settings(str(explicit), environ).logging.level == "warning"
    assert load_settings(None, environ).logging.level == "error"
    assert load_settings(None, {}).logging.level == "debug"
    assert load_settings(None, {}).config_file == Path("keyrotd.toml")
    local.unlink()
    assert find_config_file(None, {}) is None


def test_missing_explicit_or_env_file_is_an_error(in_tmp: Path) -> None:
    write(in_tmp, "")
    with pytest.raises(ConfigError) as raised:
        find_config_file("nowhere.toml", {})
    assert str(raised.value) == (
        '--config: no configuration file "nowhere.toml": '
        "check the path, or leave it out to use ./keyrotd.toml or the defaults"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(None, {"KEYROTD_CONFIG": "gone.toml"})
    assert raised.value.message == 'KEYROTD_CONFIG: no configuration file "gone.toml"'
    with pytest.raises(ConfigError) as raised:
        load_settings(str(in_tmp), {})
    assert raised.value.message == f'--config: "{in_tmp}" is a directory'


def test_os_environ_is_the_default_environment(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYROTD_SERVER__LISTEN", "0.0.0.0:9000")
    assert load_settings().server.listen == "0.0.0.0:9000"
    assert Settings().server.listen == "127.0.0.1:8080"  # Settings() alone never reads it


# --- environment ---------------------------------------------------------------------------------


def test_environment_overrides_the_file(in_tmp: Path) -> None:
    write(in_tmp, '[server]\nlisten = "127.0.0.1:1111"\nrefresh_interval = "10s"\n')
    loaded = load_settings(None, {"KEYROTD_SERVER__LISTEN": "[::1]:2222"})
    assert loaded.server.listen == "[::1]:2222"
    assert (loaded.server.host, loaded.server.port) == ("::1", 2222)
    assert loaded.server.refresh_interval == timedelta(seconds=10)


def test_environment_names_are_case_insensitive_and_values_too(in_tmp: Path) -> None:
    loaded = load_settings(
        None, {"keyrotd_logging__level": "DEBUG", "KEYROTD_STORAGE__TYPE": "AWS"}
    )
    assert loaded.logging.level == "debug"
    assert loaded.storage.type == "aws"


def test_keysets_from_json_environment(in_tmp: Path) -> None:
    write(in_tmp, '[[keysets]]\nname = "from-file"\n')
    keysets = [{"name": "a", "algorithm": "ES256"}, {"name": "b", "rotation_period": "7d"}]
    loaded = load_settings(None, {"KEYROTD_KEYSETS": json.dumps(keysets)})
    assert [k.name for k in loaded.keysets] == ["a", "b"]
    assert loaded.keyset("b").rotation_period == timedelta(days=7)
    assert load_settings(None, {"KEYROTD_KEYSETS": "[]"}).keysets == (KeysetSettings(),)


def test_section_as_json_merges_with_the_file(in_tmp: Path) -> None:
    write(in_tmp, '[server]\nlisten = "127.0.0.1:1111"\n')
    loaded = load_settings(None, {"KEYROTD_SERVER": '{"jwks_max_age": "1m"}'})
    assert loaded.server.listen == "127.0.0.1:1111"
    assert loaded.server.jwks_max_age == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"KEYROTD_SERVER__LISEN": "x"},
            "KEYROTD_SERVER__LISEN: unknown setting server.lisen: "
            "remove it or check the spelling (see `keyrotd check-config --example`)",
        ),
        (
            {"KEYROTD_FOO": "1"},
            "KEYROTD_FOO: unknown setting foo: "
            "remove it or check the spelling (see `keyrotd check-config --example`)",
        ),
        (
            {"KEYROTD_SERVER__LISTEN__PORT": "1"},
            "KEYROTD_SERVER__LISTEN__PORT: unknown setting server.listen.port: "
            "remove it or check the spelling (see `keyrotd check-config --example`)",
        ),
        (
            {"KEYROTD_KEYSETS__0__NAME": "a"},
            "KEYROTD_KEYSETS__0__NAME: unknown setting: "
            "set KEYROTD_KEYSETS to a JSON list of keysets",
        ),
        (
            {"KEYROTD_SERVER__REFRESH_INTERVAL": "x"},
            'KEYROTD_SERVER__REFRESH_INTERVAL: "x" is not a duration: '
            "use 90s, 15m, 24h, 7d, PT1H or plain seconds",
        ),
        (
            {"KEYROTD_KEYSETS": '[{"rsa_key_size": 1024}]'},
            "KEYROTD_KEYSETS: keysets[0].rsa_key_size: 1024 is too weak: use 2048, 3072 or 4096",
        ),
        (
            {"KEYROTD_KEYSETS": '[{"nmae": "a"}]'},
            "KEYROTD_KEYSETS: unknown setting keysets[0].nmae: "
            "remove it or check the spelling (see `keyrotd check-config --example`)",
        ),
        (
            {"KEYROTD_KEYSETS": "default"},
            'KEYROTD_KEYSETS: not a JSON list: use e.g. [{"name": "default"}]',
        ),
        ({"KEYROTD_SERVER": "null"}, "KEYROTD_SERVER: not a JSON object: use e.g. {}"),
        (
            {"KEYROTD_LOGGING__LEVEL": "loud"},
            'KEYROTD_LOGGING__LEVEL: "loud" is not allowed: '
            'use "debug", "info", "warning", "error" or "critical"',
        ),
    ],
)
def test_environment_errors_name_the_variable(
    in_tmp: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ)
    assert str(raised.value) == message


def test_a_bad_file_value_overridden_by_the_environment_is_fine(in_tmp: Path) -> None:
    write(in_tmp, '[server]\nrefresh_interval = "soon"\n')
    loaded = load_settings(None, {"KEYROTD_SERVER__REFRESH_INTERVAL": "5s"})
    assert loaded.server.refresh_interval == timedelta(seconds=5)


# --- file values ---------------------------------------------------------------------------------


def test_example_file_loads_and_shows_the_defaults() -> None:
    loaded = load_settings(str(EXAMPLE), {})
    assert loaded.config_file == EXAMPLE
    expected = Settings().model_dump()
    expected["storage"]["path"] = EXAMPLE.parent / "keyrotd-data"  # relative to the file
    assert loaded.model_dump() == expected


STORAGE_KEYS = sorted(
    COMMON_KEYS.union(*(chosen_backend(kind).settings.model_fields for kind in BUILT_IN))
)
"""``[storage]``: keyrotd's keys and every built-in type's (keyrotd/storage/registry.py)."""


def test_example_file_shows_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in STORAGE_KEYS:
        assert f"\n{name} = " in text, name
    for section in (ServerSettings, KeysetSettings):
        for name in section.model_fields:
            assert f"\n{name} = " in text, name
    assert '\nformat = "json"' in text
    assert '\nlevel = "info"' in text


def test_empty_strings_mean_no_file(in_tmp: Path) -> None:
    write(in_tmp, '[storage]\nencryption_key_file = ""\n[server]\nadmin_token_file = ""\n')
    loaded = load_settings(None, {"KEYROTD_SERVER__ADMIN_TOKEN_FILE": ""})
    assert loaded.storage.encryption_key_file is None
    assert loaded.server.admin_token_file is None
    loaded = load_settings(None, {"KEYROTD_SERVER__ADMIN_TOKEN_FILE": "/run/token"})
    assert loaded.server.admin_token_file == Path("/run/token")


def test_values_are_normalised(in_tmp: Path) -> None:
    write(
        in_tmp, '[logging]\nlevel = "WARNING"\nformat = "Text"\n[[keysets]]\nalgorithm = "eddsa"\n'
    )
    loaded = load_settings(None, {})
    assert (loaded.logging.level, loaded.logging.format) == ("warning", "text")
    assert loaded.keysets[0].algorithm == "EdDSA"


def test_durations_in_every_form(in_tmp: Path) -> None:
    write(
        in_tmp,
        '[server]\nrefresh_interval = 2\njwks_max_age = "PT1M"\n'
        '[[keysets]]\nrotation_period = "7d"\npublish_ahead = "1d12h"\n'
        'token_lifetime = "900"\nclock_skew = 1.5\n',
    )
    loaded = load_settings(None, {})
    assert loaded.server.refresh_interval == timedelta(seconds=2)
    assert loaded.server.jwks_max_age == timedelta(minutes=1)
    assert loaded.keysets[0].publish_ahead == timedelta(hours=36)
    assert loaded.keysets[0].token_lifetime == timedelta(minutes=15)
    assert loaded.keysets[0].clock_skew == timedelta(seconds=1.5)


def test_short_period_policies_are_accepted(in_tmp: Path) -> None:
    write(in_tmp, SHORT_POLICY)
    keyset = load_settings(None, {}).keyset()
    assert keyset.policy == Policy(
        rotation_period=timedelta(seconds=6),
        publish_ahead=timedelta(seconds=3),
        token_lifetime=timedelta(seconds=2),
        clock_skew=timedelta(0),
    )


def test_empty_keyset_list_means_the_default_keyset(in_tmp: Path) -> None:
    write(in_tmp, "keysets = []\n")
    assert load_settings(None, {}).keysets == (KeysetSettings(),)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:8080", "::1", 8080),
        ("[::]:443", "::", 443),
        ("keyrotd.internal.example:80", "keyrotd.internal.example", 80),
    ],
)
def test_listen_addresses(listen: str, host: str, port: int) -> None:
    server = ServerSettings(listen=listen)
    assert (server.host, server.port) == (host, port)


def test_settings_are_frozen() -> None:
    loaded = Settings()
    with pytest.raises(pydantic.ValidationError):
        loaded.server = ServerSettings()  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        loaded.keysets[0].name = "other"  # type: ignore[misc]


def test_keyset_lookup() -> None:
    loaded = Settings(keysets=(KeysetSettings(name="a"), KeysetSettings(name="b")))
    assert loaded.keyset().name == "a"
    assert loaded.keyset("b").name == "b"
    with pytest.raises(UsageError) as raised:
        loaded.keyset("c")
    assert str(raised.value) == 'unknown keyset "c": use one of: a, b'


# --- file errors ---------------------------------------------------------------------------------

UNKNOWN = "remove it or check the spelling (see `keyrotd check-config --example`)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[server]\nlisen = "x"\n', f"keyrotd.toml: unknown setting server.lisen: {UNKNOWN}"),
        ("[sever]\n", f"keyrotd.toml: unknown setting sever: {UNKNOWN}"),
        ("[Server]\n", f"keyrotd.toml: unknown setting Server: {UNKNOWN}"),
        ('config_file = "x"\n', f"keyrotd.toml: unknown setting config_file: {UNKNOWN}"),
        ("[[keysets]]\ncolor = 1\n", f"keyrotd.toml: unknown setting keysets[0].color: {UNKNOWN}"),
        (
            '[server]\n"odd key" = 1\n',
            f'keyrotd.toml: unknown setting server."odd key": {UNKNOWN}',
        ),
        (
            '[server]\nrefresh_interval = "soon"\n',
            'keyrotd.toml: server.refresh_interval: "soon" is not a duration: '
            "use 90s, 15m, 24h, 7d, PT1H or plain seconds",
        ),
        (
            '[[keysets]]\nclock_skew = "-1m"\n',
            'keyrotd.toml: keysets[0].clock_skew: "-1m" is negative: use a duration of 0 or more',
        ),
        (
            "[[keysets]]\nrsa_key_size = 1024\n",
            "keyrotd.toml: keysets[0].rsa_key_size: 1024 is too weak: use 2048, 3072 or 4096",
        ),
        (
            "[[keysets]]\nrsa_key_size = 2049\n",
            "keyrotd.toml: keysets[0].rsa_key_size: 2049 is not supported: use 2048, 3072 or 4096",
        ),
        (
            "[[keysets]]\nrsa_key_size = true\n",
            "keyrotd.toml: keysets[0].rsa_key_size: True is not a key size: use 2048, 3072 or 4096",
        ),
        (
            '[[keysets]]\nalgorithm = "HS256"\n',
            'keyrotd.toml: keysets[0].algorithm: "HS256" is not supported: '
            "use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA",
        ),
        (
            '[[keysets]]\nname = "../etc"\n',
            'keyrotd.toml: keysets[0].name: "../etc" is not a valid keyset name: '
            "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (
            '[[keysets]]\nissuer = "auth.example.com"\n',
            'keyrotd.toml: keysets[0].issuer: "auth.example.com" is not an http(s) URL: '
            "use e.g. https://auth.example.com",
        ),
        (
            '[storage]\ntype = "s3"\n',
            'keyrotd.toml: storage.type: "s3" is not allowed: '
            'use "file", "aws", "vault" or "postgres"',
        ),
        (
            '[storage]\npath = ""\n',
            'keyrotd.toml: storage.path: "" is not a path: use a path such as "./keyrotd-data"',
        ),
        (
            '[server]\nlisten = "8080"\n',
            'keyrotd.toml: server.listen: "8080" is not host:port: '
            'use host:port, e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"',
        ),
        (
            '[server]\nlisten = "127.0.0.1:70000"\n',
            "keyrotd.toml: server.listen: port 70000 is out of range: use a port from 1 to 65535",
        ),
        (
            "[server]\nlisten = 8080\n",
            "keyrotd.toml: server.listen: 8080 is not a string: put the value in double quotes",
        ),
        (
            'server = "x"\n',
            "keyrotd.toml: server: must be a table: "
            "write it as a [section] (see `keyrotd check-config --example`)",
        ),
        (
            '[keysets]\nname = "a"\n',
            "keyrotd.toml: keysets: must be a list of keysets: "
            "write each keyset as a [[keysets]] section",
        ),
        (
            '[server]\nlisten = "127.0.0.1:80\n',
            "keyrotd.toml:2: invalid TOML: Illegal character '\\n': "
            "fix the syntax (see `keyrotd check-config --example`)",
        ),
        (
            "[server]\nlisten =\n",
            "keyrotd.toml:2: invalid TOML: Invalid value: fix the syntax "
            "(see `keyrotd check-config --example`)",
        ),
    ],
)
def test_file_errors_name_the_file_the_setting_and_the_fix(
    in_tmp: Path, body: str, message: str
) -> None:
    assert error_of(body) == message


def test_file_that_is_not_utf8(in_tmp: Path) -> None:
    (in_tmp / "keyrotd.toml").write_bytes(b'[server]\nlisten = "\xff"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(None, {})
    assert str(raised.value) == "keyrotd.toml: not UTF-8 text (byte 19): save it as UTF-8"


def test_aws_storage_needs_nothing_else(in_tmp: Path) -> None:
    write(in_tmp, '[storage]\ntype = "aws"\n')
    assert load_settings(None, {}).storage.type == "aws"


# --- every error is one line, whatever the input -------------------------------------------------

FIELDS = [("storage", name) for name in STORAGE_KEYS] + [
    (section, name)
    for section, model in (
        ("server", ServerSettings),
        ("logging", Settings.model_fields["logging"].annotation),
        ("keysets", KeysetSettings),
    )
    for name in model.model_fields  # type: ignore[union-attr]
]
NEAR_MISSES = st.sampled_from(
    [
        "",
        "0",
        "0s",
        "1s",
        "-1s",
        "PT1H",
        "P1M",
        "1024",
        "4096",
        "[::1]:80",
        "::1:80",
        "ES256",
        "aws",
        "DEBUG",
        "http://x",
        "a\nb",
        "\u2028",
        "\x00",
        "../x",
        "1e999",
        "nan",
    ]
)
TOML_VALUES = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(),
        st.text(alphabet=st.characters(exclude_categories=["Cs"])),
        NEAR_MISSES,
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
TOKENS = st.sampled_from(
    [
        "[server]",
        "[[keysets]]",
        "[storage]",
        "[logging]",
        "\n",
        " = ",
        "=",
        '"',
        "'",
        "[",
        "]",
        "{",
        "}",
        ",",
        ".",
        "#",
        "listen",
        "rsa_key_size",
        "publish_ahead",
        "name",
        "type",
        "1024",
        '"24h"',
        '"x"',
        "true",
        "1.5",
        "keysets",
        "server",
        "\\",
        "\u00e9",
        "\x00",
    ]
)


def loads_or_fails_on_one_line(environ: dict[str, str]) -> None:
    """Loading gives settings or a ConfigError of one line; anything else fails the test."""
    try:
        load_settings(None, environ)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert len(message.splitlines()) == 1, message


HYPOTHESIS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@HYPOTHESIS
@given(st.one_of(st.text(), st.lists(TOKENS).map("".join)))
def test_any_text_loads_or_is_a_config_error(in_tmp: Path, text: str) -> None:
    (in_tmp / "keyrotd.toml").write_bytes(text.encode("utf-8", "surrogatepass"))
    loads_or_fails_on_one_line({})


@HYPOTHESIS
@given(st.sampled_from(FIELDS), TOML_VALUES)
def test_any_value_in_the_file_loads_or_is_a_config_error(
    in_tmp: Path, field: tuple[str, str], value: object
) -> None:
    section, name = field
    header = "[[keysets]]" if section == "keysets" else f"[{section}]"
    write(in_tmp, f"{header}\n{name} = {toml_value(value)}\n")
    loads_or_fails_on_one_line({})


@HYPOTHESIS
@given(st.sampled_from(FIELDS), st.one_of(st.text(), NEAR_MISSES), TOML_VALUES)
def test_any_value_in_the_environment_loads_or_is_a_config_error(
    in_tmp: Path, field: tuple[str, str], text: str, value: object
) -> None:
    section, name = field
    if section == "keysets":
        environ = {"KEYROTD_KEYSETS": json.dumps([{name: value}])}
    else:
        environ = {f"KEYROTD_{section.upper()}__{name.upper()}": text}
    loads_or_fails_on_one_line(environ)


@HYPOTHESIS
@given(st.dictionaries(st.text(max_size=30).map(lambda s: "KEYROTD_" + s), st.text(), max_size=3))
def test_any_variables_load_or_are_a_config_error(in_tmp: Path, environ: dict[str, str]) -> None:
    loads_or_fails_on_one_line(environ)
