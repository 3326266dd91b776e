"""The ExternalJWTSigner over a real unix socket, called through the generated gRPC stubs as the
API server calls it (v1 and v1alpha1): Sign verified by PyJWT with the key FetchKeys gave."""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from keyrotd.keys import NewKey, generate_key
from keyrotd.kubernetes.externaljwt.v1 import api_pb2 as v1
from keyrotd.kubernetes.externaljwt.v1 import api_pb2_grpc as v1_grpc
from keyrotd.kubernetes.externaljwt.v1alpha1 import (
    api_pb2 as v1alpha1,
)
from keyrotd.kubernetes.externaljwt.v1alpha1 import (
    api_pb2_grpc as v1alpha1_grpc,
)
from keyrotd.kubernetes.signer import ActiveKey, PublishedKeys, Signer, serve
from tests.support.clock import T0_DECEMBER as T0


class Keys:
    """A key source held in memory, as the daemon's board is: an active key and a pending one."""

    def __init__(self, alg: str) -> None:
        self.active_key = generate_key(alg)
        self.pending = generate_key(alg)
        self.read_at = T0
        self.next_change: datetime | None = T0 + timedelta(seconds=42)

    def active(self) -> ActiveKey:
        key = self.active_key
        jwk = JWKRegistry.import_key(dict(key.private_jwk))
        algorithm = JWSRegistry.algorithms[key.alg]
        return ActiveKey(key.kid, key.alg, lambda data: algorithm.sign(data, jwk))

    def resync(self) -> None:
        pass

    def published(self) -> PublishedKeys:
        keys = [self._public(self.active_key), self._public(self.pending)]
        return PublishedKeys(keys, self.read_at, self.next_change)

    @staticmethod
    def _public(key: NewKey) -> dict[str, str]:
        return {**key.public_jwk, "kid": key.kid, "alg": key.alg, "use": "sig"}


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "signer.sock"


def _start(socket_path: Path, keys: Keys, now: datetime = T0) -> Any:
    signer = Signer(keys, token_lifetime=3600, max_age=300, clock=lambda: now)
    return serve(socket_path, signer)


@pytest.fixture
def channel(socket_path: Path) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        yield channel


def _claims(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "ES512"])
@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
def test_sign_answers_a_token_the_fetched_keys_verify(
    socket_path: Path, channel: grpc.Channel, alg: str, version: str
) -> None:
    keys = Keys(alg)
    server = _start(socket_path, keys)
    messages, stubs = (v1, v1_grpc) if version == "v1" else (v1alpha1, v1alpha1_grpc)
    stub = stubs.ExternalJWTSignerStub(channel)
    try:
        assert stub.Metadata(messages.MetadataRequest()).max_token_expiration_seconds == 3600
        fetched = stub.FetchKeys(messages.FetchKeysRequest())
        assert [k.key_id for k in fetched.keys] == [keys.active_key.kid, keys.pending.kid]
        assert not any(k.exclude_from_oidc_discovery for k in fetched.keys)
        assert fetched.refresh_hint_seconds == 42
        assert fetched.data_timestamp.ToDatetime(tzinfo=UTC) == T0
        claims = _claims({"sub": "system:serviceaccount:default:app", "aud": ["api"]})
        answer = stub.Sign(messages.SignJWTRequest(claims=claims))
        header = json.loads(base64.urlsafe_b64decode(answer.header + "==="))
        assert header == {"alg": alg, "kid": keys.active_key.kid, "typ": "JWT"}
        assert "=" not in answer.header + answer.signature
        token = f"{answer.header}.{claims}.{answer.signature}"
        by_kid = {k.key_id: load_der_public_key(k.key) for k in fetched.keys}
        decoded = jwt.decode(token, by_kid[header["kid"]], algorithms=[alg], audience="api")
        assert decoded["sub"] == "system:serviceaccount:default:app"
    finally:
        server.stop(0)


def test_claims_that_are_not_base64url_json_are_an_invalid_argument(
    socket_path: Path, channel: grpc.Channel
) -> None:
    server = _start(socket_path, Keys("ES256"))
    stub = v1_grpc.ExternalJWTSignerStub(channel)
    try:
        for claims in [
            "not base64!",
            _claims([1, 2]),
            "e30=",
            base64.urlsafe_b64encode(b"{").decode(),
        ]:
            with pytest.raises(grpc.RpcError) as raised:
                stub.Sign(v1.SignJWTRequest(claims=claims))
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)


def test_the_socket_is_0600_and_its_directory_must_exist(socket_path: Path, tmp_path: Path) -> None:
    server = _start(socket_path, Keys("ES256"))
    try:
        mode = socket_path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    finally:
        server.stop(0)
    with pytest.raises(Exception, match="does not exist"):
        _start(tmp_path / "missing" / "signer.sock", Keys("ES256"))


def test_the_refresh_hint_is_at_most_the_max_age_at_least_one_and_the_timestamp_never_goes_back(
    socket_path: Path,
) -> None:
    keys = Keys("ES256")
    keys.next_change = None
    signer = Signer(keys, token_lifetime=3600, max_age=300, clock=lambda: T0)
    assert signer.fetch_keys()[2] == 300
    keys.next_change = T0 - timedelta(seconds=5)  # overdue: ask again in a second
    assert signer.fetch_keys()[2] == 1
    keys.read_at = T0 + timedelta(hours=1)  # a read stamped ahead of this clock: capped at now
    assert signer.fetch_keys()[1] == T0
    keys.read_at = T0 - timedelta(hours=1)  # an older read: the timestamp does not go back
    assert signer.fetch_keys()[1] == T0


class SlowKeys(Keys):
    """Signatures that take 20 ms (a busy HSM): calls pile up on the socket."""

    def active(self) -> ActiveKey:
        key = super().active()

        def sign(data: bytes) -> bytes:
            time.sleep(0.02)
            return key.sign(data)

        return ActiveKey(key.kid, key.alg, sign)


def test_a_burst_beyond_the_bound_waits_its_turn_and_is_never_refused(
    socket_path: Path, channel: grpc.Channel
) -> None:
    # The API server sends every token request over one connection: a burst of 200 (three
    # times the bound this signer had) waits for the 8 threads, none is refused.
    server = _start(socket_path, SlowKeys("ES256"))
    stub = v1_grpc.ExternalJWTSignerStub(channel)
    claims = _claims({"sub": "system:serviceaccount:default:app"})
    try:
        stub.Metadata(v1.MetadataRequest())  # connected, as the API server is before it signs
        calls = [stub.Sign.future(v1.SignJWTRequest(claims=claims), timeout=30) for _ in range(200)]
        failed = [call.exception() for call in calls if call.exception() is not None]
        assert failed == []
    finally:
        server.stop(0)
