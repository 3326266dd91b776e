"""Crash soak (heavy run): SIGKILL file-store writers during 1,000 rotations.

    python benchmarks/crash_soak.py [--rotations 1000] [--max-delay 0.04] [--seed 6]

For the plain and the encrypted file backend, forks writers that loop ``rotate --now`` /
``rotate`` / tick through a KeysetWriter, SIGKILLs each after a random delay, and after every kill
checks that the store loads, holds exactly one active key, lost no published key that had not
expired, and activated nothing unannounced before ``publish_ahead`` (tests/faults/crash_harness.py).
Then it kills a writer 50 times at each fixed point of the write path. Prints one line of figures
per run; exits 1 on the first violated guarantee.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.crash_harness import CrashRun
from tests.faults.crash_worker import SELF_KILL_POINTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=1000)
    parser.add_argument("--max-delay", type=float, default=0.04, help="seconds before a kill")
    parser.add_argument("--points", type=int, default=50, help="kills at each fixed point")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    for encrypted in (False, True):
        label = "encrypted" if encrypted else "plain"
        with (
            tempfile.TemporaryDirectory() as directory,
            CrashRun(Path(directory), encrypted=encrypted, seed=args.seed) as run,
        ):
            while run.figures.rotations < args.rotations:
                run.life(args.max_delay)
            print("random kills, " + run.figures.line(label))
        for point in SELF_KILL_POINTS:
            with (
                tempfile.TemporaryDirectory() as directory,
                CrashRun(Path(directory), encrypted=encrypted, seed=args.seed) as run,
            ):
                for life in range(args.points):
                    run.life(0, point=point, count=1 + life % 5)
                figures = run.figures
                print(
                    f"kills at {point}, {label}: {figures.lives} kills, "
                    f"{figures.kills_leaving_temp_file} left a temp file, store always loaded"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
