"""Why the daemon serves HTTP itself: one fixed JWKS answer under each server, against nginx.

    apt-get install -y nginx wrk
    python benchmarks/http_server_modes.py [--rounds 6] [--seconds 3]
    pip install 'granian==2.8.*'    # optional: adds granian's embedded server to the comparison

The same 900-byte JSON body with the same headers, served by:
- keyrotd's own server (``keyrotd.daemon.http_server``: httptools on uvloop's transports) with a
  handler that returns the answer, no app: the server's own cost;
- granian's embedded server on a uvloop loop, over ASGI (the interface that gives the path as
  sent, which the ``%2F`` refusal needs) and RSGI, when granian is installed;
- nginx (worker_processes auto) serving the bytes from a file: the baseline;
- and ``keyrotd run`` itself, serving its own JWKS (RS256, two keys: about the same size).
Rounds are interleaved and the medians printed, as this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BODY = (
    b'{"keys":[{"kty":"RSA","n":"' + b"x" * 342 + b'","e":"AQAB","kid":"' + b"k" * 43 + b'",'
    b'"alg":"RS256","use":"sig"},{"kty":"RSA","n":"'
    + b"y" * 342
    + b'","e":"AQAB","kid":"'
    + b"l" * 43
    + b'","alg":"RS256","use":"sig"}]}'
)
HEADERS = [
    (b"content-type", b"application/json"),
    (b"etag", b'"0123456789abcdef0123456789abcdef"'),
]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app as small as a JWKS answer."""
    if scope["type"] != "http":
        return
    headers = [*HEADERS, (b"cache-control", b"public, max-age=%d" % 300)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def rsgi_app(scope: Any, protocol: Any) -> None:
    headers = [(k.decode(), v.decode()) for k, v in HEADERS] + [
        ("cache-control", "public, max-age=300")
    ]
    protocol.response_bytes(200, headers, BODY)


def serve(kind: str, port: int) -> None:
    """Serve the fixed answer on ``port`` with ``kind`` (this script runs itself for each)."""
    import socket

    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if kind == "keyrotd":
            from keyrotd.daemon.http_server import HttpServer
            from keyrotd.daemon.responses import Response

            answer = Response(200, [*HEADERS, (b"cache-control", b"public, max-age=300")], BODY)
            server = HttpServer(lambda scope: answer, None)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(1024)
            sock.setblocking(False)
            await server.start(sock)
            await stop.wait()
            server.stop()
            return
        from granian.constants import Interfaces
        from granian.log import LogLevels
        from granian.server.embed import Server

        embedded = Server(
            asgi_app if kind == "granian-asgi" else rsgi_app,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGINL if kind == "granian-asgi" else Interfaces.RSGI,
            log_level=LogLevels.error,
            websockets=False,
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, embedded.stop)
        await embedded.serve()

    asyncio.Runner(loop_factory=uvloop.new_event_loop).run(main())


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return 0
    from daemon_tools import Nginx, free_port, make_daemon, wait_for, wrk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    kinds = ["keyrotd"]
    if importlib.util.find_spec("granian") is not None:
        kinds += ["granian-asgi", "granian-rsgi"]
    else:
        print("granian is not installed: comparing keyrotd's server and nginx only")
    servers: dict[str, tuple[int, list[str]]] = {}
    for kind in kinds:
        port = free_port()
        servers[f"{kind} (fixed answer)"] = (
            port,
            [sys.executable, __file__, "--serve", kind, str(port)],
        )
    with tempfile.TemporaryDirectory() as directory:
        nginx = Nginx(Path(directory), {"jwks.json": BODY})
        keyset = {"name": "main", "algorithm": "RS256", "publish_ahead": "24h"}
        daemon = make_daemon(Path(directory) / "keyrotd", keysets=[keyset], log_level="warning")
        daemon.start()
        processes = [subprocess.Popen(command, cwd=here) for _, command in servers.values()]
        try:
            for port, _ in servers.values():
                wait_for(lambda p=port: _answers(p), 20, f"port {port}")  # type: ignore[misc]
            urls = {"nginx": nginx.url("jwks.json")}
            urls |= {
                name: f"http://127.0.0.1:{port}/jwks.json" for name, (port, _) in servers.items()
            }
            urls["keyrotd run"] = f"http://127.0.0.1:{daemon.port}/.well-known/jwks.json"
            results: dict[str, list[float]] = {name: [] for name in urls}
            p99s: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(args.rounds):
                for name, url in urls.items():
                    run = wrk(url, args.seconds)
                    results[name].append(run.requests_per_second)
                    p99s[name].append(run.p99_ms)
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
            nginx.stop()
            daemon.stop()
    base = statistics.median(results["nginx"])
    print(f"medians of {args.rounds} interleaved rounds, wrk -t2 -c64 -d{args.seconds}s:")
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(
            f"  {name:<28} {rate:9.0f} req/s  {rate / base:4.2f}x nginx  "
            f"p99 {statistics.median(p99s[name]):6.2f} ms"
        )
    return 0


def _answers(port: int) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/")
        return connection.getresponse().status == 200
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
