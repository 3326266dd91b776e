"""CLI start-up: ``keyrotd --help`` and ``keyrotd status`` against what they cannot avoid, same run.

    python benchmarks/cli_startup.py [--rounds 30] [--no-bytecode] [--beside DIR] [--config]

Each round runs, in turn, as whole processes (wall time, output discarded):
- ``python -c pass``: the bare interpreter (this venv's, with its site-packages);
- ``keyrotd --help`` (the installed console script);
- ``python -c "import pydantic_settings, cryptography..."``: what ``status`` cannot avoid, the
  configuration loader (TOML and ``KEYROTD_*``) and the AES-GCM of a sealed store;
- ``keyrotd status`` on a file store with one keyset (made by ``keyrotd rotate`` first); with
  ``--config``, ``status`` (and that ``rotate``) read a ``keyrotd.toml`` that sets the storage and
  the keyset's durations (:data:`CONFIG`), as a deployment does, instead of the built-in defaults.
The figures are the medians over the rounds, and the ratios the medians of each round's own
ratio, so that a machine whose speed drifts during the run compares like with like. The ratios
are given for wall time (the target) and for CPU time (user + system of the child), which a
loaded machine disturbs less.
The warm-up runs write the bytecode of every module the commands import, as an installed keyrotd
has it (pip compiles a package when it installs it), even where ``PYTHONDONTWRITEBYTECODE`` is
set: without it an editable checkout compiles each of keyrotd's modules on every start, and the
figures measure the compiler. ``--no-bytecode`` keeps the environment as it is.
``--beside DIR`` adds, to each round, ``--help`` and ``status`` of the ``keyrotd`` package in DIR
(another revision's tree, put first on ``PYTHONPATH``; its bytecode is written there too).
Targets: ``--help`` <= 3x the bare interpreter, ``status`` <= 1.2x its unavoidable imports.
``tests/test_cli_startup.py`` keeps the modules these commands must not import out of them.
"""

from __future__ import annotations

import argparse
import os
import resource
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
CONFIG = """\
[storage]
type = "file"
path = "./keyrotd-data"

[[keysets]]
name = "default"
algorithm = "ES256"
rotation_period = "7d"
publish_ahead = "1d"
token_lifetime = "1h"
clock_skew = "5m"
"""
"""What ``--config`` writes to ``keyrotd.toml`` in the working directory."""
TARGETS = {"help": 3.0, "status": 1.2}
NO_PYC = "PYTHONDONTWRITEBYTECODE"


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """The wall time and the CPU time (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (an editable checkout compiles on every run)",
    )
    parser.add_argument("--beside", type=Path, help="a tree with another revision's keyrotd/")
    parser.add_argument(
        "--config", action="store_true", help="status reads a keyrotd.toml (storage, durations)"
    )
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
    envs = dict.fromkeys(commands, env)
    if args.beside is not None:
        if not (args.beside / "keyrotd" / "cli").is_dir():
            raise SystemExit(f"--beside {args.beside}: no keyrotd/cli there")
        beside = {**env, "PYTHONPATH": str(args.beside.resolve())}
        commands |= {"help beside": [exe, "--help"], "status beside": [exe, "status"]}
        envs |= {"help beside": beside, "status beside": beside}
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    bytecode = "as the environment has it" if args.no_bytecode else "written by the warm-up"
    print(f"bytecode: {bytecode} (PYTHONDONTWRITEBYTECODE={os.environ.get(NO_PYC, '')!r})")
    print(f"configuration: {'./keyrotd.toml' if args.config else 'none (built-in defaults)'}")
    with tempfile.TemporaryDirectory(prefix="keyrotd-cli-startup-") as tmp:
        cwd = Path(tmp)
        if args.config:  # found there as ./keyrotd.toml, as by an operator's command
            (cwd / "keyrotd.toml").write_text(CONFIG, encoding="utf-8")
        subprocess.run([exe, "rotate"], cwd=cwd, env=env, check=True, capture_output=True)
        for name, argv in commands.items():  # warm the page cache and the bytecode
            warm = dict(envs[name])
            if not args.no_bytecode:
                warm.pop(NO_PYC, None)
            timed(argv, cwd, warm)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                wall, used = timed(argv, cwd, envs[name])
                times[name].append(wall)
                cpu[name].append(used)
    for name, values in times.items():
        shown = " ".join(commands[name][-2:])
        print(
            f"{name:13s} median {statistics.median(values) * 1000:7.1f} ms,"
            f" CPU {statistics.median(cpu[name]) * 1000:7.1f} ms  ({shown})"
        )

    def ratio(name: str, base: str, of: dict[str, list[float]] = times) -> float:
        return statistics.median(a / b for a, b in zip(of[name], of[base], strict=True))

    def line(label: str, name: str, base: str, target: str = "") -> None:
        wall, used = ratio(name, base), ratio(name, base, cpu)
        print(f"{label} {wall:.2f}x{target}, CPU time {used:.2f}x")

    ratios = {"help": ratio("help", "bare"), "status": ratio("status", "unavoidable")}
    line("keyrotd --help / python -c pass:         ", "help", "bare", " (target <= 3x)")
    line("keyrotd status / its unavoidable imports:", "status", "unavoidable", " (target <= 1.2x)")
    if args.beside is not None:
        line("beside: --help / python -c pass:         ", "help beside", "bare")
        line("beside: status / its unavoidable imports:", "status beside", "unavoidable")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    met = all(ratios[name] <= target for name, target in TARGETS.items())
    print(f"targets: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
