"""A bounded JSON GET (and POST) over http(s) or a daemon's unix socket, every failure a
KeyrotdError.

:func:`get_json` serves the issuer (``keyrotd.client``) and ``keyrotd inspect --jwks-url``: an
:class:`Endpoint` is a URL (optionally trusting one CA file) or a request path on a unix socket;
the body is at most 1 MiB, and with an ``Authorization`` header redirects are refused so the
bearer token goes to the daemon only. A failure says what went wrong (an untrusted certificate,
TLS against plain HTTP or the reverse, nothing listening, a timeout) and never quotes a header.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from keyrotd.errors import ConfigError, KeyrotdError, UsageError

__all__ = ["Endpoint", "get_json", "post_json"]

_MAX_RESPONSE: Final = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    """A URL to GET: ``http(s)://...`` (``ca_file``: the CA to trust for https), or a request
    ``path`` on the unix socket ``socket``."""

    url: str
    socket: str | None = None
    ca_file: str | None = None

    def __str__(self) -> str:
        return self.url if self.socket is None else f"unix:{self.socket} {self.url}"

    @classmethod
    def of_daemon(
        cls, base: str, path: str, ca_file: str | os.PathLike[str] | None = None
    ) -> Endpoint:
        """``path`` on the daemon at ``base``: ``http(s)://HOST:PORT[/PREFIX]`` or
        ``unix:/PATH``."""
        ca = None if ca_file is None else os.fspath(ca_file)
        if ca is not None and not base.startswith("https://"):
            raise UsageError(
                f"ca_file is for https:// URLs, not {base!r}",
                "use the daemon's https:// URL (server.tls_cert_file is set), or leave ca_file "
                "out for http:// and unix:/PATH",
            )
        if base.startswith("unix:"):
            socket_path = base.removeprefix("unix:")
            if not socket_path.startswith("/"):
                raise UsageError(
                    f"{base!r} is not a unix socket URL",
                    "write unix:/PATH with the absolute path of server.admin_listen's socket",
                )
            return cls(path, socket=socket_path)
        return cls(base.rstrip("/") + path, ca_file=ca)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket (the daemon's admin socket)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the bearer token must go to the daemon only."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get_json(
    url: str | Endpoint,
    *,
    timeout: float,
    what: str,
    headers: Mapping[str, str] | None = None,
    status_hints: Mapping[int, str] | None = None,
) -> object:
    """``GET url`` (an http or https URL, or an :class:`Endpoint`) and its JSON body (at most
    1 MiB); every failure is a :class:`KeyrotdError` naming the URL."""
    endpoint = url if isinstance(url, Endpoint) else Endpoint(url)
    if endpoint.socket is None:
        parts = urllib.parse.urlsplit(endpoint.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"{endpoint.url!r} is not an http(s) URL", "use e.g. http://127.0.0.1:8080"
            )
    sent = {"Accept": "application/json", **(headers or {})}
    try:
        status, reason, body = _get(endpoint, sent, timeout)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise _unreachable(endpoint, what, exc, timeout) from None
    if not 200 <= status < 300:
        hint = (status_hints or {}).get(status, f"check the URL; it should serve a {what}")
        raise KeyrotdError(f"{endpoint}: HTTP {status} {reason}", hint)
    if len(body) > _MAX_RESPONSE:
        raise KeyrotdError(f"{endpoint}: the {what} is larger than 1 MiB", "check the URL")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise KeyrotdError(f"{endpoint}: the {what} is not JSON", "check the URL") from None


def _unreachable(endpoint: Endpoint, what: str, exc: Exception, timeout: float) -> KeyrotdError:
    """What went wrong on the way to ``endpoint``, and the fix for that (never a header's text:
    it could hold the bearer token)."""
    cause = getattr(exc, "reason", exc)
    cause = cause if isinstance(cause, BaseException) else exc
    where = f"{endpoint}: cannot fetch the {what}"
    https = endpoint.socket is None and endpoint.url.startswith("https://")
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or str(cause)
        code = cause.reason or "CERTIFICATE_VERIFY_FAILED"
        return KeyrotdError(
            f"{where}: the server's TLS certificate is not trusted ({why}) [{code}]",
            "pass ca_file= the CA that signed the daemon's certificate (server.tls_cert_file), "
            "and use a host name the certificate names",
        )
    if isinstance(cause, ssl.SSLError):
        plain = "WRONG_VERSION_NUMBER" in str(cause) or "record layer" in str(cause)
        return KeyrotdError(
            f"{where}: the TLS handshake failed ({cause})",
            "the server does not speak TLS there: use http:// (the daemon has no "
            "server.tls_cert_file), or its TLS port"
            if plain
            else "check that the URL is the daemon's HTTPS listener",
        )
    closed = (ConnectionResetError, http.client.RemoteDisconnected, http.client.BadStatusLine)
    if isinstance(cause, closed) and not https and endpoint.socket is None:
        return KeyrotdError(
            f"{where}: the server closed the connection without an HTTP answer ({_text(cause)})",
            "if the daemon serves HTTPS (server.tls_cert_file is set), use an https:// URL",
        )
    if isinstance(cause, ConnectionRefusedError | FileNotFoundError):
        target = "no socket is there" if endpoint.socket else "nothing listens there"
        setting = "server.admin_listen" if endpoint.socket else "server.listen or admin_listen"
        return KeyrotdError(
            f"{where}: {target} ({_text(cause)})",
            f"start the daemon, or check the URL against its {setting}",
        )
    if isinstance(cause, TimeoutError):
        return KeyrotdError(
            f"{where}: no answer within {timeout:g}s",
            "check the network path to the daemon and that it is not overloaded",
        )
    if isinstance(cause, ValueError):  # its text may quote a header, so the token: left out
        return KeyrotdError(f"{where}: the request is invalid", "check the URL and the token")
    return KeyrotdError(f"{where} ({_text(cause)})", "check the URL and that the daemon is up")


def _text(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _get(endpoint: Endpoint, headers: Mapping[str, str], timeout: float) -> tuple[int, str, bytes]:
    """Status, reason and body (at most 1 MiB and a byte) of ``GET endpoint``."""
    if endpoint.socket is not None:
        connection = _UnixConnection(endpoint.socket, timeout)
        try:
            connection.request("GET", endpoint.url, headers=dict(headers))
            response = connection.getresponse()
            return response.status, response.reason, response.read(_MAX_RESPONSE + 1)
        finally:
            connection.close()
    handlers: list[urllib.request.BaseHandler] = []
    if endpoint.ca_file is not None:
        handlers.append(urllib.request.HTTPSHandler(context=_trusting(endpoint.ca_file)))
    if "Authorization" in headers:
        handlers.append(_NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(endpoint.url, headers=dict(headers))  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.reason, response.read(_MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, str(exc.reason), b""


def _trusting(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts only the CA certificates in ``ca_file``."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(
            f"cannot read ca_file {ca_file} ({reason})",
            "give the PEM file of the CA that signed the daemon's certificate",
        ) from None


def post_json(
    endpoint: Endpoint,
    data: object,
    *,
    timeout: float,
    what: str,
    headers: Mapping[str, str],
    status_hints: Mapping[int, str] | None = None,
) -> object:
    """``POST endpoint`` with ``data`` as JSON and the JSON answer (at most 1 MiB); redirects are
    not followed. A non-2xx answer is a :class:`KeyrotdError` with the daemon's own ``error``
    text when it sent one (it never holds a token) and the hint of ``status_hints``."""
    body = json.dumps(data).encode()
    sent = {"Accept": "application/json", "Content-Type": "application/json", **headers}
    try:
        status, reason, answer = _post(endpoint, sent, body, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise KeyrotdError(f"{endpoint}: cannot send the {what} ({exc})", "is it up?") from None
    except ValueError:  # its text may quote a header, the token's among them: never shown
        raise KeyrotdError(
            f"{endpoint}: cannot send the {what} (a header or the URL is not valid)",
            "check the URL, and that the token is one line of printable text",
        ) from None
    try:
        parsed = json.loads(answer) if len(answer) <= _MAX_RESPONSE else None
    except (ValueError, RecursionError):
        parsed = None
    if not 200 <= status < 300:
        said = parsed.get("error") if isinstance(parsed, dict) else None
        detail = f": {said}" if isinstance(said, str) else ""
        hint = (status_hints or {}).get(status, f"check the URL; it should take a {what}")
        raise KeyrotdError(f"{endpoint}: HTTP {status} {reason}{detail}", hint)
    if parsed is None:
        raise KeyrotdError(f"{endpoint}: the answer to the {what} is not JSON", "check the URL")
    return parsed


def _post(
    endpoint: Endpoint, headers: Mapping[str, str], body: bytes, timeout: float
) -> tuple[int, str, bytes]:
    connection: http.client.HTTPConnection
    if endpoint.socket is not None:
        connection = _UnixConnection(endpoint.socket, timeout)
        target = endpoint.url
    else:
        parts = urllib.parse.urlsplit(endpoint.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{endpoint.url!r} is not an http(s) URL")
        if parts.scheme == "https":
            context = (
                ssl.create_default_context()
                if endpoint.ca_file is None
                else _trusting(endpoint.ca_file)
            )
            connection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.reason, response.read(_MAX_RESPONSE + 1)
    finally:
        connection.close()
