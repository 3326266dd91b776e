"""The authenticated endpoints: scoped clients, the signing-key, sign, rotate and revoke actions.

    GET  /signing-key                      the first keyset's (``http`` maps it here)
    GET  /keysets/{name}/signing-key       {"active": private JWK, "next": ..., "next_activates_at"}
    GET  /keysets/{name}/status            that keyset's entry of ``keyrotd status --json``
    POST /keysets/{name}/sign              {"token", "kid", "expires_at"} (``keyrotd.signing``)
    POST /keysets/{name}/rotate[?now=true[&force=true]]   409: a refused --now (``rotating``)
    POST /keysets/{name}/keys/{kid}/revoke

They exist only when ``server.admin_token_file`` or ``server.admin_clients_file`` is set. The
:class:`Clients` holder keeps the registry in force (``keyrotd.admin_clients``: the admin token is
the client ``admin`` with every scope); SIGHUP builds a new one from the files and swaps it in, or
logs one ``clients.reload_failed`` line and keeps the old one. A request is checked in this
order: 405 wrong method, 401 no known token, 413 a body, 403 outside the client's scopes (an
unknown keyset too, unless the scope is ``*``), 400 a path or query that is not ASCII or a query
parameter the endpoint does not know (:func:`query_flags`), 404 unknown keyset. Every one is
audited (``audit``); a rotate's line says whether ``now`` was asked. Rotate and revoke write
storage: they run in a worker thread, never on the event loop. Sign reads the body (at most
64 KiB) and signs with the key of the served snapshot (in custody: off the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

from keyrotd.admin_clients import Action, Client, Registry, load_registry
from keyrotd.admin_clients.registry import EVERY_SCOPE
from keyrotd.custody.interface import PrivateKeyUnavailableError
from keyrotd.daemon.audit import UNKNOWN, Audit, Entry, remote_of, shown
from keyrotd.daemon.custody_calls import CustodyCalls
from keyrotd.daemon.responses import (
    GET,
    JSON,
    MAX_BODY,
    NO_STORE,
    POST,
    Response,
    Scope,
    compact_json,
    error,
    header,
    not_allowed,
    read_body,
    respond,
    too_large,
    unauthorized,
)
from keyrotd.daemon.state import Board
from keyrotd.daemon.status_page import Where, keyset_entry
from keyrotd.errors import ConfigError, KeyNotFoundError, KeyrotdError, RefusedError
from keyrotd.lifecycle.commands import Command, Revoke, Rotate
from keyrotd.rotating import HTTP, RotateTimes, successor_note
from keyrotd.signing import Signed, SigningKey, SignRefused, answer_of, parse_request
from keyrotd.signing import sign as sign_token
from keyrotd.times import rfc3339, utc_now
from keyrotd.writer import Outcome

if TYPE_CHECKING:
    from keyrotd.daemon.signer_source import Signers

log = logging.getLogger("keyrotd.daemon")

Run = Callable[[str, Command], Outcome]
"""Apply an admin command to a keyset (blocking: run it in a worker thread)."""
Answer = Response | Awaitable[Response]
_ALLOWED: Final[dict[Action, tuple[str, ...]]] = {
    "signing-key": GET,
    "sign": POST,
    "rotate": POST,
    "revoke": POST,
    "status": GET,
}
_PARAMETERS: Final[dict[Action, tuple[str, ...]]] = {"rotate": ("now", "force")}
"""The query parameters each action knows (all true/false); any other one is a 400."""
_BOOLEAN: Final = {"true": True, "1": True, "false": False, "0": False}
_MAX_PARAMETERS: Final = 8

_BY_PATH: Final[dict[str, Action]] = {
    "signing-key": "signing-key",
    "sign": "sign",
    "rotate": "rotate",
    "status": "status",
}
"""``/keysets/{name}/<segment>`` → its action."""


class Clients:
    """The registry in force. Requests read :attr:`registry`; a reload replaces it with one
    attribute write (no lock on the HTTP path)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @classmethod
    def load(cls, token_file: Path | None, clients_file: Path | None) -> Clients:
        """From the two settings; a bad file is a :class:`ConfigError` (the start is refused)."""
        return cls(load_registry(token_file, clients_file))

    def reload(self, token_file: Path | None, clients_file: Path | None) -> None:
        """Read the files again; a refused one is logged (one line) and the old registry kept."""
        try:
            registry = load_registry(token_file, clients_file)
        except ConfigError as exc:
            log.error(
                "admin clients not reloaded, keeping the %d in force",
                len(self.registry.clients),
                extra={"event": "clients.reload_failed", "error": str(exc)},
            )
            return
        if registry != self.registry:
            log.info(
                "admin clients reloaded: %s",
                ", ".join(client.name for client in registry.clients) or "none",
                extra={"event": "clients.reloaded"},
            )
        self.registry = registry


@dataclass(frozen=True)
class Admin:
    """The clients, what the admin endpoints run, and their audit trail."""

    clients: Clients
    run: Run
    audit: Audit
    where: Where = lambda name: (name, None)
    signers: Signers | None = None
    """Who signs for a keyset (``POST .../sign``): in memory, or in custody."""
    custody_calls: CustodyCalls | None = None
    """Where a custody signs (a token or KMS call): never on the event loop."""
    rotate_times: Mapping[str, RotateTimes] = field(default_factory=dict)
    """Per keyset, ``publish_ahead`` and how old a successor must be for ``?now=true`` without
    ``force=true`` (:func:`keyrotd.config.policy.rotate_times`)."""

    def times(self, name: str) -> RotateTimes:
        """The keyset's rotate times; for one no longer configured (served until a restart),
        the longest of any."""
        known = self.rotate_times.get(name)
        if known is not None:
            return known
        longest = max((t.settle for t in self.rotate_times.values()), default=timedelta(0))
        ahead = max((t.publish_ahead for t in self.rotate_times.values()), default=timedelta(0))
        return RotateTimes(ahead, longest)


@dataclass(frozen=True)
class Request:
    """An admin endpoint, as the path names it."""

    action: Action
    keyset: str
    kid: str | None = None

    @classmethod
    def of(cls, parts: list[str]) -> Request | None:
        """``/keysets/{parts...}`` split after ``keysets``; None: not an admin endpoint."""
        if len(parts) == 2 and parts[1] in _BY_PATH:
            return cls(_BY_PATH[parts[1]], parts[0])
        if len(parts) == 4 and parts[1] == "keys" and parts[3] == "revoke":
            return cls("revoke", parts[0], parts[2])
        return None


def sees_client_names(admin: Admin | None, scope: Scope) -> Client | None:
    """The client whose token the request carries if it may see admin client names in
    ``/metrics``: one with a ``status`` scope (on any keyset), or with every scope (the
    full-power admin token); else None."""
    if admin is None:
        return None
    client = admin.clients.registry.authenticate(header(scope["headers"], b"authorization"))
    if client is None:
        return None
    status = any(s.covers("status", s.keyset) for s in client.scopes)
    return client if status or set(EVERY_SCOPE) <= set(client.scopes) else None


def route(
    admin: Admin, board: Board, executor: Executor, parts: list[str], scope: Scope
) -> Answer | None:
    """Answer ``/keysets/{name}/...`` admin paths (split after ``keysets``); None: not one."""
    request = Request.of(parts)
    if request is None:
        return None
    client = admin.clients.registry.authenticate(header(scope["headers"], b"authorization"))
    flags = query_flags(scope["query_string"], _PARAMETERS.get(request.action, ()))
    entry = Entry(
        client=UNKNOWN if client is None else client.name,
        remote=remote_of(scope),
        method=shown(scope["method"]),
        keyset=shown(request.keyset),
        action=request.action,
        status=0,
        kid=None if request.kid is None else shown(request.kid),
        now=flags.get("now", False)
        if request.action == "rotate" and isinstance(flags, dict)
        else None,
    )
    try:
        answer = decide(admin, board, executor, request, client, scope, flags)
    except Exception:
        admin.audit.record(replace(entry, status=500))  # http answers a bare 500
        raise
    if isinstance(answer, Response):
        admin.audit.record(replace(entry, status=answer.status))
        return answer
    return _audited(admin.audit, entry, answer)


async def _audited(audit: Audit, entry: Entry, answer: Awaitable[Response]) -> Response:
    try:
        response = await answer
    except Exception:
        audit.record(replace(entry, status=500))  # http answers a bare 500
        raise
    audit.record(replace(entry, status=response.status))
    return response


def decide(
    admin: Admin,
    board: Board,
    executor: Executor,
    request: Request,
    client: Client | None,
    scope: Scope,
    flags: dict[str, bool] | str,
) -> Answer:
    """The answer to an admin request (see the module docstring for the order of checks);
    ``flags``: the query's parameters, or why they are refused (:func:`query_flags`)."""
    allowed = _ALLOWED[request.action]
    if scope["method"] not in allowed:
        return not_allowed(allowed)
    if client is None:
        return unauthorized()
    if too_large(scope["headers"]):
        return error(413, f"the request body is above {MAX_BODY} bytes")
    name = request.keyset
    if not client.allows(request.action, name):
        scope_needed = f"{request.action}:{name}"
        return error(403, f"client {client.name} does not have the scope {scope_needed}")
    if not (name.isascii() and (request.kid or "").isascii()):
        return error(400, "the path must be ASCII: no keyset or key id has other characters")
    if isinstance(flags, str):
        return error(400, flags)
    if name not in board.snapshot.order:
        return error(404, f"unknown keyset {name}")
    if request.action == "signing-key":
        return signing_key(board, name)
    if request.action == "status":
        entry = keyset_entry(board, admin.where, name, time.time())
        if entry is None:
            return error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
        return respond(200, entry.report)
    if request.action == "sign":
        return sign(admin, board, name, scope)
    if request.kid is not None:
        return command(admin, executor, name, Revoke(request.kid))
    now, force = flags.get("now", False), flags.get("force", False)
    if force and not now:
        return error(400, "force=true goes with now=true")
    settle = None if force else admin.times(name).settle
    return command(admin, executor, name, Rotate(now=now, settle=settle))


def query_flags(query_string: bytes, known: tuple[str, ...]) -> dict[str, bool] | str:
    """The true/false parameters of an admin request's query, each one of ``known``; a str:
    why the query is refused (answered 400 once the client's token and scope are accepted)."""
    text = query_string.decode("latin-1")  # bytes as sent: this never fails
    if not text.isascii():
        return "the query string must be ASCII (percent-encode other characters)"
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_PARAMETERS)
    except ValueError:
        return f"a query takes at most {_MAX_PARAMETERS} parameters"
    flags: dict[str, bool] = {}
    for name, value in pairs:
        if name not in known:
            accepted = ", ".join(known) or "none"
            return f"unknown query parameter {shown(name)!r} (this endpoint accepts: {accepted})"
        if value.lower() not in _BOOLEAN:
            return f"{name} must be true or false"
        flags[name] = _BOOLEAN[value.lower()]
    return flags


def signing_key(board: Board, name: str) -> Response:
    published = board.current(name, time.time())
    if published is None:
        return error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
    try:
        body = published.signing_key()
    except PrivateKeyUnavailableError as exc:
        return respond(409, {"error": str(exc), "keyset": name})
    except LookupError as exc:
        return error(503, str(exc))
    return Response(200, [JSON, NO_STORE], body)


def sign(admin: Admin, board: Board, name: str, scope: Scope) -> Answer:
    """``POST .../sign``: the claims signed by the key active now (docs/http.md). A key in
    storage custody signs here, on the loop (microseconds); one in a token or KMS is awaited."""
    body = read_body(scope)
    if body is None:
        return error(413, f"the request body is above {MAX_BODY} bytes")
    now = time.time()
    published = board.current(name, now)
    if published is None:
        return error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
    started = time.perf_counter()
    settings = published.settings
    try:
        request = parse_request(body)
    except SignRefused as exc:
        return _sign_refused(exc)

    def signed_by(signer: SigningKey) -> Signed:
        return sign_token(
            request,
            signer,
            now=datetime.fromtimestamp(now, UTC),
            token_lifetime=settings.token_lifetime,
            issuer=settings.issuer,
        )

    if settings.custody != "storage":
        return _sign_in_custody(admin, name, settings.custody, signed_by, started)
    try:
        signed = signed_by(published.signer)
    except (SignRefused, LookupError, KeyrotdError) as exc:
        return _sign_refused(exc)
    return _signed(admin, name, signed, started)


async def _sign_in_custody(
    admin: Admin,
    name: str,
    custody: str,
    signed_by: Callable[[SigningKey], Signed],
    started: float,
) -> Response:
    """The signature of a key held in a token or KMS: on its worker, the loop free meanwhile."""
    if admin.signers is None or admin.custody_calls is None:
        return error(503, f"keyset {name}: no custody signer in this daemon")
    try:
        signed = await admin.custody_calls.run(custody, admin.signers.with_active, name, signed_by)
    except (SignRefused, LookupError, KeyrotdError) as exc:
        return _sign_refused(exc)
    return _signed(admin, name, signed, started)


def _signed(admin: Admin, name: str, signed: Signed, started: float) -> Response:
    """The answer of a signature made, counted with its latency."""
    admin.audit.metrics.token_signed(name, time.perf_counter() - started)
    return Response(200, [JSON, NO_STORE], compact_json(answer_of(signed)))


def _sign_refused(exc: SignRefused | LookupError | KeyrotdError) -> Response:
    if isinstance(exc, SignRefused):
        return error(400, str(exc))
    if isinstance(exc, LookupError):
        return error(503, str(exc))
    return error(503, exc.message)  # the custody out of reach: the JWKS is still served


async def command(admin: Admin, executor: Executor, name: str, action: Command) -> Response:
    loop = asyncio.get_running_loop()
    try:
        outcome = await loop.run_in_executor(executor, admin.run, name, action)
    except KeyNotFoundError as exc:
        return error(404, exc.message)
    except RefusedError as exc:  # a --now too early: nothing changed
        return respond(409, {"error": f"{exc.message}: {exc.http_hint}", "keyset": name})
    except KeyrotdError as exc:
        return error(503, str(exc))
    body = outcome_json(name, outcome)
    if isinstance(action, Rotate):  # what the CLI says, in the words of the HTTP API
        times = admin.times(name)
        noted = successor_note(outcome.keyset, outcome.transitions, times, utc_now(), HTTP)
        body["message"], body["nothing_to_bring_forward"] = noted or (None, False)
    return respond(200, body)


def outcome_json(name: str, outcome: Outcome) -> dict[str, object]:
    """The body of a rotate or revoke response: what changed, and the next activation."""
    active = outcome.keyset.active
    upcoming = outcome.keyset.successor
    return {
        "keyset": name,
        "transitions": [
            {"event": t.event, "kid": t.kid, "at": rfc3339(t.at), "exception": t.exception}
            for t in outcome.transitions
        ],
        "active": active.kid if active else None,
        "next": {"kid": upcoming.kid, "activates_at": rfc3339(upcoming.activates_at)}
        if upcoming is not None and upcoming.activates_at is not None
        else None,
    }
