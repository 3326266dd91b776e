"""G6 with real processes: many CLI writers on one file store lose no key and never make two
active keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keyrotd.cli import main

POLICY = """
[server]
refresh_interval = "1s"
jwks_max_age = "1s"

[[keysets]]
name = "default"
algorithm = "ES256"
rotation_period = "1h"
publish_ahead = "10m"
token_lifetime = "1h"
"""


def keyrotd(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    return subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_fifty_cli_writers_lose_nothing(tmp_path: Path) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(POLICY + f'\n[storage]\npath = "{tmp_path / "store"}"\n')
    assert main(["--config", str(config), "rotate"]) == 0
    status = json.loads(keyrotd(config, "status", "--json").stdout)
    pending = [k["kid"] for k in status["keysets"][0]["keys"] if k["state"] == "pending"]

    commands: list[tuple[str, ...]] = []
    commands += [("rotate", "--now", "--force")] * 30
    commands += [("rotate",)] * 15
    commands += [("revoke", pending[0])] * 5
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        results = list(pool.map(lambda argv: keyrotd(config, *argv), commands))

    created: set[str] = set()
    emergencies = 0
    for result in results:
        assert result.returncode == 0, result.stderr
        created |= set(re.findall(r"key\.created (\S+)", result.stdout))
        emergencies += len(re.findall(r"key\.activated .*rotate --now", result.stdout))
    assert emergencies == 30  # every emergency rotation activated exactly one key

    report = json.loads(keyrotd(config, "status", "--json").stdout)["keysets"][0]
    live = {k["kid"]: k["state"] for k in report["keys"]}
    gone = {k["kid"]: k["state"] for k in report["history"]}
    assert set(live.values()) <= {"active", "pending", "retired"}
    assert list(live.values()).count("active") == 1
    assert created <= set(live) | set(gone), "a key was lost"
    assert gone.get(pending[0]) == "revoked"
    assert list(live.values()).count("pending") <= 1
