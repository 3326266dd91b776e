"""The shipped systemd unit: it verifies, its hardening score holds, it matches its install recipe.

``systemd-analyze verify`` needs the unit's ExecStart to exist. The recipe installs keyrotd into a
virtualenv at /opt/keyrotd; here the unit is verified with that prefix replaced by this test run's
own virtualenv (which holds the same console script), and every other line as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "keyrotd.service"
README = ROOT / "README.md"
PREFIX = "/opt/keyrotd"
MAX_EXPOSURE = 1.5

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (.ci/run installs systemd)",
)


def directives(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            name, _, value = line.partition("=")
            pairs.append((name.strip(), value.strip()))
    return pairs


def unit_here(tmp_path: Path) -> Path:
    """The shipped unit with its install prefix pointing at this run's virtualenv."""
    text = UNIT.read_text()
    exec_start = dict(directives(text))["ExecStart"]
    assert exec_start.startswith(f"{PREFIX}/bin/keyrotd "), exec_start
    assert (Path(sys.prefix) / "bin" / "keyrotd").exists()
    path = tmp_path / "keyrotd.service"
    path.write_text(text.replace(f"{PREFIX}/bin/", f"{sys.prefix}/bin/"))
    return path


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "keyrotd.service" not in result.stderr, result.stderr


@needs_systemd_analyze
def test_unit_hardening_score(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(unit_here(tmp_path)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for keyrotd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_starts_without_optional_files() -> None:
    """No credential or file is required that an operator may leave out (admin token, clients).

    systemd.exec(5): a LoadCredential= whose file is absent fails the start unless a
    SetCredential= of the same name gives a fallback.
    """
    pairs = directives(UNIT.read_text())
    loaded = {v.partition(":")[0] for k, v in pairs if k == "LoadCredential"}
    fallbacks = {v.partition(":")[0] for k, v in pairs if k == "SetCredential"}
    assert loaded <= fallbacks, f"credentials without a fallback: {sorted(loaded - fallbacks)}"
    required = [v for k, v in pairs if k in {"EnvironmentFile"} and not v.startswith("-")]
    assert not required, required


def test_unit_and_readme_install_recipe_agree() -> None:
    """The README installs keyrotd where the unit runs it, as the user the unit runs it as."""
    pairs = dict(directives(UNIT.read_text()))
    readme = README.read_text()
    assert f"python3 -m venv {PREFIX}" in readme
    assert f"{PREFIX}/bin/pip install" in readme
    user = pairs["User"]
    assert re.search(rf"useradd .*\b{user}\b", readme), user
    assert f"sudo -u {user} {PREFIX}/bin/keyrotd" in readme
    assert "pip install keyrotd" not in readme + UNIT.read_text()
