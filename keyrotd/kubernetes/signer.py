"""The Kubernetes ExternalJWTSigner (gRPC, ``externaljwt`` v1 and v1alpha1) on a unix socket.

The API server asks for ``Metadata`` once, ``FetchKeys`` at start, on ``refresh_hint_seconds`` and
on an unknown kid, and ``Sign`` for every service-account token (docs/kubernetes.md). Everything
this module answers comes from a :class:`KeySource`: what the daemon already holds in memory, so
serving the socket never waits on storage; a ``Sign`` waits on one signature at most. grpcio runs
the socket in a thread pool of its own, so a stalled client never delays the HTTP listeners.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from joserfc.jwk import JWKRegistry

from keyrotd.custody.interface import CustodyKeyGoneError
from keyrotd.errors import KeyrotdError
from keyrotd.model import Jwk

ALGORITHMS: Final = ("RS256", "ES256", "ES384", "ES512")
"""What the API server verifies: a signer keyset must use one of them."""
MIN_TOKEN_LIFETIME: Final = 600
"""The API server's floor for ``max_token_expiration_seconds``."""
WORKERS: Final = 8
"""Threads answering the socket: a bound on concurrent calls, never shared with HTTP."""
MAX_CALLS: Final = 1024
"""Calls in progress at once, those waiting for a thread included (about a kilobyte each); more
are refused (``RESOURCE_EXHAUSTED``). The API server's bursts of token requests stay below it."""


@dataclass(frozen=True)
class ActiveKey:
    """The key that signs at this instant: its kid, alg and a signing function."""

    kid: str
    alg: str
    sign: Callable[[bytes], bytes]
    """JWS signing input in, the signature (JOSE's format) out."""


@dataclass(frozen=True)
class PublishedKeys:
    """Every key of the keyset's JWKS, when storage was last read, when the set changes next."""

    keys: Sequence[Jwk]
    read_at: datetime
    next_change: datetime | None


class KeySource(Protocol):
    """What the signer needs of the daemon: the signing key now, and the published set."""

    def active(self) -> ActiveKey: ...

    def published(self) -> PublishedKeys: ...

    def resync(self) -> None:
        """Read storage again: the active key's custody no longer has it (another writer
        retired it); the next ``active()`` is the key that signs now."""
        ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if "=" in text or not text:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_claims(claims: str) -> None:
    try:
        decoded = json.loads(_unb64(claims))
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ValueError("claims are not base64url-encoded JSON") from error
    if not isinstance(decoded, dict):
        raise ValueError("claims are not a JSON object")


def pkix(jwk: Jwk) -> bytes:
    """A public JWK as PKIX (SubjectPublicKeyInfo) DER, as ``FetchKeys`` sends keys."""
    from cryptography.hazmat.primitives import serialization

    key = JWKRegistry.import_key(dict(jwk))
    public = key.public_key
    der: bytes = public.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


class Signer:
    """The three calls, independent of the proto version (the servicers below adapt them)."""

    def __init__(
        self,
        source: KeySource,
        token_lifetime: int,
        max_age: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.source = source
        self.token_lifetime = token_lifetime
        self.max_age = max_age
        self.clock = clock
        self._timestamp_lock = threading.Lock()
        self._last_timestamp: datetime | None = None
        self._header: tuple[str, str, str] = ("", "", "")
        """(kid, alg, encoded header) of the last key that signed."""
        self._der: dict[str, bytes] = {}
        """PKIX DER of the keys last fetched, by kid (a kid's key never changes)."""

    def sign(self, claims: str) -> tuple[str, str]:
        """(header, signature), each base64url; ValueError for claims that are not b64url JSON."""
        _check_claims(claims)
        for attempt in (1, 2):
            active = self.source.active()
            try:
                return self._signed(active, claims)
            except CustodyKeyGoneError:
                if attempt == 2:
                    raise
                self.source.resync()  # another writer retired it: sign with the current key
        raise AssertionError("unreachable")

    def _signed(self, active: ActiveKey, claims: str) -> tuple[str, str]:
        header = self._header
        if header[0] != active.kid or header[1] != active.alg:
            # the same header for every token of a key: encoded once per key
            encoded = _b64(
                json.dumps(
                    {"alg": active.alg, "kid": active.kid, "typ": "JWT"}, separators=(",", ":")
                ).encode()
            )
            header = self._header = (active.kid, active.alg, encoded)
        signature = active.sign(f"{header[2]}.{claims}".encode("ascii"))
        return header[2], _b64(signature)

    def fetch_keys(self) -> tuple[list[tuple[str, bytes]], datetime, int]:
        """The keys as (kid, PKIX DER), the data timestamp and the refresh hint in seconds."""
        published = self.source.published()
        now = self.clock()
        with self._timestamp_lock:
            # when the set was last read from storage: never in the future, never going back
            stamp = min(published.read_at, now)
            if self._last_timestamp is not None:
                stamp = max(stamp, self._last_timestamp)
            self._last_timestamp = stamp
        hint = self.max_age
        if published.next_change is not None:
            hint = min(hint, (published.next_change - now).total_seconds())
        known = self._der
        der = {
            kid: known[kid] if kid in known else pkix(jwk)
            for kid, jwk in ((str(jwk["kid"]), jwk) for jwk in published.keys)
        }
        self._der = der
        return list(der.items()), stamp, max(1, int(hint))

    def metadata(self) -> int:
        return self.token_lifetime


_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class HandlerPool(Executor):
    """The threads that answer the socket: ``workers`` of them, never shared with HTTP, and daemon
    threads. A call stuck in a signature (an HSM or KMS that stopped answering) keeps its thread
    until the custody's own timeout, but never the process: ThreadPoolExecutor's threads are
    joined at interpreter exit, which would hold SIGTERM for as long."""

    def __init__(self, workers: int, name: str) -> None:
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while (work := self._work.get()) is not None:
            future, fn, args, kwargs = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # handed to whoever waits on the future
                future.set_exception(error)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the signer's handler pool is shut down")
            future: Future[Any] = Future()
            self._work.put((future, fn, args, kwargs))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``wait``, give running calls a second (never more)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if cancel_futures:
            while True:
                try:
                    work = self._work.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in self._threads:
            self._work.put(None)
        if wait:
            end = time.monotonic() + 1.0
            for thread in self._threads:
                thread.join(timeout=max(0.0, end - time.monotonic()))


def _servicer(signer: Signer, messages: Any, base: type) -> Any:
    """A servicer of one proto version (v1 or v1alpha1: the same messages in two packages)."""
    import grpc

    class Servicer(base):  # type: ignore[misc]
        def Sign(self, request: Any, context: Any) -> Any:
            try:
                header, signature = signer.sign(request.claims)
            except ValueError as error:  # the claims, never a key's trouble
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except KeyrotdError as error:
                code = grpc.StatusCode.UNAVAILABLE if error.temporary else grpc.StatusCode.INTERNAL
                context.abort(code, error.message)
            return messages.SignJWTResponse(header=header, signature=signature)

        def FetchKeys(self, request: Any, context: Any) -> Any:
            try:
                keys, stamp, hint = signer.fetch_keys()
            except KeyrotdError as error:
                context.abort(grpc.StatusCode.UNAVAILABLE, error.message)
            answer = messages.FetchKeysResponse(
                keys=[
                    messages.Key(key_id=kid, key=der, exclude_from_oidc_discovery=False)
                    for kid, der in keys
                ],
                refresh_hint_seconds=hint,
            )
            answer.data_timestamp.FromDatetime(stamp.astimezone(UTC))
            return answer

        def Metadata(self, request: Any, context: Any) -> Any:
            return messages.MetadataResponse(max_token_expiration_seconds=signer.metadata())

    return Servicer()


def serve(socket_path: Path, signer: Signer) -> Any:
    """Start the gRPC server on ``socket_path`` (created 0600, the daemon's user); its ``stop``."""
    # gRPC's core logs on stderr in its own format: errors only, beside keyrotd's JSON lines.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import grpc

    from keyrotd.kubernetes.externaljwt.v1 import api_pb2 as v1
    from keyrotd.kubernetes.externaljwt.v1 import api_pb2_grpc as v1_grpc
    from keyrotd.kubernetes.externaljwt.v1alpha1 import (
        api_pb2 as v1alpha1,
    )
    from keyrotd.kubernetes.externaljwt.v1alpha1 import (
        api_pb2_grpc as v1alpha1_grpc,
    )

    if not socket_path.parent.is_dir():
        raise KeyrotdError(
            f"kubernetes.signer_socket: directory {socket_path.parent} does not exist",
            "create it (or use a systemd RuntimeDirectory / a shared emptyDir)",
        )
    if socket_path.is_socket():
        socket_path.unlink()  # a previous run's socket: nobody listens on it any more
    server = grpc.server(
        HandlerPool(WORKERS, "keyrotd-k8s-signer"),
        maximum_concurrent_rpcs=MAX_CALLS,
        compression=grpc.Compression.NoCompression,
    )
    for messages, services in ((v1, v1_grpc), (v1alpha1, v1alpha1_grpc)):
        servicer = _servicer(signer, messages, services.ExternalJWTSignerServicer)
        services.add_ExternalJWTSignerServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_path}")
    previous = os.umask(0o177)  # the socket is born 0600: no moment where others may connect
    try:
        server.start()
    finally:
        os.umask(previous)
    os.chmod(socket_path, 0o600)
    return server
