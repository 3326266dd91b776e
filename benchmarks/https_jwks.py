"""JWKS over HTTPS: keyrotd against nginx with the same certificate and the same JWKS bytes.

    apt-get install -y nginx wrk        # once; the script starts its own nginx on 127.0.0.1
    python benchmarks/https_jwks.py [--seconds 10] [--rounds 3] [--nginx-workers auto]

A CA and an ECDSA P-256 server certificate for 127.0.0.1 are made at start (as in the tests).
Each round runs ``wrk -t2 -c64 -d<seconds>s --latency`` against nginx, then keyrotd, twice:
over kept-alive connections (the cost of encrypting the answers), and with
``Connection: close`` (a TLS handshake per request, as a verifier that does not keep
connections open causes). The figures are the medians of the rounds. Loopback only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from daemon_tools import Nginx, Wrk, make_daemon, median_of, wrk
from http_jwks import compare

from tests.daemon.test_tls import TestCA

KEYSETS: list[dict[str, object]] = [
    {"name": "main", "algorithm": "RS256", "rotation_period": "1h", "publish_ahead": "1h"}
]
MODES = {"alive": None, "close": {"Connection": "close"}}
"""Kept-alive connections, and a TLS handshake per request."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nginx-workers", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        ca = TestCA.make(workdir / "pki")
        ca.issue(1)
        daemon = make_daemon(
            workdir / "keyrotd",
            keysets=KEYSETS,
            server={"refresh_interval": "30s", "jwks_max_age": "5m", **ca.server_settings()},
            log_level="warning",
            ca_file=ca.file,
        ).start()
        nginx = None
        try:
            served = daemon.get("/.well-known/jwks.json")
            nginx = Nginx(
                workdir / "nginx",
                {"jwks.json": served.body},
                args.nginx_workers,
                tls=(ca.cert_file, ca.key_file),
            )
            nginx.etag("jwks.json", served.body)  # the same bytes, or stop here
            urls = {
                "nginx": nginx.url("jwks.json"),
                "keyrotd": f"https://127.0.0.1:{daemon.port}/.well-known/jwks.json",
            }
            print(f"JWKS of {len(served.body)} bytes over HTTPS (ECDSA P-256 certificate);")
            print(f"wrk -t2 -c64 -d{args.seconds}s --latency, {args.rounds} rounds")
            for url in urls.values():
                wrk(url, 2)  # warm up
            runs: dict[tuple[str, str], list[Wrk]] = {
                (mode, server): [] for mode in MODES for server in urls
            }
            for _ in range(args.rounds):
                for mode, headers in MODES.items():
                    for server, url in urls.items():
                        runs[mode, server].append(wrk(url, args.seconds, headers))
            print(f"medians of {args.rounds} rounds:")
            for mode in MODES:
                ours, theirs = median_of(runs[mode, "keyrotd"]), median_of(runs[mode, "nginx"])
                compare(mode, ours, theirs)
        finally:
            if nginx is not None:
                nginx.stop()
            daemon.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
