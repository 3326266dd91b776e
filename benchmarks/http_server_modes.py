"""Why keyrotd embeds granian: one minimal raw ASGI app under each way of running it, vs nginx.

    apt-get install -y nginx wrk
    python benchmarks/http_server_modes.py [--rounds 6] [--seconds 3]

The same 900-byte JSON body with the same headers, served by:
- granian's embedded server on the process's own asyncio loop (what ``keyrotd run`` does, so the
  scheduler and the HTTP side share one board in memory);
- granian in worker processes (``granian --workers 1`` and ``--workers 2``): faster on two cores,
  but the JWKS state would then have to cross processes;
- nginx (worker_processes auto) serving the bytes from a file: the baseline;
- and ``keyrotd run`` itself, serving its own JWKS (RS256, two keys: about the same size).
Rounds are interleaved and the medians printed, as this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app as small as keyrotd's JWKS path."""
    if scope["type"] != "http":
        return
    headers = [*HEADERS, (b"cache-control", b"public, max-age=%d" % 300)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def serve_embedded(port: int) -> None:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    async def main() -> None:
        server = Server(
            app,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGINL,
            log_level=LogLevels.error,
            websockets=False,
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.stop)
        await server.serve()

    asyncio.run(main())


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-embedded":
        serve_embedded(int(sys.argv[2]))
        return 0
    from daemon_tools import Nginx, free_port, make_daemon, wait_for, wrk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    granian = [sys.executable, "-m", "granian", "--host", "127.0.0.1", "--log-level", "error"]
    granian += ["--interface", "asginl", "--no-ws", "--working-dir", str(here)]
    servers: dict[str, tuple[int, list[str]]] = {}
    port = free_port()
    servers["granian embedded"] = (port, [sys.executable, __file__, "--serve-embedded", str(port)])
    for workers in (1, 2):
        port = free_port()
        command = [
            *granian,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "http_server_modes:app",
        ]
        servers[f"granian {workers} worker(s)"] = (port, command)
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
            f"  {name:<20} {rate:9.0f} req/s  {rate / base:4.2f}x nginx  "
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
