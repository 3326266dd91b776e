"""Bad input (issue 6.5): generated configuration files and environments through the real CLI
entry point, and odd HTTP requests against a real daemon.

Configuration: whole documents built from every setting with good, nearly good and bad values
(and then damaged at random), plus ``KEYROTD_*`` variables, 1,200 examples in all through
``keyrotd.cli.main(["--config", FILE, "check-config"])``: the exit code is 0 or 2, and on 2 stderr
is exactly one ``keyrotd: ...`` line with no traceback and no "internal error".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from keyrotd.cli import main

TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
DURATIONS = st.one_of(
    st.sampled_from(
        [
            "90s",
            "15m",
            "24h",
            "7d",
            "PT1H",
            "P1D",
            "1h30m",
            "30",
            "0",
            "0s",
            "-1s",
            "1e999",
            "nan",
            "P1M",
            "1y",
            "24 h",
            "",
            "10ms",
            "36500d",
            "36501d",
            ".5",
            "1.5h",
            "PT",
            "P-1D",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
FIELD_VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "storage": {
        "type": st.sampled_from(["file", "aws", "AWS", "s3", "", "File "]),
        "path": st.one_of(st.sampled_from(["./data", "", "/", "\x00", "a" * 5000]), TEXT),
        "encryption_key_file": st.one_of(st.sampled_from(["", "/nonexistent/key"]), TEXT),
        "secret_prefix": st.one_of(st.sampled_from(["keyrotd/", "", "a b", "ü/"]), TEXT),
        "region": st.sampled_from(["", "eu-west-1", "EU", "x" * 70]),
        "endpoint_url": st.sampled_from(
            ["", "http://127.0.0.1:4566", "ftp://x", "http://", "http://[::1", "http://a:99999"]
        ),
        "kms_key_id": TEXT,
    },
    "server": {
        "listen": st.one_of(
            st.sampled_from(
                [
                    "127.0.0.1:8080",
                    "[::1]:8080",
                    "0.0.0.0:0",
                    ":8080",
                    "host:65536",
                    "[x]:1",
                    "256.1.1.1:80",
                    "a..b:80",
                    "-a:80",
                    "localhost:80",
                    "1.2.3.4:080808",
                ]
            ),
            TEXT,
        ),
        "admin_token_file": st.one_of(st.just(""), TEXT),
        "refresh_interval": DURATIONS,
        "jwks_max_age": DURATIONS,
    },
    "logging": {
        "format": st.sampled_from(["json", "text", "TEXT", "xml", ""]),
        "level": st.sampled_from(["debug", "INFO", "warning", "error", "critical", "trace", ""]),
    },
    "keysets": {
        "name": st.one_of(st.sampled_from(["default", "a", "", "../x", "x" * 65, "a b"]), TEXT),
        "algorithm": st.sampled_from(
            ["RS256", "rs256", "PS512", "ES256", "ES512", "EdDSA", "eddsa", "HS256", "none", ""]
        ),
        "rsa_key_size": st.one_of(
            st.sampled_from([2048, 3072, 4096, 1024, 0, -1, 2**64, True]), st.integers()
        ),
        "rotation_period": DURATIONS,
        "publish_ahead": DURATIONS,
        "token_lifetime": DURATIONS,
        "clock_skew": DURATIONS,
        "issuer": st.sampled_from(["", "https://auth.example.com", "https://a/?q", "x", "http://"]),
    },
}
ODD_VALUES = st.one_of(
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "name"]), st.integers(), max_size=2),
    st.integers(),
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


@st.composite
def table(draw: st.DrawFn, section: str) -> dict[str, Any]:
    fields = FIELD_VALUES[section]
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    values = {name: draw(fields[name]) for name in chosen}
    if draw(st.integers(0, 9)) == 0:  # a value of the wrong kind
        values[draw(st.sampled_from(sorted(fields)))] = draw(ODD_VALUES)
    if draw(st.integers(0, 14)) == 0:  # an unknown or misspelt setting
        values[draw(st.sampled_from(["listn", "Path", "rotation", "extra", "keysets"]))] = 1
    return values


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A configuration file: any of the sections, each with good and bad values, maybe damaged."""
    lines: list[str] = []
    for section in draw(st.permutations(["storage", "server", "logging", "keysets"])):
        if draw(st.booleans()):
            continue
        for _ in range(draw(st.integers(1, 3)) if section == "keysets" else 1):
            values = draw(table(section))
            lines.append("[[keysets]]" if section == "keysets" else f"[{section}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items()]
    text = "\n".join(lines) + "\n"
    damage = draw(st.integers(0, 5))
    if damage == 0 and text:  # cut it short
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 1:  # insert stray characters
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["[", "]]", '"', "=", "\\", "\x00", "\ufeff"]))
            + text[at:]
        )
    return text


ENV_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    """``KEYROTD_*`` variables: real settings with generated values, JSON sections, odd names."""
    environ: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(FIELD_VALUES)))
        kind = draw(st.integers(0, 5))
        if section == "keysets" or kind == 0:
            value = json.dumps(
                draw(table(section)) if section != "keysets" else [draw(table(section))]
            )
            if kind == 1:
                value = value[: len(value) // 2]
            environ[f"KEYROTD_{section.upper()}"] = value
        elif kind == 1:
            environ["KEYROTD_" + draw(ENV_TEXT.filter(lambda s: "=" not in s))] = draw(ENV_TEXT)
        else:
            name = draw(st.sampled_from(sorted(FIELD_VALUES[section])))
            raw = draw(FIELD_VALUES[section][name])
            text = raw if isinstance(raw, str) else toml_value(raw)
            spelled = draw(st.sampled_from([name.upper(), name, name.title()]))
            environ[f"KEYROTD_{section.upper()}__{spelled}"] = text.replace("\x00", "")
    return environ


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--config", str(path), "check-config"])
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    if code == 0:
        assert out.startswith("configuration OK") and err == ""
        return code, out
    assert out == ""
    assert err.startswith("keyrotd: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


CONFIG_EXAMPLES = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
    database=None,
)


@settings(CONFIG_EXAMPLES, max_examples=700)
@given(documents())
def test_generated_configuration_files_exit_0_or_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "keyrotd.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    event(f"exit {check_config(path, capsys)[0]}")


@settings(CONFIG_EXAMPLES, max_examples=500)
@given(documents(), environments())
def test_generated_environments_exit_0_or_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, environ: dict[str, str]
) -> None:
    path = tmp_path / "keyrotd.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with environment(environ):
        code, message = check_config(path, capsys)
    event(f"exit {code}")
    if code == 2 and any(name.startswith("KEYROTD_") for name in environ):
        assert message.startswith("keyrotd: ")


def test_a_valid_generated_shape_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The generators can produce accepted files: the test is not only about refusals."""
    path = tmp_path / "keyrotd.toml"
    path.write_text(
        '[server]\n"refresh_interval" = "30s"\n[[keysets]]\n"name" = "a"\n"algorithm" = "eddsa"\n'
    )
    assert check_config(path, capsys)[0] == 0
