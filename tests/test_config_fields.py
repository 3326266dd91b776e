"""The value of single settings (keyrotd/config/fields.py): listen addresses and issuer paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrotd.config import issuer_path, split_admin_listen, split_listen
from keyrotd.durations import InvalidValueError

LISTEN_HINT = 'use host:port, e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"'


@pytest.mark.parametrize(
    ("value", "problem", "hint"),
    [
        ("8080", '"8080" is not host:port', LISTEN_HINT),
        ("::1:8080", '"::1:8080" is not host:port', LISTEN_HINT),
        ("[127.0.0.1]:80", '"[127.0.0.1]:80" is not host:port', LISTEN_HINT),
        ("300.1.1.1:80", '"300.1.1.1:80" is not host:port', LISTEN_HINT),
        ("-bad.example:80", '"-bad.example:80" is not host:port', LISTEN_HINT),
        ("localhost:0", "port 0 is out of range", "use a port from 1 to 65535"),
        ("localhost:65536", "port 65536 is out of range", "use a port from 1 to 65535"),
    ],
)
def test_bad_listen_addresses_say_what_and_how(value: str, problem: str, hint: str) -> None:
    with pytest.raises(InvalidValueError) as raised:
        split_listen(value)
    assert (raised.value.problem, raised.value.hint) == (problem, hint)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("unix:/run/keyrotd/admin.sock", Path("/run/keyrotd/admin.sock")),
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        ("[::1]:9090", ("::1", 9090)),
    ],
)
def test_admin_listen_is_a_socket_path_or_host_port(
    value: str, expected: Path | tuple[str, int]
) -> None:
    assert split_admin_listen(value) == expected


@pytest.mark.parametrize("value", ["unix:relative.sock", "unix:/run/dir/", "unix:/a\0b", "unix:"])
def test_admin_socket_must_be_an_absolute_file_path(value: str) -> None:
    with pytest.raises(InvalidValueError) as raised:
        split_admin_listen(value)
    assert raised.value.hint == 'use an absolute path, e.g. "unix:/run/keyrotd/admin.sock"'
    assert raised.value.problem.endswith(" is not unix:/PATH")


@pytest.mark.parametrize(
    ("issuer", "path"),
    [
        ("https://auth.example.com", ""),
        ("https://auth.example.com/", ""),
        ("https://auth.example.com/t1/", "/t1"),
        ("https://auth.example.com/a/b", "/a/b"),
        ("https://auth.example.com/t%201", "/t 1"),
    ],
)
def test_issuer_path_is_decoded_without_a_trailing_slash(issuer: str, path: str) -> None:
    assert issuer_path(issuer) == path
