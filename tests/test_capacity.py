"""Policies that blow the JWKS up: a warning above 20 keys at once from ``run`` and
``check-config``; a refusal (exit 2) when the largest document would not fit the storage."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.config import KeysetSettings, load_settings
from keyrotd.config.capacity import capacity, keys_in_jwks
from keyrotd.storage import open_storage
from tests.support.clock import ManualClock
from tests.support.daemon import make_daemon
from tests.support.keysets import open_writer

MANY = {  # (1m + 1h + 5m) / 2m + 2 = 35 keys
    "algorithm": "ES256",
    "rotation_period": "2m",
    "publish_ahead": "1m",
    "token_lifetime": "1h",
    "clock_skew": "5m",
}


def write(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "keyrotd.toml"
    config.write_text(body)
    return config


def keyset_table(values: dict[str, str]) -> str:
    return '[[keysets]]\nname = "api"\n' + "".join(f'{k} = "{v}"\n' for k, v in values.items())


def check_config(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, str, str]:
    code = main(["check-config", "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_count_follows_the_policy() -> None:
    assert keys_in_jwks(KeysetSettings()) == 3  # active, pending, one retired
    assert keys_in_jwks(KeysetSettings(**MANY)) == 35  # type: ignore[arg-type]


def test_check_config_warns_once_above_20_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        f'[storage]\npath = "{tmp_path}/data"\n[server]\nrefresh_interval = "1s"\n'
        f'jwks_max_age = "1s"\n{keyset_table(MANY)}',
    )
    code, out, err = check_config(capsys, config)
    assert code == 0 and out.startswith("configuration OK")
    assert err.count("\n") == 1
    assert err.startswith("keyrotd: warning: keysets[0] (api) keeps about 35 keys")


def test_the_defaults_get_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, f'[storage]\npath = "{tmp_path}/data"\n')
    assert check_config(capsys, config)[::2] == (0, "")


def test_run_logs_the_same_warning_once(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, keysets=[{"name": "api", **MANY}])
    daemon.start()
    code = daemon.stop()
    assert code == 0
    warnings = [
        json.loads(line) for line in daemon.log_text().splitlines() if '"config.warning"' in line
    ]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert "keeps about 35 keys" in warnings[0]["message"]


def run_cli(*argv: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("storage", "token_lifetime", "limit"),
    [
        ('type = "aws"\nregion = "eu-west-1"\nendpoint_url = "http://127.0.0.1:9"', "1d", 65536),
        ('path = "data"', "10d", 1048576),
    ],
)
def test_a_document_that_cannot_fit_its_storage_is_refused_by_both(
    tmp_path: Path, storage: str, token_lifetime: str, limit: int
) -> None:
    values = {
        "algorithm": "RS256",
        "rotation_period": "10m",
        "publish_ahead": "8m",
        "token_lifetime": token_lifetime,
        "clock_skew": "5m",
    }
    body = f"[storage]\n{storage}\n{keyset_table(values)}".replace(
        'algorithm = "RS256"\n', 'algorithm = "RS256"\nrsa_key_size = 4096\n'
    )
    config = write(tmp_path, body)
    expected = capacity(load_settings(str(config), environ={}).keyset())
    for command in ("check-config", "run"):
        code, err = run_cli(command, "--config", str(config))
        assert code == 2, err
        assert err.count("\n") == 1, err
        assert f"about {expected.document_bytes} bytes" in err
        assert f"limit of {limit} bytes" in err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "ES512", "RS256"])
def test_the_estimate_matches_the_documents_a_writer_stores(tmp_path: Path, algorithm: str) -> None:
    """Measured: the largest document a real writer stores over 60 rotations (the history full)."""
    config = write(
        tmp_path,
        f'[storage]\npath = "{tmp_path}/data"\n[[keysets]]\nname = "api"\n'
        f'algorithm = "{algorithm}"\nrotation_period = "1h"\n'
        'publish_ahead = "30m"\ntoken_lifetime = "2h"\nclock_skew = "5m"\n',
    )
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    manager = open_writer(storage, settings.keyset(), clock)
    largest = 0
    for _ in range(6 * 60):
        manager.apply()
        stored = storage.read("api")
        assert stored is not None
        largest = max(largest, len(stored.data))
        clock.now += timedelta(minutes=10)
    storage.close()
    estimate = capacity(settings.keyset()).document_bytes
    assert largest <= estimate <= largest * 1.1, (largest, estimate)
