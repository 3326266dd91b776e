"""The rotation step without key generation against a bare atomic fsynced write.

    python benchmarks/rotation_step.py [--steps 200] [--dir DIR]

What the daemon's transition job does, on the file storage: ``KeysetWriter.apply()`` at each
scheduled transition of a keyset in its steady state (a clock jumps from one transition to the
next: successor published, activation with retirement, expiry into the history), with keys
generated beforehand (the key factory hands them out): read, unseal, parse, plan, serialize,
lock, compare-and-swap, temp file, fsync, rename, directory fsync. Baseline in the same run:
writing the same document bytes to a temp file, fsync, rename, directory fsync — the least a
durable atomic write costs. The two alternate so that disk noise hits both alike. Target: <= 1.5x.
Use --dir to measure on the disk that will hold the data (the default is the temp directory).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_tools import percentile

from keyrotd.keys import NewKey, generate_key
from keyrotd.lifecycle.due import next_transition
from keyrotd.model import Policy
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter

POLICY = Policy(
    rotation_period=timedelta(days=1),
    publish_ahead=timedelta(hours=1),
    token_lifetime=timedelta(hours=1),
    clock_skew=timedelta(minutes=5),
)


def atomic_write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--algorithm", default="RS256")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp directory)")
    args = parser.parse_args()
    logging.getLogger("keyrotd").setLevel(logging.ERROR)
    print(f"generating {args.steps + 2} {args.algorithm} keys first...", file=sys.stderr)
    keys = [generate_key(args.algorithm) for _ in range(args.steps + 2)]

    def factory(_alg: str, _size: int) -> NewKey:
        return keys.pop()

    now = datetime(2030, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        store = Path(directory) / "store"
        spec = KeysetSpec("bench", args.algorithm, 2048, POLICY)
        manager = KeysetWriter(FileStorage(store), spec, lambda: now, key_factory=factory)
        keyset = manager.apply().keyset  # bootstrap: the first key
        bare_path = Path(directory) / "bare.json"
        step_ms: list[float] = []
        bare_ms: list[float] = []
        for _ in range(args.steps):
            upcoming = next_transition(keyset, POLICY)
            assert upcoming is not None
            now = upcoming
            started = time.perf_counter()
            outcome = manager.apply()
            step_ms.append((time.perf_counter() - started) * 1000)
            assert outcome.written
            keyset = outcome.keyset
            document = (store / "bench.json").read_bytes()
            started = time.perf_counter()
            atomic_write(bare_path, document)
            bare_ms.append((time.perf_counter() - started) * 1000)
    size = len(document)
    step, bare = percentile(step_ms, 0.5), percentile(bare_ms, 0.5)
    where = args.dir or tempfile.gettempdir()
    print(f"rotation step vs bare atomic write in {where}, {args.steps} steps, {size} bytes:")
    for label, values in (("manager.apply (no keygen)", step_ms), ("bare fsynced write", bare_ms)):
        print(
            f"  {label:<26} p50 {percentile(values, 0.5):6.2f} ms  "
            f"p90 {percentile(values, 0.9):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms"
        )
    print(f"  ratio of medians {step / bare:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
