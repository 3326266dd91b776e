"""``check-config`` refuses (exit 2) what ``run`` refuses, with the same line.

(``keyrotd.cli.preflight`` holds the checks both make.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.support.daemon import free_port
from tests.support.moto import AWS_VARIABLES_TO_CLEAR


def run_cli(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """No AWS region anywhere boto3 looks: not in the environment, not in a config file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in AWS_VARIABLES_TO_CLEAR and not k.startswith(("KEYROTD_", "AWS_"))
    }
    return env | {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "HOME": str(tmp_path),
    }


def both_refuse(config: Path, env: dict[str, str]) -> str:
    """``check-config`` and ``run`` exit 2 with the same one line; that line."""
    checked = run_cli("check-config", "--config", str(config), env=env)
    ran = run_cli("run", "--config", str(config), env=env)
    assert checked[0] == 2, checked
    assert (checked[1], checked[2].count("\n")) == ("", 1)
    assert ran[0] == 2, ran
    assert checked[2] in ran[2], (checked[2], ran[2])
    return checked[2]


def test_aws_without_a_region_is_refused_by_both(tmp_path: Path) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[storage]\ntype = "aws"\n[server]\nlisten = "127.0.0.1:{free_port()}"\n')
    line = both_refuse(config, clean_environment(tmp_path))
    assert "region" in line


def test_aws_with_the_region_in_the_environment_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in clean_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in AWS_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    config = tmp_path / "keyrotd.toml"
    config.write_text('[storage]\ntype = "aws"\n')
    assert main(["check-config", "--config", str(config)]) == 0, capsys.readouterr().err


def test_an_admin_socket_in_a_missing_directory_is_refused_by_both(tmp_path: Path) -> None:
    socket = tmp_path / "missing" / "admin.sock"
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n[server]\n'
        f'listen = "127.0.0.1:{free_port()}"\nadmin_listen = "unix:{socket}"\n'
    )
    line = both_refuse(config, clean_environment(tmp_path))
    assert str(socket.parent) in line
    assert "RuntimeDirectory" in line and "mkdir" in line
    assert not (tmp_path / "data").exists()
