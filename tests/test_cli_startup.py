"""What ``keyrotd --help`` and ``keyrotd status`` import: start-up time is mostly imports, and
each module below cost milliseconds on every start until it was made lazy (docs/benchmarks.md,
"CLI start-up"; benchmarks/cli_startup.py measures the times)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HELP_NEVER = (
    "secrets",  # hashlib and OpenSSL, for the token of ``client add``
    "hashlib",
    "traceback",  # --debug only
    "datetime",  # the clock, for commands that run
    "pydantic",
    "keyrotd.cli.commands",
    "keyrotd.config",
)
STATUS_NEVER = (
    "http.client",  # the remote issuer's HTTP client, for ``sign`` only
    "urllib.request",
    "keyrotd.issuer_sources",
    "keyrotd.cli.sign_command",
    "keyrotd.importing",  # key files, for ``import`` only
    "keyrotd.admin_clients",  # the admin clients file, only where one is configured
    "joserfc",  # signing and verifying: status only reads the keyset
    "keyrotd.cli.preflight",  # the checks of ``run`` and ``check-config``
    "keyrotd.config.capacity",
    "keyrotd.cli.handover",  # emergency notices, for ``rotate`` and ``revoke``
    "keyrotd.cli.kids",  # kid prefixes, for ``revoke``
    "keyrotd.status",  # the entry of ``status --json``, and with it ``inspect``'s verdicts
    "keyrotd.inspection",
    "keyrotd.writer",  # status reads the keyset; it never plans a write
    "keyrotd.lifecycle.commands",  # nor tells the planner to do anything: it reads its times
    "keyrotd.observations",  # the polls of the observe URLs, for the daemon's observer
    "keyrotd.custody",  # the private keys' custody, for commands that sign or make keys
    "keyrotd.keys",  # key generation: status makes no key
    "keyrotd.rotating",  # the rules and notes of ``rotate``
    "tomllib",  # only when there is a configuration file to read (here there is none)
    "keyrotd.cli.admin_client_commands",  # the parser builds the command it runs, not ``client``
)


def _imported(argv: list[str], cwd: Path, modules: tuple[str, ...]) -> list[str]:
    probe = (
        "import sys, contextlib, io\n"
        "from keyrotd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main({argv!r})\n"
        "assert code == 0, code\n"
        f"print(','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_help_imports_the_parser_and_nothing_a_command_needs(tmp_path: Path) -> None:
    assert _imported(["--help"], tmp_path, HELP_NEVER) == []


def test_status_imports_nothing_only_other_commands_need(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "rotate"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    assert _imported(["status"], tmp_path, STATUS_NEVER) == []
