"""Local fake AWS endpoints for the faults moto cannot produce, reached over real HTTP.

- :class:`ScriptedEndpoint`: a tiny HTTP server answering every request with one canned error
  (or not answering at all), counting the attempts (throttling, 5xx, access denied, KMS
  failures, timeouts).
- :class:`LossyProxy`: forwards to moto but loses the answer of chosen calls.
- :func:`closed_port_url`: an endpoint nothing listens on.

moto's own server is :mod:`tests.support.moto`.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.http import local_server


def closed_port_url() -> str:
    """The URL of a local port that was free a moment ago (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class ScriptedEndpoint:
    """Answers every request with ``status`` and an AWS JSON error ``code`` (``silent``: never).

    ``answers`` optionally lists (status, code) for the first requests; ``code=""`` with 200
    is a successful empty GetSecretValue-shaped answer.
    """

    status: int = 400
    code: str = "ThrottlingException"
    message: str = "scripted failure"
    silent: bool = False
    answers: list[tuple[int, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @contextmanager
    def serve(self) -> Iterator[str]:
        script = self
        release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                script.requests.append(self.headers.get("X-Amz-Target", ""))
                if script.silent:
                    release.wait(10)
                    return
                status, code = script.answers.pop(0) if script.answers else (script.status, "")
                code = code or script.code
                body = script.body(status, code)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test asserts on ``requests``."""

        try:
            with local_server(Handler) as url:
                yield url
        finally:
            release.set()

    def body(self, status: int, code: str) -> bytes:
        if status == 200:
            return json.dumps(
                {
                    "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",
                    "Name": "x",
                    "VersionId": "0" * 32,
                    "SecretString": "scripted",
                    "VersionStages": ["AWSCURRENT"],
                }
            ).encode()
        return json.dumps({"__type": code, "message": self.message}).encode()


def forward(
    upstream: str, request: http.server.BaseHTTPRequestHandler, body: bytes
) -> tuple[int, str, bytes]:
    """POST the request to ``upstream``: its status, content type and body."""
    host, port = upstream.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", request.path, body, dict(request.headers.items()))
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type", "application/json"), answer.read()
    finally:
        connection.close()


def reply(
    handler: http.server.BaseHTTPRequestHandler, status: int, content_type: str, payload: bytes
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@dataclass
class LossyProxy:
    """Forwards requests to ``upstream``, but loses the answer of the first call of each
    operation in ``lose``: the call took effect, the client sees a 500 and retries it."""

    upstream: str
    lose: set[str] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)

    @contextmanager
    def serve(self) -> Iterator[str]:
        proxy = self
        upstream = self.upstream

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                status, content_type, payload = forward(upstream, self, body)
                if operation in proxy.lose:
                    proxy.lose.discard(operation)
                    proxy.lost.append(operation)
                    status, content_type = 500, "application/x-amz-json-1.1"
                    payload = json.dumps({"__type": "InternalServiceError"}).encode()
                reply(self, status, content_type, payload)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        with local_server(Handler) as url:
            yield url


@dataclass
class StageConditionProxy:
    """Forwards requests to ``upstream``, but answers every ``BatchGetSecretValue`` with each
    named secret in ``Errors`` as ``AccessDeniedException``: what IAM would answer if a
    ``secretsmanager:VersionStage`` condition on ``GetSecretValue`` held against batch reads
    (a batch names no stage), while ``GetSecretValue(VersionStage="AWSCURRENT")`` passes."""

    upstream: str
    denied: list[str] = field(default_factory=list)

    @contextmanager
    def serve(self) -> Iterator[str]:
        proxy = self
        upstream = self.upstream

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                if operation == "BatchGetSecretValue":
                    names = json.loads(body).get("SecretIdList", [])
                    proxy.denied.extend(names)
                    status, content_type = 200, "application/x-amz-json-1.1"
                    payload = json.dumps(
                        {
                            "SecretValues": [],
                            "Errors": [
                                {
                                    "SecretId": name,
                                    "ErrorCode": "AccessDeniedException",
                                    "Message": "not authorized: secretsmanager:GetSecretValue",
                                }
                                for name in names
                            ],
                        }
                    ).encode()
                else:
                    status, content_type, payload = forward(upstream, self, body)
                reply(self, status, content_type, payload)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        with local_server(Handler) as url:
            yield url
