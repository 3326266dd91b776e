"""Bad input: generated configuration files and environments through the real CLI
entry point, and odd HTTP requests against a real daemon.

Configuration: whole documents built from every setting with good, nearly good and bad values
(and then damaged at random), plus ``KEYROTD_*`` variables, 1,200 examples in all through
``keyrotd.cli.main(["--config", FILE, "check-config"])``: the exit code is 0 or 2, and on 2 stderr
is exactly one ``keyrotd: ...`` line with no traceback and no "internal error".
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from keyrotd.cli import main
from keyrotd.keys import NewKey, generate_key
from keyrotd.lifecycle.commands import Rotate
from keyrotd.model import Policy
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.config import toml_value
from tests.support.daemon import Daemon, free_port, start_daemon

from .helpers import find_secrets, secret_needles

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


HOUR = timedelta(hours=1)
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


# --- HTTP -----------------------------------------------------------------------------------------
#
# One real daemon (admin endpoints on) for the module. Requests are raw bytes over a socket, so
# nothing is normalised on the way: odd methods, paths, headers, framing and oversized bodies.
# Every answer must be a well-formed HTTP status other than 500 (or the connection closed), no
# answer may hold private key material, and the daemon must keep serving the JWKS afterwards.

ADMIN_TOKEN = "bad-input-admin-token-6f1c2a9b8e7d"


@pytest.fixture(scope="module")
def http_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("http")
    token = directory / "admin.token"
    token.write_text(ADMIN_TOKEN)
    token.chmod(0o600)
    port = free_port()
    config = directory / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{directory / "store"}"\n'
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_token_file = "{token}"\n'
        'refresh_interval = "1s"\njwks_max_age = "1s"\n'
        '[[keysets]]\nname = "default"\nalgorithm = "ES256"\nrotation_period = "1h"\n'
        'publish_ahead = "10m"\n'
    )
    daemon = start_daemon(config, port, log_path=directory / "daemon.log")
    yield daemon
    assert daemon.stop() == 0


@pytest.fixture(scope="module")
def http_needles(http_daemon: Daemon) -> dict[str, str]:
    """The private values of the daemon's keys (nothing rotates them during the module)."""
    return private_needles(http_daemon)


def raw_request(port: int, data: bytes, timeout: float = 5.0, half_close: bool = True) -> bytes:
    """Send ``data`` (then half-close, unless the request says ``Connection: close``), read the
    answer until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early on an oversized request: read what it said
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def private_needles(daemon: Daemon) -> dict[str, str]:
    body = daemon.get("/keysets/default/signing-key", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert body.status == 200
    signing = body.json()
    assert isinstance(signing, dict)
    return secret_needles([jwk for jwk in (signing["active"], signing["next"]) if jwk])


def check_answer(answer: bytes, needles: dict[str, str]) -> int | None:
    """The status of the first response in ``answer`` (None: closed without one)."""
    assert find_secrets(answer, needles) == [], answer[:300]
    if not answer:
        return None
    statuses = re.findall(rb"^HTTP/1\.[01] (\d{3}) ", answer, re.M)
    assert statuses, answer[:300]
    assert b"500" not in statuses and b"Traceback" not in answer, answer[:500]
    return int(statuses[0])


BIG = b"x" * (1024 * 1024)
ODD_REQUESTS = {
    "put-jwks": b"PUT /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "delete-jwks": b"DELETE /keysets/default/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "options-star": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "trace": b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect": b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase-get": b"get /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "long-method": b"A" * 5000 + b" / HTTP/1.1\r\nHost: x\r\n\r\n",
    "utf8-method": "GÉT / HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "dot-dot": b"GET /keysets/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded-dot-dot": b"GET /keysets/%2e%2e/%2e%2e/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-path": b"GET /keysets/de\x00fault/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "pct-nul": b"GET /keysets/%00/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "double-slash": b"GET //keysets//default//jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form": b"GET http://evil/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "long-path": b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-query": b"GET /keysets/default/rotate?now=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    "admin-path-get-revoke": b"GET /keysets/default/keys/x/revoke HTTP/1.1\r\nHost: x\r\n\r\n",
    "admin-deep-path": b"POST /keysets/default/keys/a/b/c/revoke HTTP/1.1\r\nHost: x\r\n\r\n",
    "keyset-empty": b"GET /keysets//jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "keysets-only": b"GET /keysets/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "no-host-http10": b"GET /.well-known/jwks.json HTTP/1.0\r\n\r\n",
    "http09": b"GET /.well-known/jwks.json\r\n\r\n",
    "garbage": bytes(range(256)) * 8,
    "no-crlf": b"GET / HTTP/1.1\nHost: x\n\n",
    "huge-header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
    "many-headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(3000))
    + b"\r\n",
    "bad-header-name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
    "header-no-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "two-authorizations": b"GET /keysets/default/signing-key HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer wrong\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode() + b"x\r\n\r\n",
    "authorization-binary": b"GET /keysets/default/signing-key HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer \xff\xfe\x00\x01\r\n\r\n",
    "if-none-match-garbage": b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n"
    b"If-None-Match: " + b'"a",' * 5000 + b"\r\n\r\n",
    "negative-length": b"POST /keysets/default/rotate HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: -5\r\n\r\n",
    "huge-length-no-body": b"POST /keysets/default/rotate HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 99999999999999999999\r\n\r\n",
    "length-and-chunked": b"POST /keysets/default/rotate HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bad-chunks": b"POST /keysets/default/rotate HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n",
    "oversized-body-jwks": b"POST /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BIG) + BIG,
    "oversized-body-rotate-no-auth": b"POST /keysets/default/rotate HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BIG) + BIG,
    "oversized-body-signing-key": b"GET /keysets/default/signing-key HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BIG) + BIG,
    "pipelined": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 50,
}


@pytest.mark.parametrize("name", sorted(ODD_REQUESTS))
def test_odd_http_requests_get_no_500_and_no_secret(
    http_daemon: Daemon, http_needles: dict[str, str], name: str
) -> None:
    check_answer(raw_request(http_daemon.port, ODD_REQUESTS[name]), http_needles)
    assert http_daemon.get("/.well-known/jwks.json").status == 200


def test_an_http2_preface_is_answered_in_http2(
    http_daemon: Daemon, http_needles: dict[str, str]
) -> None:
    answer = raw_request(http_daemon.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert find_secrets(answer, http_needles) == []
    assert answer == b"" or answer[3] in (0x04, 0x07)  # a SETTINGS or GOAWAY frame


def test_oversized_authorized_body_is_refused_before_any_write(http_daemon: Daemon) -> None:
    before = http_daemon.get("/.well-known/jwks.json").body
    request = (
        b"POST /keysets/default/rotate?now=true HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BIG) + BIG
    )
    status = check_answer(raw_request(http_daemon.port, request), private_needles(http_daemon))
    assert status in (None, 400, 413)
    assert http_daemon.get("/.well-known/jwks.json").body == before


METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"])
SEGMENTS = st.sampled_from(
    [
        "keysets",
        "default",
        "jwks.json",
        ".well-known",
        "signing-key",
        "rotate",
        "keys",
        "revoke",
        "metrics",
        "healthz",
        "readyz",
        "openid-configuration",
        "..",
        ".",
        "",
        "%2f",
        "%00",
        "é",
        "x" * 300,
    ]
)
HEADER_NAMES = st.sampled_from(
    [
        "Authorization",
        "If-None-Match",
        "Content-Length",
        "Content-Type",
        "Accept",
        "X-Forwarded-For",
    ]
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            f"Bearer {ADMIN_TOKEN[:-1]}",
            f"bearer {ADMIN_TOKEN}x",
            "Basic Zm9vOmJhcg==",
            "*",
            '"abc"',
            'W/"x"',
            "0",
            "-1",
            "1e9",
            "application/json",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    method=METHODS,
    segments=st.lists(SEGMENTS, min_size=1, max_size=6),
    query=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4),
    body=st.binary(max_size=200),
)
def test_generated_http_requests_get_no_500_and_no_secret(
    http_daemon: Daemon,
    http_needles: dict[str, str],
    method: str,
    segments: list[str],
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    path = "/" + "/".join(segments) + (f"?{query}" if query else "")
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers if name != "Content-Length"]
    lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    answer = raw_request(http_daemon.port, request, half_close=False)
    status = check_answer(answer, http_needles)
    assert status is not None or not request.isascii(), request[:200]


def test_the_daemon_survived_everything_and_logged_no_traceback(http_daemon: Daemon) -> None:
    assert http_daemon.get("/healthz").status == 200
    assert http_daemon.get("/.well-known/jwks.json").status == 200
    logs = http_daemon.log_text()
    assert "Traceback" not in logs
    assert find_secrets(logs, private_needles(http_daemon)) == []


# --- a kid that starts with '-' ---------------------------------------------------------------


def dash_key() -> NewKey:
    """A real ES256 key whose kid starts with '-' (one in 64 does)."""
    for _ in range(5000):
        key = generate_key("ES256")
        if key.kid.startswith("-"):
            return key
    raise AssertionError("no kid starting with '-' in 5000 keys")


@pytest.mark.parametrize(
    "argv",
    [
        ["revoke", "KID"],
        ["revoke", "KID", "--keyset", "default"],
        ["revoke", "--keyset", "default", "KID"],
        ["--config", "CONFIG", "revoke", "KID"],
        ["revoke", "PREFIX"],  # the 8 characters `status` shows
        ["revoke", "--keyset", "default", "PREFIX"],
    ],
)
def test_revoke_takes_a_kid_that_starts_with_a_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Found by the race tests: ``keyrotd revoke -AbC…`` was refused as a usage error."""
    key = dash_key()
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "store"}"\n')
    spec = KeysetSpec("default", "ES256", 2048, Policy(HOUR, HOUR / 2, HOUR, HOUR))
    manager = KeysetWriter(FileStorage(tmp_path / "store"), spec, key_factory=lambda *_: key)
    manager.apply()
    manager.apply(Rotate())  # the dash key is active, a successor is pending
    given = {"KID": key.kid, "PREFIX": key.kid[:8], "CONFIG": str(config)}
    argv = [given.get(arg, arg) for arg in argv]
    if "--config" not in argv:
        argv = ["--config", str(config), *argv]
    assert main(argv) == 0, capsys.readouterr().err
    assert f"key.revoked {key.kid}" in capsys.readouterr().out


# --- files that guard secrets: `run` and `check-config` refuse the same ones --------------------

PROTECTED_CASES = {
    "token-0644": ("token", 0o644, "is accessible to other users (mode 644)"),
    "token-0444-container-secret": ("token", 0o444, "is accessible to other users (mode 444)"),
    "token-group-writable": ("token", 0o620, "is accessible to other users (mode 620)"),
    "token-missing": ("token", None, "does not exist"),
    "token-a-directory": ("token", "dir", "is not a regular file"),
    "key-0644": ("key", 0o644, "is accessible to other users (mode 644)"),
    "key-missing": ("key", None, "does not exist"),
    "key-16-bytes": ("key", b"short", "does not hold a 32-byte key (it decodes to 16 bytes)"),
    "key-not-base64": ("key", b"not base64!", "does not hold a 32-byte key (not base64)"),
}
SETTING = {"token": "server.admin_token_file", "key": "storage.encryption_key_file"}


def protected_files(directory: Path, case: str) -> tuple[Path, Path]:
    """A config whose admin token and encryption key are good but for the one ``case`` spoils."""
    token, key = directory / "admin.token", directory / "storage.key"
    token.write_text(ADMIN_TOKEN)
    key.write_bytes(base64.b64encode(bytes(range(32))))
    for path in (token, key):
        path.chmod(0o600)
    which, change, _ = PROTECTED_CASES[case]
    spoilt = token if which == "token" else key
    if change is None:
        spoilt.unlink()
    elif change == "dir":
        spoilt.unlink()
        spoilt.mkdir()
    elif isinstance(change, bytes):
        spoilt.write_bytes(base64.b64encode(bytes(16)) if change == b"short" else change)
    else:
        spoilt.chmod(change)
    config = directory / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{directory / "store"}"\nencryption_key_file = "{key}"\n'
        f'[server]\nlisten = "127.0.0.1:{free_port()}"\nadmin_token_file = "{token}"\n'
    )
    return config, spoilt


def keyrotd_process(directory: Path, *argv: str, timeout: float = 30) -> tuple[int, str, str]:
    """The real console entry point in a child process: exit code, stdout, stderr."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "keyrotd.cli", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=directory,
            env=environ,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"keyrotd {' '.join(argv)} did not refuse: it kept running") from None
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("case", sorted(PROTECTED_CASES))
def test_run_and_check_config_refuse_the_same_protected_files(tmp_path: Path, case: str) -> None:
    config, spoilt = protected_files(tmp_path, case)
    which, _, problem = PROTECTED_CASES[case]
    commands = ["check-config", "run"] + (["status", "rotate"] if which == "key" else [])
    answers = {
        command: keyrotd_process(tmp_path, "--config", str(config), command) for command in commands
    }

    for command, (code, out, err) in answers.items():
        assert (code, out) == (2, ""), (command, code, out, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (command, err)
        assert err.startswith(f"keyrotd: {SETTING[which]} {spoilt} {problem}: "), (command, err)
    assert len({err for _, _, err in answers.values()}) == 1, answers
    assert not (tmp_path / "store").exists()  # nothing was written before the refusal


def test_a_container_secret_gets_a_hint_that_works_in_a_container(tmp_path: Path) -> None:
    config, spoilt = protected_files(tmp_path, "token-0444-container-secret")
    _, _, err = keyrotd_process(tmp_path, "--config", str(config), "check-config")
    assert f"chmod 600 {spoilt}" in err
    assert f"--secret NAME,mode=0400,uid={os.geteuid()}" in err


def test_group_readable_protected_files_are_accepted(tmp_path: Path) -> None:
    config, _ = protected_files(tmp_path, "key-missing")
    (tmp_path / "storage.key").write_bytes(base64.b64encode(bytes(range(32))) + b"\n")
    (tmp_path / "storage.key").chmod(0o400)
    (tmp_path / "admin.token").chmod(0o640)
    code, out, err = keyrotd_process(tmp_path, "--config", str(config), "check-config")
    assert (code, err) == (0, ""), err
    assert out.startswith(f"configuration OK ({config})\n")


@pytest.mark.parametrize("with_file", [False, True], ids=["defaults", "file"])
def test_check_config_names_the_environment_overrides(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    with_file: bool,
) -> None:
    """It said "built-in defaults" when only KEYROTD_* variables were in play."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "elsewhere.toml"
    config.write_text('[logging]\nformat = "text"\n')
    argv = ["--config", str(config)] if with_file else []
    environ = {"KEYROTD_SERVER__LISTEN": "127.0.0.1:9", "KEYROTD_LOGGING__LEVEL": "debug"}
    with environment(environ):
        assert main([*argv, "check-config"]) == 0
    source = config if with_file else "built-in defaults"
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"configuration OK ({source}, overridden by KEYROTD_LOGGING__LEVEL, KEYROTD_SERVER__LISTEN)"
    )
