"""``GET /status``: every keyset a client may read, on one page, for people.

The page shows each keyset's entry of ``keyrotd status --json`` (built by ``keyrotd.status`` from
the served view, as ``GET /keysets/{name}/status`` answers it) with what only the daemon knows:
storage health as this daemon sees it. Each keyset's keys are drawn on one time axis as inline
SVG (the spans of ``keyrotd.status_timeline``, as ``keyrotd status`` draws them in text).

It is a page a browser can open: after a ``WWW-Authenticate: Basic`` challenge (on this page
only) the browser sends a client's token as the Basic password (any user name); a Bearer token
works too. The client's ``status`` scopes choose the keysets shown (none: 403). The page holds
no script and loads nothing (a Content-Security-Policy forbids it), refreshes itself every
:data:`REFRESH` seconds, is never cached, and escapes every text it shows. It never holds key
material: kids, times, URLs, storage locations and error texts only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import html
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from keyrotd.admin_clients import Registry
from keyrotd.daemon.audit import UNKNOWN, Audit, Entry, remote_of, shown
from keyrotd.daemon.responses import GET, NO_STORE, Response, Scope, header, not_allowed
from keyrotd.daemon.state import Board, Health, ServedKeyset
from keyrotd.lifecycle.due import next_due, next_transition
from keyrotd.status import keyset_status
from keyrotd.status_timeline import (
    PUBLISHED,
    RETIRED,
    SIGNING,
    Span,
    axis,
    human_duration,
    key_spans,
    what_happens,
)
from keyrotd.times import rfc3339

Where = Callable[[str], tuple[str, str | None]]
"""A keyset's storage location and the version last read (``status``); memory only."""


class _Clients(Protocol):
    @property
    def registry(self) -> Registry: ...


class Admin(Protocol):
    """What the page needs of the admin endpoints (``admin.Admin``): who is asking, where each
    keyset is stored, and the audit trail."""

    @property
    def clients(self) -> _Clients: ...
    @property
    def where(self) -> Where: ...
    @property
    def audit(self) -> Audit: ...


REFRESH: Final = 30
"""Seconds between the page's own reloads (a ``<meta http-equiv="refresh">``)."""
LAST_TRANSITIONS: Final = 8
_STYLE: Final = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60em;padding:.5em 1em;color:#222}
h1{font-size:1.3em}h2{font-size:1.15em;margin:1.5em 0 .3em}
section{border-top:1px solid #ccc}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.3em 0}
dt{color:#555}dd{margin:0;overflow-wrap:anywhere}
.ok{color:#17622c}.bad{color:#a4161a;font-weight:bold}
svg{width:100%;max-width:44em;height:auto;display:block;margin:.5em 0}
svg text{font:10px system-ui,sans-serif;fill:#222}
.published{fill:#9ecae1}.signing{fill:#31a354}.retired{fill:#bdbdbd}
.now{stroke:#a4161a;stroke-width:2}.next{stroke:#e6550d;stroke-width:2;stroke-dasharray:4 3}
.legend span{margin-right:1em}
ul.keys{padding-left:1.2em}ul.keys li{margin:.2em 0}
code{font-size:.9em;overflow-wrap:anywhere}
"""
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode()
_HEADERS: Final = [
    (b"content-type", b"text/html; charset=utf-8"),
    NO_STORE,
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_CHALLENGE: Final = (b"www-authenticate", b'Basic realm="keyrotd status", charset="UTF-8"')
_CLASS: Final = {PUBLISHED: "published", SIGNING: "signing", RETIRED: "retired"}
_WIDTH: Final = 400
_LABEL: Final = 100
_ROW: Final = 22
_TOP: Final = 18


@dataclass(frozen=True)
class KeysetEntry:
    """One keyset as served now: its ``status --json`` entry, the view and its storage health."""

    report: dict[str, object]
    published: ServedKeyset
    health: Health | None


def keyset_entry(board: Board, where: Where, name: str, now: float) -> KeysetEntry | None:
    """The keyset ``name`` at ``now`` (epoch seconds); None while it has no JWKS yet."""
    published = board.current(name, now)
    if published is None:
        return None
    location, version = where(name)
    at = datetime.fromtimestamp(now, UTC)
    report = keyset_status(published.settings, published.keyset, location, version, at)
    return KeysetEntry(report, published, board.snapshot.health.get(name))


def presented_token(authorization: bytes | None) -> bytes | None:
    """The ``Authorization`` value as a Bearer one: a Basic password is the token."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return authorization
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    password = decoded.partition(b":")[2]
    return b"Bearer " + password if password else None


async def answer(admin: Admin, board: Board, executor: Executor, scope: Scope) -> Response:
    """``GET /status`` (audited as every authenticated request: action ``status``). The page
    is built in a worker thread: at thousands of keysets it takes a while, and the event loop
    must keep answering JWKS requests meanwhile."""
    method = scope["method"]
    client = admin.clients.registry.authenticate(
        presented_token(header(scope["headers"], b"authorization"))
    )
    entry = Entry(
        client=UNKNOWN if client is None else client.name,
        remote=remote_of(scope),
        method=shown(method),
        keyset="*",
        action="status",
        status=0,
    )
    names = (
        [] if client is None else [n for n in board.snapshot.order if client.allows("status", n)]
    )
    if method not in GET:
        response = not_allowed(GET)
    elif client is None:
        response = _plain(401, "Send a keyrotd client token as the password.", _CHALLENGE)
    elif not names:
        response = _plain(403, f"Client {client.name} has no status scope (status:KEYSET).")
    else:
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(
                executor, page, board, admin.where, client.name, names
            )
        except Exception:
            admin.audit.record(replace(entry, status=500))  # http answers a bare 500
            raise
    admin.audit.record(replace(entry, status=response.status))
    return response


def page(board: Board, where: Where, client: str, names: list[str]) -> Response:
    """The page of keysets ``names`` (in a worker thread: the board is safe to read there)."""
    now = time.time()
    entries = [keyset_entry(board, where, name, now) for name in names]
    loaded = [entry for entry in entries if entry is not None]
    waiting = [name for name, entry in zip(names, entries, strict=True) if entry is None]
    body = render(loaded, waiting, client, datetime.fromtimestamp(now, UTC))
    return Response(200, list(_HEADERS), body)


def _plain(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    body = _document("keyrotd status", f"<h1>keyrotd status</h1><p>{_e(message)}</p>")
    return Response(status, [*_HEADERS, *extra], body)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _document(title: str, content: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<meta http-equiv=refresh content="{REFRESH}">'
        f'<meta name=referrer content="no-referrer"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{content}</body></html>\n"
    ).encode()


def render(entries: list[KeysetEntry], waiting: list[str], client: str, now: datetime) -> bytes:
    """The page: every keyset of ``entries``, then the names of those not loaded yet."""
    parts = [
        "<h1>keyrotd status</h1>",
        f"<p>At {_e(rfc3339(now, 'seconds'))} for client <b>{_e(client)}</b>; "
        f"this page reloads every {REFRESH} s.</p>",
        "<p class=legend><span>light blue: published</span><span>green: signing</span>"
        "<span>grey: retired (verify only)</span><span>red line: now</span>"
        "<span>dashed: next transition</span></p>",
    ]
    parts += [_keyset(entry, now) for entry in entries]
    for name in waiting:
        parts.append(f"<section><h2>{_e(name)}</h2><p class=bad>not loaded yet</p></section>")
    return _document("keyrotd status", "".join(parts))


def _keyset(entry: KeysetEntry, now: datetime) -> str:
    report = entry.report
    name = str(report["name"])
    rows = [
        ("algorithm", _e(report["algorithm"])),
        ("custody", _e(report["custody"])),
        ("storage", _health(entry.health)),
        ("location", f"<code>{_e(report['location'])}</code>"),
        ("next transition", _next(entry, now)),
        ("held", _held(report)),
    ]
    facts = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return (
        f'<section id="keyset-{_e(name)}"><h2>{_e(name)}</h2><dl>{facts}</dl>'
        f"{_timeline(entry, now)}{_keys(report)}{_transitions(report, now)}</section>"
    )


def _health(health: Health | None) -> str:
    if health is None or not health.loaded:
        return "<span class=bad>not read yet</span>"
    last = (
        "never"
        if health.last_success is None
        else rfc3339(datetime.fromtimestamp(health.last_success, UTC), "seconds")
    )
    if health.error is not None:
        return (
            f"<span class=bad>failing</span>: {_e(health.error)} (serving the last good read; "
            f"last success {_e(last)})"
        )
    return f"<span class=ok>ok</span> (last success {_e(last)})"


def _next(entry: KeysetEntry, now: datetime) -> str:
    keyset, policy = entry.published.keyset, entry.published.settings.policy
    due = next_due(keyset, policy)
    if due is None:
        return "none scheduled"
    return (
        f"{_e(rfc3339(due.at, 'seconds'))} (in {_e(human_duration(due.at - now))}): "
        f"{_e(what_happens(due))}"
    )


def _held(report: dict[str, object]) -> str:
    held = report["held"]
    if not isinstance(held, dict):
        return "<span class=ok>no</span>"
    kid = str(held["kid"])
    since, lacking_since = _propagation(report, kid)
    urls = "".join(
        f"<li><code>{_e(url)}</code> lacks it since {_e(_when(lacking_since.get(url), '?'))}</li>"
        for url in held.get("lacking") or []
    )
    return (
        f"<span class=bad>held</span>: successor <code>{_e(kid)}</code> held since "
        f"{_e(_when(since, 'unknown'))}, awaiting every observed URL<ul class=lacking>{urls}</ul>"
    )


def _propagation(report: dict[str, object], kid: str) -> tuple[str | None, dict[str, str]]:
    """When the held successor was due, and since when each URL lacks it (from the report)."""
    for key in _list(report["keys"]):
        progress = key.get("propagation")
        if key.get("kid") == kid and isinstance(progress, dict):
            lacking = {
                str(u["url"]): str(u["lacking_since"])
                for u in progress.get("urls") or []
                if u.get("lacking_since")
            }
            return progress.get("scheduled_at"), lacking
    return None, {}


def _list(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _timeline(entry: KeysetEntry, now: datetime) -> str:
    keyset, policy = entry.published.keyset, entry.published.settings.policy
    if not keyset.keys:
        return "<p>no keys yet</p>"
    spans = {key.kid: key_spans(key, keyset, policy) for key in keyset.keys}
    upcoming = next_transition(keyset, policy)
    start, end = axis(spans.values(), now, upcoming)
    height = _TOP + _ROW * len(keyset.keys) + 4

    def x(moment: datetime) -> float:
        fraction = (moment - start) / (end - start)
        return round(_LABEL + min(1.0, max(0.0, fraction)) * (_WIDTH - _LABEL), 1)

    shapes = [
        f'<text x="{_LABEL}" y="12">{_e(_stamp(start))}</text>',
        f'<text x="{_WIDTH}" y="12" text-anchor="end">{_e(_stamp(end))}</text>',
    ]
    for row, key in enumerate(keyset.keys):
        y = _TOP + row * _ROW
        label = f"{key.state.value} {key.kid[:8]}"
        shapes.append(f'<text x="0" y="{y + 15}" class=kid>{_e(label)}</text>')
        for span in spans[key.kid]:
            if span.end is not None and span.end <= span.start:
                continue  # a key that signed from its creation was never published alone
            shapes.append(_bar(span, x(span.start), x(span.end or end), y, key.kid))
    bottom = height - 2
    shapes.append(
        f'<line class=now x1="{x(now)}" x2="{x(now)}" y1="{_TOP - 4}" y2="{bottom}">'
        f"<title>now {_e(rfc3339(now, 'seconds'))}</title></line>"
    )
    if upcoming is not None:
        shapes.append(
            f'<line class=next x1="{x(upcoming)}" x2="{x(upcoming)}" y1="{_TOP - 4}" '
            f'y2="{bottom}"><title>next transition {_e(rfc3339(upcoming, "seconds"))}</title>'
            "</line>"
        )
    return (
        f'<svg viewBox="0 0 {_WIDTH} {height}" role=img '
        f'aria-label="keys of {_e(keyset.name)} on a time axis">{"".join(shapes)}</svg>'
    )


def _bar(span: Span, left: float, right: float, y: int, kid: str) -> str:
    kind = _CLASS[span.mark]
    until = "" if span.end is None else f" until {rfc3339(span.end, 'seconds')}"
    title = f"{kid[:8]} {kind} from {rfc3339(span.start, 'seconds')}{until}"
    return (
        f'<rect class={kind} x="{left}" y="{y + 3}" width="{max(1.0, round(right - left, 1))}" '
        f'height="{_ROW - 6}"><title>{_e(title)}</title></rect>'
    )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M")


def _when(value: object, missing: str = "") -> str:
    """An RFC 3339 time of the report, to the second."""
    if not isinstance(value, str):
        return missing
    return rfc3339(datetime.fromisoformat(value), "seconds")


def _keys(report: dict[str, object]) -> str:
    items = []
    for key in _list(report["keys"]):
        waiting = "awaiting confirmation" if key.get("propagation") else "not yet known"
        times = [f"signs from {_when(key['activates_at'], waiting)}"]
        if key["retired_at"]:
            times.append(f"retired {_when(key['retired_at'])}")
        if key["expires_at"]:
            times.append(f"leaves the JWKS {_when(key['expires_at'])}")
        items.append(
            f"<li><b>{_e(key['state'])}</b> <code>{_e(key['kid'])}</code><br>"
            f"{_e(', '.join(times))}</li>"
        )
    return f"<ul class=keys>{''.join(items)}</ul>"


_EVENTS: Final = (
    ("created_at", "published"),
    ("activates_at", "started signing"),
    ("retired_at", "retired"),
    ("expires_at", "left the JWKS"),
    ("revoked_at", "revoked"),
)


def _transitions(report: dict[str, object], now: datetime) -> str:
    """The last transitions the document records (its keys' and history's times up to now)."""
    seen: list[tuple[str, str, str]] = []
    for key in _list(report["keys"]) + _list(report["history"]):
        for field, what in _EVENTS:
            at = key.get(field)
            if isinstance(at, str) and datetime.fromisoformat(at) <= now + timedelta(seconds=1):
                seen.append((at, what, str(key["kid"])))
    seen.sort(key=lambda item: datetime.fromisoformat(item[0]), reverse=True)
    items = "".join(
        f"<li>{_e(_when(at))}: <code>{_e(kid[:8])}</code> {_e(what)}</li>"
        for at, what, kid in seen[:LAST_TRANSITIONS]
    )
    return f"<h3>last transitions</h3><ul class=transitions>{items or '<li>none</li>'}</ul>"
