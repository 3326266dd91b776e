"""Crashes: writers SIGKILLed at random moments and at each point of the write path.

After every kill the store must load, hold exactly one active key, and still hold every key that
was published and has not expired; every activation must follow its publication by
``publish_ahead`` unless a writer announced an exception. ``benchmarks/crash_soak.py`` runs the
same harness for 1,000 rotations per backend variant.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.lifecycle.commands import TICK
from keyrotd.writer import KeysetSpec, KeysetWriter

from .crash_harness import POLICY, CrashRun
from .crash_worker import SELF_KILL_POINTS

ROTATIONS = 200


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, encrypted: bool) -> None:
    with CrashRun(tmp_path, encrypted=encrypted, seed=6) as run:
        while run.figures.rotations < ROTATIONS:
            run.life(max_delay=0.1)
            assert run.figures.lives < 20 * ROTATIONS, "the writers make no progress"
        print(run.figures.line("plain" if not encrypted else "encrypted"))
        assert run.figures.kills_in_flight > 0

        # A clean writer afterwards removes the leftovers and carries on from the stored state.
        manager = KeysetWriter(run.storage(), KeysetSpec("default", "EdDSA", 2048, POLICY), run.now)
        manager.apply(TICK)
        assert not [p for p in run.store.iterdir() if p.name.endswith(".tmp")]
        run.history.observe(manager.load().keyset, run.now())


@pytest.mark.parametrize("point", SELF_KILL_POINTS)
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_sigkill_at_each_point_of_the_write_path(
    tmp_path: Path, encrypted: bool, point: str
) -> None:
    """The writer kills itself inside its 1st to 5th write at ``point``, 10 times."""
    with CrashRun(tmp_path, encrypted=encrypted, seed=hash(point) % 1000) as run:
        for life in range(10):
            run.life(max_delay=0, point=point, count=1 + life % 5)
        temp_files = run.figures.kills_leaving_temp_file
        if point in {"temp-created", "before-fsync", "before-rename"}:
            assert temp_files == 10, "the kill did not land between temp file and rename"
        else:
            assert temp_files == 0


def test_the_cli_reads_a_store_after_crashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with CrashRun(tmp_path, encrypted=False, seed=1) as run:
        for _ in range(5):
            run.life(max_delay=0, point="before-rename", count=2)
        config = tmp_path / "keyrotd.toml"
        config.write_text(
            f'[storage]\npath = "{run.store}"\n[server]\nrefresh_interval = "1s"\n'
            'jwks_max_age = "1s"\n[[keysets]]\nname = "default"\nalgorithm = "EdDSA"\n'
            'rotation_period = "60s"\npublish_ahead = "20s"\ntoken_lifetime = "10s"\n'
            'clock_skew = "5s"\nverifier_cache = "1s"\n'
        )
        assert main(["--config", str(config), "status", "--json"]) == 0
        assert main(["--config", str(config), "rotate"]) == 0
        _, err = capsys.readouterr()
        assert err == ""
        assert not [p for p in run.store.iterdir() if p.name.endswith(".tmp")]
