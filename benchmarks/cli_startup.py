"""CLI start-up: ``keyrotd --help`` and ``keyrotd status`` against what they cannot avoid, same run.

    python benchmarks/cli_startup.py [--rounds 30]

Each round runs, in turn, as whole processes (wall time, output discarded):
- ``python -c pass``: the bare interpreter (this venv's, with its site-packages);
- ``keyrotd --help`` (the installed console script);
- ``python -c "import pydantic_settings, cryptography..."``: what ``status`` cannot avoid, the
  configuration loader (TOML and ``KEYROTD_*``) and the AES-GCM of a sealed store;
- ``keyrotd status`` on a file store with one keyset (made by ``keyrotd rotate`` first).
The figures are the medians over the rounds, and the ratios the medians of each round's own
ratio, so that a machine whose speed drifts during the run compares like with like.
Targets: ``--help`` <= 3x the bare interpreter, ``status`` <= 1.2x its unavoidable imports.
``tests/test_cli_startup.py`` keeps the modules these commands must not import out of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNAVOIDABLE = (
    "import pydantic_settings, cryptography.hazmat.primitives.ciphers.aead, "
    "cryptography.hazmat.primitives.serialization"
)
TARGETS = {"help": 3.0, "status": 1.2}


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    exe = shutil.which("keyrotd", path=os.path.dirname(sys.executable))
    if exe is None:
        raise SystemExit("the keyrotd console script is not installed beside this python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    commands = {
        "bare": [sys.executable, "-c", "pass"],
        "help": [exe, "--help"],
        "unavoidable": [sys.executable, "-c", UNAVOIDABLE],
        "status": [exe, "status"],
    }
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="keyrotd-cli-startup-") as tmp:
        cwd = Path(tmp)
        subprocess.run([exe, "rotate"], cwd=cwd, env=env, check=True, capture_output=True)
        for argv in commands.values():  # warm the page cache and the bytecode
            timed(argv, cwd, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                times[name].append(timed(argv, cwd, env))
    for name, values in times.items():
        shown = " ".join(commands[name][-2:])
        print(f"{name:12s} median {statistics.median(values) * 1000:7.1f} ms  ({shown})")
    ratios = {
        "help": statistics.median(h / b for h, b in zip(times["help"], times["bare"], strict=True)),
        "status": statistics.median(
            s / u for s, u in zip(times["status"], times["unavoidable"], strict=True)
        ),
    }
    print(f"keyrotd --help / python -c pass:          {ratios['help']:.2f}x (target <= 3x)")
    print(f"keyrotd status / its unavoidable imports: {ratios['status']:.2f}x (target <= 1.2x)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    met = all(ratios[name] <= target for name, target in TARGETS.items())
    print(f"targets: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
