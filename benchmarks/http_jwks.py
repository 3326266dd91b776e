"""JWKS over HTTP: keyrotd against nginx serving the same bytes, side by side, same run.

    apt-get install -y nginx wrk        # once; the script starts its own nginx on 127.0.0.1
    python benchmarks/http_jwks.py [--seconds 10] [--rounds 3] [--nginx-workers auto]

Each round runs ``wrk -t2 -c64 -d10s --latency`` against nginx, then keyrotd, for the 200 path
the 200 path again while keyrotd generates RSA-4096 keys back to back (admin
``rotate?now=true&force=true`` on a 4096-bit keyset every second: ``force``, or the successor's
settle time refuses it; each one also prepares a spare key), to show that key
generation does not stall responses, and the 304 path (If-None-Match with the server's own
ETag). The figures are the medians of the rounds.
Targets: keyrotd >= 0.5x nginx (2 workers) requests/s, p99 <= 5 ms.

    python benchmarks/http_jwks.py --baseline main [--seconds 10] [--rounds 5]

compares instead this checkout's keyrotd with the one of a git revision (its ``keyrotd/``
exported to a temp directory, run with ``PYTHONPATH``), both running at once, measured in turns
with nginx (the order alternating per round) on the 200 path: a change on the hot path must not
lose more than 5 % of the baseline's requests/s.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
from pathlib import Path

from daemon_tools import Daemon, Nginx, Wrk, exported_revision, make_daemon, median_of, wrk

KEYSETS: list[dict[str, object]] = [
    {"name": "main", "algorithm": "RS256", "rotation_period": "1h", "publish_ahead": "1h"},
    {
        "name": "gen",
        "algorithm": "RS256",
        "rsa_key_size": 4096,
        "rotation_period": "1h",
        "publish_ahead": "1h",
    },
]


def compare(label: str, ours: Wrk, nginx: Wrk) -> None:
    ratio = ours.requests_per_second / nginx.requests_per_second
    print(f"  {label:<5} nginx   {nginx.line()}")
    print(f"  {label:<5} keyrotd {ours.line()}")
    print(f"  {label:<5} ratio   {ratio:.2f}x nginx (target >= 0.5x), p99 target <= 5 ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nginx-workers", default="auto")
    parser.add_argument("--baseline", metavar="REV", help="compare with git revision REV instead")
    args = parser.parse_args()
    if args.baseline:
        return against_baseline(args.baseline, args.seconds, args.rounds, args.nginx_workers)
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        daemon = make_daemon(
            workdir / "keyrotd",
            keysets=KEYSETS,
            server={"refresh_interval": "30s", "jwks_max_age": "5m"},
            log_level="warning",
        ).start()
        nginx = None
        try:
            served = daemon.get("/.well-known/jwks.json")
            nginx = Nginx(workdir / "nginx", {"jwks.json": served.body}, args.nginx_workers)
            ours_url = f"http://127.0.0.1:{daemon.port}/.well-known/jwks.json"
            ours_304 = {"If-None-Match": served.headers["etag"]}
            nginx_304 = {"If-None-Match": nginx.etag("jwks.json", served.body)}
            print(f"JWKS of {len(served.body)} bytes; wrk -t2 -c64 -d{args.seconds}s --latency")
            wrk(ours_url, 2), wrk(nginx.url("jwks.json"), 2)  # warm up both
            runs: dict[str, list[Wrk]] = {
                key: [] for key in ("n200", "k200", "gen", "n304", "k304")
            }
            generated = 0
            for _ in range(args.rounds):
                runs["n200"].append(wrk(nginx.url("jwks.json"), args.seconds))
                runs["k200"].append(wrk(ours_url, args.seconds))
                loaded, made = during_key_generation(daemon, ours_url, args.seconds)
                runs["gen"].append(loaded)
                generated += made
                runs["n304"].append(wrk(nginx.url("jwks.json"), args.seconds, nginx_304))
                runs["k304"].append(wrk(ours_url, args.seconds, ours_304))
            print(f"medians of {args.rounds} rounds:")
            compare("200", median_of(runs["k200"]), median_of(runs["n200"]))
            compare("304", median_of(runs["k304"]), median_of(runs["n304"]))
            print(f"while generating RSA-4096 keys ({generated} keys in {args.rounds} runs):")
            print(f"  200   keyrotd {median_of(runs['gen']).line()}")
        finally:
            if nginx is not None:
                nginx.stop()
            daemon.stop()
    return 0


def against_baseline(revision: str, seconds: int, rounds: int, nginx_workers: str) -> int:
    """This checkout's JWKS 200 path against ``revision``'s and nginx's, in turns, in one run."""
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        server = {"refresh_interval": "30s", "jwks_max_age": "5m"}
        env = exported_revision(revision, workdir)
        daemons = {
            name: make_daemon(
                workdir / name, keysets=KEYSETS[:1], server=server, log_level="warning", env=extra
            ).start()
            for name, extra in ((revision, env), ("this", {}))
        }
        nginx = None
        try:
            served = daemons["this"].get("/.well-known/jwks.json")
            nginx = Nginx(workdir / "nginx", {"jwks.json": served.body}, nginx_workers)
            urls = {
                k: f"http://127.0.0.1:{d.port}/.well-known/jwks.json" for k, d in daemons.items()
            }
            urls["nginx"] = nginx.url("jwks.json")
            for url in urls.values():
                wrk(url, 2)  # warm up
            runs: dict[str, list[Wrk]] = {name: [] for name in urls}
            for round_number in range(rounds):
                order = list(urls) if round_number % 2 == 0 else list(reversed(urls))
                for name in order:
                    runs[name].append(wrk(urls[name], seconds))
            base, ours = median_of(runs[revision]), median_of(runs["this"])
            web = median_of(runs["nginx"])
            print(f"medians of {rounds} rounds, wrk -t2 -c64 -d{seconds}s, the 200 path:")
            print(f"  {revision:<8} {base.line()}")
            print(f"  {'this':<8} {ours.line()}")
            print(f"  {'nginx':<8} {web.line()}")
            ratio = ours.requests_per_second / base.requests_per_second
            print(f"  ratio    {ratio:.3f}x the baseline (target >= 0.95x)")
            for name, figures in ((revision, base), ("this", ours)):
                share = figures.requests_per_second / web.requests_per_second
                print(f"  {name:<8} {share:.2f}x nginx (target >= 0.5x)")
        finally:
            if nginx is not None:
                nginx.stop()
            for daemon in daemons.values():
                daemon.stop()
    return 0


def during_key_generation(daemon: Daemon, url: str, seconds: int) -> tuple[Wrk, int]:
    """wrk against ``url`` while RSA-4096 keys are generated; and how many were made."""
    stop = threading.Event()

    def rotate() -> None:
        while not stop.wait(1.0):
            daemon.admin("POST", "/keysets/gen/rotate?now=true&force=true")  # force: no settle wait

    def created() -> int:
        metrics = daemon.get("/metrics").body.decode()
        pattern = r'keyrotd_transitions_total\{event="key.created",keyset="gen"\} ([\d.]+)'
        match = re.search(pattern, metrics)
        return int(float(match[1])) if match else 0

    before = created()
    thread = threading.Thread(target=rotate)
    thread.start()
    try:
        loaded = wrk(url, seconds)
    finally:
        stop.set()
        thread.join()
    return loaded, created() - before


if __name__ == "__main__":
    raise SystemExit(main())
