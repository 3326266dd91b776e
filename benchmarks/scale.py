"""keyrotd with many keysets: ready time, RSS, idle CPU, JWKS speed, SIGTERM, AWS API calls.

    python benchmarks/scale.py [--keysets 1000 10000] [--storage file aws] [--seconds 30]
                               [--replicas 3] [--rotation-drill] [--smoke]

For each storage and each N: N ES256 keysets with the contract's default policy and the default
refresh_interval (30 s). Baseline, measured in the same run and the same way: one keyset.

- ready: process start -> first /readyz 200, on an empty store, then again on the filled store;
- RSS (VmRSS) once ready, and CPU (% of one core, utime+stime) over --seconds with no requests;
- JWKS of one keyset (the last): wrk -t2 -c64 for --wrk-seconds, as a ratio to the baseline's;
- SIGTERM: seconds to exit, exit code, lines at warning level or above (JSON log) or Python
  warnings/tracebacks on stderr while stopping;
- aws (moto on 127.0.0.1, real boto3 in the daemons): --replicas daemons share the filled store;
  Secrets Manager requests are counted server-side per X-Amz-Target operation (and from the
  daemons' keyrotd_storage_requests_total metric when they expose it), over the --seconds window
  after every replica is ready, scaled to calls per keyset per day per replica.
- --rotation-drill (always aws): --drill-keysets keysets with a tiny policy (rotation every
  --drill-rotation s) on --replicas daemons for --drill-seconds: PutSecretValue + CreateSecret
  against the lifecycle events (key.*) the replicas logged and the successful AWSCURRENT moves.

Needs wrk (apt-get install -y wrk). Exits 0 after printing the tables (markdown).
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from daemon_tools import Wrk, wrk
from scale_tools import (
    CountingMotoServer,
    Run,
    Stopped,
    by_operation,
    daemon_environment,
    keyset_names,
    kill_all,
    write_config,
)

DEFAULT_REFRESH = 30.0
DAY = 86400.0
METRIC = "keyrotd_storage_requests_total"
DRILL_SERVER: dict[str, object] = {"refresh_interval": "1s", "jwks_max_age": "1s"}
DRILL_POLICY: dict[str, object] = {
    "publish_ahead": "3s",  # the smallest above refresh_interval + max(jwks_max_age, cache)
    "token_lifetime": "1s",
    "clock_skew": "0s",
    "verifier_cache": "1s",
}


@dataclass
class Window:
    """What the replicas did over a steady window with no requests."""

    seconds: float
    rss_ready_mb: float
    """At the start of the window, just after ready (mean over the replicas)."""
    rss_mb: float
    """At the end of the window."""
    cpu_percent: float
    calls: Counter[str] = field(default_factory=Counter)
    metric_calls: Counter[str] | None = None


@dataclass
class Scenario:
    storage: str
    keysets: int
    replicas: int
    ready_empty: float = 0.0
    ready_filled: list[float] = field(default_factory=list)
    empty: Window | None = None
    filled: Window | None = None
    jwks: Wrk | None = None
    stops: list[tuple[str, Stopped]] = field(default_factory=list)
    startup_calls_empty: Counter[str] = field(default_factory=Counter)
    startup_calls_filled: Counter[str] = field(default_factory=Counter)


@dataclass
class Drill:
    keysets: int
    rotation: int
    replicas: int
    seconds: float
    events: Counter[str]
    calls: Counter[str]
    successful: Counter[str]
    stops: list[Stopped]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.moto: CountingMotoServer | None = None

    def counts(self) -> Counter[str]:
        return by_operation(self.moto.counts()) if self.moto else Counter()

    def storage_settings(self, storage: str, prefix: str) -> dict[str, object]:
        if storage == "file":
            return {"type": "file", "path": self.workdir / prefix / "data"}
        if self.moto is None:
            self.moto = CountingMotoServer()
            self.moto.start()
        return {
            "type": "aws",
            "secret_prefix": f"{prefix}/",
            "region": "us-east-1",
            "endpoint_url": self.moto.url,
        }

    def start(
        self,
        name: str,
        count: int,
        storage: dict[str, object],
        server: dict[str, object] | None = None,
        policy: dict[str, object] | None = None,
    ) -> Run:
        directory = self.workdir / name
        port = write_config(directory / "keyrotd.toml", count, storage, server, policy)
        env = daemon_environment(storage["type"] == "aws")
        return Run(directory / "keyrotd.toml", port, directory / "daemon.log", env)

    def window(self, runs: Sequence[Run]) -> Window:
        """CPU, RSS and storage calls of ``runs`` over ``--seconds`` with no requests."""
        rss_ready = sum(run.rss_mb() for run in runs) / len(runs)
        before_cpu = [run.cpu_seconds() for run in runs]
        before_calls = self.counts()
        before_metric = [metric_calls(run) for run in runs]
        started = time.monotonic()
        time.sleep(self.args.seconds)
        after_cpu = [run.cpu_seconds() for run in runs]
        elapsed = time.monotonic() - started
        calls = self.counts() - before_calls
        after_metric = [metric_calls(run) for run in runs]
        metric: Counter[str] | None = None
        if all(m is not None for m in before_metric + after_metric):
            metric = Counter()
            for before, after in zip(before_metric, after_metric, strict=True):
                assert before is not None
                assert after is not None
                metric.update(after - before)
        cpu = sum(a - b for a, b in zip(after_cpu, before_cpu, strict=True)) / len(runs)
        rss = sum(run.rss_mb() for run in runs) / len(runs)
        return Window(elapsed, rss_ready, rss, 100 * cpu / elapsed, calls, metric)

    def scenario(self, storage: str, count: int) -> Scenario:
        replicas = self.args.replicas if storage == "aws" else 1
        result = Scenario(storage, count, replicas)
        prefix = f"scale-{storage}-{count}-{uuid.uuid4().hex[:8]}"
        settings = self.storage_settings(storage, prefix)
        say(f"{storage} {count} keysets: start on an empty store")
        before = self.counts()
        run = self.start(f"{prefix}-empty", count, settings)
        result.ready_empty = run.wait_ready()
        result.startup_calls_empty = self.counts() - before
        say(f"  ready in {result.ready_empty:.1f} s; idle for {self.args.seconds:.0f} s")
        result.empty = self.window([run])
        result.stops.append(("empty", run.stop()))

        say(f"  start {replicas} on the filled store")
        before = self.counts()
        runs = [self.start(f"{prefix}-filled-{i}", count, settings) for i in range(replicas)]
        result.ready_filled = [run.wait_ready() for run in runs]
        result.startup_calls_filled = self.counts() - before
        say(f"  ready in {max(result.ready_filled):.1f} s; idle for {self.args.seconds:.0f} s")
        result.filled = self.window(runs)
        path = f"/keysets/{keyset_names(count)[-1]}/jwks.json"
        url = runs[0].daemon.url + path
        if runs[0].daemon.get(path).status != 200:
            raise SystemExit(f"{url} does not answer 200: see {runs[0].log}")
        say(f"  wrk {url} for {self.args.wrk_seconds} s")
        result.jwks = wrk(url, self.args.wrk_seconds)
        for index, run in enumerate(runs):
            result.stops.append((f"filled #{index + 1}", run.stop()))
        return result

    def drill(self) -> Drill:
        count, replicas = self.args.drill_keysets, self.args.replicas
        prefix = f"scale-drill-{count}-{uuid.uuid4().hex[:8]}"
        settings = self.storage_settings("aws", prefix)
        say(f"rotation drill: {count} keysets, {replicas} replicas")
        checked = self.workdir / prefix / "check.toml"
        policy = {**DRILL_POLICY, "rotation_period": f"{self.args.drill_rotation}s"}
        write_config(checked, 1, settings, DRILL_SERVER, policy)
        command = [sys.executable, "-m", "keyrotd.cli", "check-config", "--config", str(checked)]
        check = subprocess.run(
            command, capture_output=True, text=True, env=daemon_environment(True), timeout=60
        )
        if check.returncode != 0:
            raise SystemExit(f"the drill policy is refused: {check.stderr.strip()}")
        runs = [
            self.start(f"{prefix}-{i}", count, settings, DRILL_SERVER, policy)
            for i in range(replicas)
        ]
        for run in runs:
            run.wait_ready()
        time.sleep(2)  # the bootstrap writes of the slower replicas
        offsets = [run.log_offset() for run in runs]
        assert self.moto is not None
        before = self.moto.counts()
        say(f"  all ready; counting for {self.args.drill_seconds:.0f} s")
        started = time.monotonic()
        time.sleep(self.args.drill_seconds)
        elapsed = time.monotonic() - started
        window = self.moto.counts() - before
        events: Counter[str] = Counter()
        for run, offset in zip(runs, offsets, strict=True):
            for event in run.events_since(offset):
                name = str(event.get("event", ""))
                if name.startswith("key."):
                    events[name] += 1
        stops = [run.stop() for run in runs]
        return Drill(
            count,
            self.args.drill_rotation,
            replicas,
            elapsed,
            events,
            by_operation(window),
            by_operation(window, successful_only=True),
            stops,
        )


def metric_calls(run: Run) -> Counter[str] | None:
    """The daemon's own count of storage requests per operation, if it exposes the metric."""
    try:
        samples = run.metric(METRIC)
    except OSError:  # a daemon too busy to answer within 10 s: counted on moto's side only
        return None
    if not samples:
        return None
    found: Counter[str] = Counter()
    for labels, value in samples.items():
        operation = labels.partition('operation="')[2].partition('"')[0] or labels
        found[operation] += int(value)
    return found


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- printing --------------------------------------------------------------------------------


def stop_text(stopped: Stopped) -> str:
    code = "killed" if stopped.exit_code is None else f"exit {stopped.exit_code}"
    return f"{stopped.seconds:.1f} s, {code}, {len(stopped.warnings)} warn"


def print_tables(
    results: list[Scenario], baselines: dict[str, Scenario], drill: Drill | None
) -> None:
    print(
        "\n| storage | keysets | ready empty s | ready filled s "
        "| RSS MB ready->after idle, empty / filled "
        "| CPU % empty/filled | JWKS req/s | vs 1 keyset | p99 ms "
        "| SIGTERM empty | SIGTERM filled |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        assert result.empty
        assert result.filled
        assert result.jwks
        base = baselines[result.storage].jwks
        assert base is not None
        ratio = result.jwks.requests_per_second / base.requests_per_second
        filled_stops = [s for label, s in result.stops if label != "empty"]
        print(
            f"| {result.storage} | {result.keysets:,}"
            f"{' (baseline)' if result is baselines[result.storage] else ''}"
            f"{f' x{result.replicas}' if result.replicas > 1 else ''} "
            f"| {result.ready_empty:.1f} | {max(result.ready_filled):.1f} "
            f"| {result.empty.rss_ready_mb:.0f}->{result.empty.rss_mb:.0f} "
            f"/ {result.filled.rss_ready_mb:.0f}->{result.filled.rss_mb:.0f} "
            f"| {result.empty.cpu_percent:.1f} / {result.filled.cpu_percent:.1f} "
            f"| {result.jwks.requests_per_second:,.0f} | {ratio:.2f}x | {result.jwks.p99_ms:.1f} "
            f"| {stop_text(result.stops[0][1])} "
            f"| {'; '.join(stop_text(s) for s in filled_stops)} |"
        )
    aws = [r for r in results if r.storage == "aws"]
    if aws:
        print(
            "\nSecrets Manager requests (moto's count; per keyset; steady = per keyset per day "
            "per replica, over the idle window after every replica was ready):\n"
        )
        print(
            "| keysets | replicas | operation | start, empty store | start, filled (all replicas) "
            "| steady /keyset/day/replica | daemon metric, steady |"
        )
        print("|---|---|---|---|---|---|---|")
        for result in aws:
            assert result.filled
            window = result.filled
            operations = sorted(
                set(result.startup_calls_empty)
                | set(result.startup_calls_filled)
                | set(window.calls)
            )
            scale = DAY / window.seconds / result.keysets / result.replicas
            for operation in operations:
                metric = (
                    "n/a (no metric)"
                    if window.metric_calls is None
                    else (f"{window.metric_calls[operation] * scale:.0f}")
                )
                print(
                    f"| {result.keysets:,} | {result.replicas} | {operation} "
                    f"| {result.startup_calls_empty[operation] / result.keysets:.2f} "
                    f"| {result.startup_calls_filled[operation] / result.keysets:.2f} "
                    f"| {window.calls[operation] * scale:.0f} | {metric} |"
                )
    if drill:
        writes = drill.calls["PutSecretValue"] + drill.calls["CreateSecret"]
        moves = drill.successful["UpdateSecretVersionStage"] + drill.successful["CreateSecret"]
        created = drill.events["key.created"]
        print(
            f"\nRotation drill: {drill.keysets} keysets, {drill.replicas} replicas, "
            f"rotation every {drill.rotation} s, counted over {drill.seconds:.0f} s:\n"
        )
        print(
            "| lifecycle events (all replicas) | PutSecretValue + CreateSecret | successful "
            "writes (AWSCURRENT moved or created) | puts per key.created "
            "| puts per successful write |"
        )
        print("|---|---|---|---|---|")
        events = ", ".join(f"{name} {n}" for name, n in sorted(drill.events.items())) or "none"
        print(
            f"| {events} | {drill.calls['PutSecretValue']} + {drill.calls['CreateSecret']} "
            f"| {moves} | {writes / created if created else math.nan:.2f} "
            f"| {writes / moves if moves else math.nan:.2f} |"
        )
        print(
            "\nall requests in the drill window: "
            + ", ".join(f"{op} {n}" for op, n in sorted(drill.calls.items()))
        )
        print("drill SIGTERM: " + "; ".join(stop_text(s) for s in drill.stops))
    warnings = [
        (f"{r.storage} {r.keysets:,} {label}", line)
        for r in results
        for label, stopped in r.stops
        for line in stopped.warnings
    ]
    warnings += [("drill", line) for s in (drill.stops if drill else []) for line in s.warnings]
    if warnings:
        print("\nprinted while stopping (warning level or above, first 3 of each run):")
        shown: Counter[str] = Counter()
        for where, line in warnings:
            shown[where] += 1
            if shown[where] <= 3:
                print(f"- {where}: {line[:300]}")


# -- main ------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument(
        "--keysets",
        type=int,
        nargs="+",
        default=[1000, 10000],
        help="keyset counts to measure (default: 1000 10000)",
    )
    parser.add_argument(
        "--storage",
        nargs="+",
        choices=["file", "aws"],
        default=["file", "aws"],
        help="storages to measure (default: file aws)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="idle window for CPU and API calls (default 30; >= refresh_interval)",
    )
    parser.add_argument(
        "--replicas", type=int, default=3, help="aws: daemons sharing the filled store (default 3)"
    )
    parser.add_argument(
        "--wrk-seconds", type=int, default=10, help="length of each wrk run (default 10)"
    )
    parser.add_argument(
        "--rotation-drill",
        action="store_true",
        help="aws: count writes per transition under a 20 s rotation",
    )
    parser.add_argument(
        "--drill-keysets", type=int, default=100, help="keysets in the rotation drill (default 100)"
    )
    parser.add_argument(
        "--drill-rotation",
        type=int,
        default=20,
        help="rotation_period of the drill's keysets, in seconds (default 20)",
    )
    parser.add_argument(
        "--drill-seconds",
        type=float,
        default=60.0,
        help="length of the rotation drill's count (default 60)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a check that the script works, in about a minute: 50 keysets, "
        "3 s windows, 1 s wrk, 2 replicas, a 12 s drill of 10 keysets rotating every 10 s",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (configs, daemon logs) and print its path",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.keysets, args.seconds, args.wrk_seconds, args.replicas = [50], 3.0, 1, 2
        args.rotation_drill, args.drill_keysets = True, 10
        args.drill_rotation, args.drill_seconds = 10, 12.0
    if min(args.keysets) < 1 or args.replicas < 1 or args.seconds <= 0:
        parser.error("--keysets, --replicas and --seconds must be positive")
    return args


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="keyrotd-scale-"))
    bench = Bench(args, workdir)
    results: list[Scenario] = []
    baselines: dict[str, Scenario] = {}
    drill: Drill | None = None
    failure = ""
    try:
        for storage in args.storage:
            baselines[storage] = bench.scenario(storage, 1)
            results.append(baselines[storage])
            for count in args.keysets:
                results.append(bench.scenario(storage, count))
        if args.rotation_drill:
            drill = bench.drill()
    except (Exception, SystemExit) as error:  # print what was measured before it, then fail
        failure = f"{type(error).__name__}: {error}"
    finally:
        kill_all()
        if bench.moto is not None:
            bench.moto.stop()
        if args.keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.seconds < DEFAULT_REFRESH:
        print(
            f"note: the idle window ({args.seconds:.0f} s) is shorter than refresh_interval "
            f"({DEFAULT_REFRESH:.0f} s): CPU and steady calls may miss a refresh"
        )
    print_tables(results, baselines, drill)
    if failure:
        print(f"\nstopped early: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
