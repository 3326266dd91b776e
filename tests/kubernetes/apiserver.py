"""A gRPC client that keeps keys as the Kubernetes API server's external-signer key cache does.

It asks ``Metadata`` once, ``FetchKeys`` at start and again when ``refresh_hint_seconds`` have
passed, and once more on a token whose kid it does not hold. The keys it holds are what the API
server publishes at ``/openid/v1/jwks``: a token signed with a key it did not hold at signing time
is one an external verifier of that JWKS rejects, so it counts as rejected even when the extra
fetch then finds the key.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.serialization import load_der_public_key

from keyrotd.kubernetes.externaljwt.v1 import api_pb2 as v1
from keyrotd.kubernetes.externaljwt.v1 import api_pb2_grpc as v1_grpc
from keyrotd.kubernetes.externaljwt.v1alpha1 import api_pb2 as v1alpha1
from keyrotd.kubernetes.externaljwt.v1alpha1 import api_pb2_grpc as v1alpha1_grpc

VERSIONS: dict[str, tuple[Any, Any]] = {"v1": (v1, v1_grpc), "v1alpha1": (v1alpha1, v1alpha1_grpc)}
"""The proto packages: v1 (Kubernetes 1.34 and later), v1alpha1 (1.32 and 1.33)."""


@dataclass
class Tally:
    signed: int = 0
    verified: int = 0
    rejected: list[str] = field(default_factory=list)
    fetches: int = 0
    kids: set[str] = field(default_factory=set)


class ApiServerKeyCache:
    def __init__(
        self,
        socket_path: str,
        clock: Callable[[], float] = time.monotonic,
        version: str = "v1",
    ) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.messages, stubs = VERSIONS[version]
        self.stub = stubs.ExternalJWTSignerStub(self.channel)
        self.clock = clock
        self.metadata = self.stub.Metadata(self.messages.MetadataRequest())
        self.keys: dict[str, Any] = {}
        self.next_fetch = 0.0
        self.tally = Tally()
        self.timestamps: list[datetime] = []
        """The ``data_timestamp`` of every FetchKeys answer, in order."""
        self._lock = threading.Lock()
        self.fetch()

    def fetch(self) -> None:
        answer = self.stub.FetchKeys(self.messages.FetchKeysRequest())
        assert answer.refresh_hint_seconds >= 1
        self.keys = {k.key_id: load_der_public_key(k.key) for k in answer.keys}
        self.timestamps.append(answer.data_timestamp.ToDatetime(tzinfo=UTC))
        self.next_fetch = self.clock() + answer.refresh_hint_seconds
        self.tally.fetches += 1

    def tick(self) -> None:
        if self.clock() >= self.next_fetch:
            self.fetch()

    def sign_and_verify(self, claims: dict[str, Any]) -> str:
        """One service-account token: Sign, then verify it as the API server and its JWKS's
        verifiers do, with the keys held when it was signed; the kid that signed it."""
        self.tick()
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        answer = self.stub.Sign(self.messages.SignJWTRequest(claims=payload))
        token = f"{answer.header}.{payload}.{answer.signature}"
        header = jwt.get_unverified_header(token)
        assert set(header) == {"alg", "kid", "typ"} and header["typ"] == "JWT"
        self.tally.signed += 1
        self.tally.kids.add(header["kid"])
        key = self.keys.get(header["kid"])
        if key is None:
            self.tally.rejected.append(header["kid"])
            self.fetch()  # once, on an unknown kid
            return str(header["kid"])
        jwt.decode(token, key, algorithms=[header["alg"]], audience="api")
        self.tally.verified += 1
        return str(header["kid"])

    def close(self) -> None:
        self.channel.close()
