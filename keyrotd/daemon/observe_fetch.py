"""The observer's bounded GET: a JWKS URL fetched as a verifier would, its kids and cache lifetime.

Plain GET, no cache-busting; http(s) only, at most 3 redirects, 1 MiB, and the caller's timeout.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import timedelta
from email.message import Message
from typing import IO, Final

from keyrotd.propagation import Answer

MAX_BODY: Final = 1024 * 1024
MAX_REDIRECTS: Final = 3
_CACHE_LIFETIME: Final = re.compile(r"(?:^|[\s,])(?:max-age|s-maxage)\s*=\s*\"?(\d+)", re.I)


class ObserveError(Exception):
    """One answer that does not count as a JWKS (the message names why, never the body)."""


class _AtMostThreeRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


# http(s) only: a redirect elsewhere (file:, ftp:) finds no handler and fails as unreachable
_OPENER: Final = urllib.request.OpenerDirector()
for _handler in (
    urllib.request.ProxyHandler(),
    urllib.request.HTTPHandler(),
    urllib.request.HTTPSHandler(),
    urllib.request.HTTPDefaultErrorHandler(),
    _AtMostThreeRedirects(),
    urllib.request.HTTPErrorProcessor(),
):
    _OPENER.add_handler(_handler)


def cache_lifetime(headers: Message) -> timedelta:
    """The longest ``max-age``/``s-maxage`` in ``Cache-Control``, as sent (0 without one)."""
    values = [
        int(v) for h in headers.get_all("Cache-Control") or () for v in _CACHE_LIFETIME.findall(h)
    ]
    return timedelta(seconds=max(values, default=0))


def fetch(url: str, timeout: float) -> Answer:
    """GET ``url`` as a verifier would; the kids it serves and the cache lifetime it sent."""
    request = urllib.request.Request(url, headers={"User-Agent": "keyrotd-observe"})  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = _read_bounded(response)
            lifetime = cache_lifetime(response.headers)
    except urllib.error.HTTPError as exc:
        raise ObserveError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ObserveError(f"unreachable ({reason})") from None
    return Answer(_kids(body), lifetime)


def _read_bounded(response: IO[bytes]) -> bytes:
    body = response.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ObserveError("answer larger than 1 MiB")
    return body


def _kids(body: bytes) -> frozenset[str]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ObserveError("not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise ObserveError("not a JWKS (no keys array)")
    return frozenset(k["kid"] for k in keys if isinstance(k.get("kid"), str))
