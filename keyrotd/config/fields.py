"""The value of each single setting: paths, URLs, listen addresses, algorithms, key sizes, names.

Each type here is an ``Annotated`` pydantic type whose validators raise
:class:`~keyrotd.durations.InvalidValueError`, which :mod:`keyrotd.config.messages` phrases as
one line: what is wrong, then how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BeforeValidator

from keyrotd.durations import InvalidValueError, quote
from keyrotd.model import ALGORITHMS, KEYSET_NAME

RSA_KEY_SIZES: Final = (2048, 3072, 4096)

# Patterns, not compiled ones: ``re`` compiles each on first use (and keeps it), so that a start
# whose configuration sets none of these settings compiles none.
_SECRET_PREFIX: Final = r"[A-Za-z0-9/_+=.@-]{0,256}"  # noqa: S105 (a pattern, no secret)
_REGION: Final = r"[a-z0-9-]{0,64}"
_TABLE: Final = r"([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}"
_BRACKETED: Final = r"\[([^\]]+)\]:([0-9]{1,5})"
_HOST_PORT: Final = r"([^:\[\]]+):([0-9]{1,5})"
_HOSTNAME: Final = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*"
_LISTEN_HINT: Final = 'use host:port, e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"'


def _path(value: object) -> Path:
    text = str(value) if isinstance(value, Path) else value
    if not isinstance(text, str) or not text or "\0" in text:
        raise InvalidValueError(
            f"{quote(value)} is not a path", 'use a path such as "./keyrotd-data"'
        )
    return Path(text)


def _optional_path(value: object) -> Path | None:
    """An empty string (the only way TOML and the environment can say "none") means ``None``."""
    return None if value is None or value == "" else _path(value)


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _http_url(value: str, *, bare: bool = False) -> str:
    """``value`` unless it is set and not an http(s) URL (``bare``: no query or fragment)."""
    if value == "" or _is_http_url(value, bare=bare):
        return value
    example = "https://auth.example.com" if bare else "http://127.0.0.1:4566"
    raise InvalidValueError(f"{quote(value)} is not an http(s) URL", f"use e.g. {example}")


def _is_http_url(value: str, *, bare: bool) -> bool:
    if any(char.isspace() or not char.isprintable() for char in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    plain = not (parts.query or parts.fragment or value.endswith(("?", "#")))
    return parts.scheme in ("http", "https") and bool(parts.hostname) and (plain or not bare)


def _matching(pattern: str, what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise InvalidValueError(f"{quote(value)} is not a valid {what}", hint)
        return value

    return AfterValidator(check)


def split_listen(listen: str) -> tuple[str, int]:
    """The host (IPv6 without brackets) and port of a ``host:port`` listen address."""
    bracketed, plain = re.fullmatch(_BRACKETED, listen), re.fullmatch(_HOST_PORT, listen)
    if bracketed and _is_ipv6(bracketed[1]):
        host, port = bracketed[1], int(bracketed[2])
    elif plain and _is_host(plain[1]):
        host, port = plain[1], int(plain[2])
    else:
        raise InvalidValueError(f"{quote(listen)} is not host:port", _LISTEN_HINT)
    if not 0 < port <= 65535:
        raise InvalidValueError(f"port {port} is out of range", "use a port from 1 to 65535")
    return host, port


def split_admin_listen(value: str) -> tuple[str, int] | Path:
    """``server.admin_listen``: a unix socket path (``unix:/PATH``) or a ``host:port``."""
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path.startswith("/") or "\0" in path or path.endswith("/"):
            raise InvalidValueError(
                f"{quote(value)} is not unix:/PATH",
                'use an absolute path, e.g. "unix:/run/keyrotd/admin.sock"',
            )
        return Path(path)
    return split_listen(value)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_host(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and bool(re.fullmatch(_HOSTNAME, host))


def _listen(value: str) -> str:
    split_listen(value)
    return value


def _admin_listen(value: str) -> str:
    if value:
        split_admin_listen(value)
    return value


def _algorithm(value: str) -> str:
    """The canonical spelling of a supported JWS algorithm (input is case-insensitive)."""
    for algorithm in ALGORITHMS:
        if algorithm.lower() == value.lower():
            return algorithm
    raise InvalidValueError(f"{quote(value)} is not supported", "use " + ", ".join(ALGORITHMS))


def _issuer_url(value: str) -> str:
    return _http_url(value, bare=True)


def _observe_urls(value: tuple[str, ...]) -> tuple[str, ...]:
    """Each an http(s) URL (a query is allowed: verifiers fetch what they are given), no repeats."""
    for url in value:
        if "@" in urlsplit(url).netloc:  # not repeated: it would show the password
            raise InvalidValueError(
                "an observed URL holds a user name or password (keysets[].observe)",
                "observe public JWKS URLs, as verifiers fetch them: without credentials (they "
                "would show in logs and metrics)",
            )
        if not url or not _is_http_url(url, bare=False):
            raise InvalidValueError(
                f"{quote(url)} is not an http(s) URL (keysets[].observe)",
                "list the public JWKS URLs verifiers fetch, e.g. "
                "https://cdn.example.com/.well-known/jwks.json",
            )
    if len(set(value)) != len(value):
        raise InvalidValueError("a URL is listed twice (keysets[].observe)", "list each URL once")
    return value


def _cors_origins(value: tuple[str, ...]) -> tuple[str, ...]:
    """``*`` or browser origins (``scheme://host[:port]``, no path), lower-cased as browsers send
    them; no repeats."""
    hint = 'list origins as browsers send them, e.g. "https://app.example.com", or "*" for any'
    origins: list[str] = []
    for origin in value:
        if origin != "*":
            parts = urlsplit(origin) if _is_http_url(origin, bare=True) else None
            if parts is None or parts.path or parts.username or parts.password:
                raise InvalidValueError(
                    f"{quote(origin)} is not an origin (server.cors_origins)", hint
                )
            origin = origin.lower()
        if origin in origins:
            raise InvalidValueError(f"{quote(origin)} is listed twice (server.cors_origins)", hint)
        origins.append(origin)
    return tuple(origins)


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise InvalidValueError(f"{quote(value)} is not a key size", "use 2048, 3072 or 4096")
    return value


def _rsa_key_size(value: int) -> int:
    if value < RSA_KEY_SIZES[0]:
        raise InvalidValueError(f"{value} is too weak", "use 2048, 3072 or 4096")
    if value not in RSA_KEY_SIZES:
        raise InvalidValueError(f"{value} is not supported", "use 2048, 3072 or 4096")
    return value


def issuer_path(issuer: str) -> str:
    """The path an issuer's discovery lives under (OIDC Discovery §4): ``/t1`` for
    ``https://a.example/t1/``, ``""`` for ``https://a.example``; decoded, as HTTP paths arrive."""
    return unquote(urlsplit(issuer).path).rstrip("/")


SettingPath = Annotated[Path, BeforeValidator(_path)]
OptionalPath = Annotated[Path | None, BeforeValidator(_optional_path)]
CustodyType = Annotated[Literal["storage", "pkcs11", "aws-kms"], BeforeValidator(_lowercase)]
SecretPrefix = Annotated[
    str, _matching(_SECRET_PREFIX, "secret name prefix", "use letters, digits and /_+=.@-")
]
Region = Annotated[str, _matching(_REGION, "AWS region", 'use e.g. "eu-west-1"')]
PostgresTable = Annotated[
    str,
    _matching(
        _TABLE,
        "PostgreSQL table name",
        'use lower-case letters, digits and _, optionally after a schema: "keyrotd_keysets" '
        'or "auth.keyrotd_keysets"',
    ),
]
EndpointUrl = Annotated[str, AfterValidator(_http_url)]
Listen = Annotated[str, AfterValidator(_listen)]
AdminListen = Annotated[str, AfterValidator(_admin_listen)]
LogFormat = Annotated[Literal["json", "text"], BeforeValidator(_lowercase)]
LogLevel = Annotated[
    Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lowercase)
]
KeysetName = Annotated[
    str,
    _matching(
        KEYSET_NAME,
        "keyset name",
        "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
]
Algorithm = Annotated[str, AfterValidator(_algorithm)]
RsaKeySize = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_rsa_key_size)]
IssuerUrl = Annotated[str, AfterValidator(_issuer_url)]
ObserveUrls = Annotated[tuple[str, ...], AfterValidator(_observe_urls)]
CorsOrigins = Annotated[tuple[str, ...], AfterValidator(_cors_origins)]
