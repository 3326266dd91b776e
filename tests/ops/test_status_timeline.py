"""``keyrotd status`` as text: a fixed keyset's timeline at a fixed time; human durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.model import Key, Keyset, KeyState
from keyrotd.status_timeline import human_duration, render_status
from tests.support.keysets import POLICY_A_DAY_AHEAD as POLICY

KID_OLD = "OLDkey0123456789abcdefghijklmnopqrstuvwxyz_"
KID_NOW = "NOWkey0123456789abcdefghijklmnopqrstuvwxyz_"
KID_NEXT = "NXTkey0123456789abcdefghijklmnopqrstuvwxyz_"


def at(day: int, hour: int, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


KEYSET = Keyset(
    name="default",
    keys=(
        Key(KID_NOW, "ES256", KeyState.ACTIVE, at(28, 10), activates_at=at(29, 10)),
        Key(KID_NEXT, "ES256", KeyState.PENDING, at(29, 10), activates_at=at(30, 10)),
        Key(
            KID_OLD,
            "ES256",
            KeyState.RETIRED,
            at(27, 10),
            activates_at=at(28, 10),
            retired_at=at(29, 10),
            expires_at=at(29, 11, 5),
        ),
    ),
    history=(Key("GONE", "ES256", KeyState.EXPIRED, at(26, 10)),),
)

EXPECTED = """\
keyset default (ES256) at /srv/keys/default.json
                     11-27 10:00                                    11-30 18:23
                                                       now 11-29 10:30
                                                       v
  active   NOWkey01                    ................|#################=
  pending  NXTkey01                                    |.................######
  retired  OLDkey01  ..................################|=
                     . published  # signing  = retired (verify only)
  active   NOWkey0123456789abcdefghijklmnopqrstuvwxyz_  ES256  active since 2026-11-29T10:00:00Z
  pending  NXTkey0123456789abcdefghijklmnopqrstuvwxyz_  ES256  activates 2026-11-30T10:00:00Z
  retired  OLDkey0123456789abcdefghijklmnopqrstuvwxyz_  ES256  retired 2026-11-29T10:00:00Z, \
leaves the JWKS 2026-11-29T11:05:00Z
  history: 1 keys out of the JWKS (kid and times in --json)
  next transition: 2026-11-29T11:05:00Z (in 34m53s): OLDkey01 leaves the JWKS
"""


def test_status_timeline_of_a_fixed_keyset_at_a_fixed_time() -> None:
    now = at(29, 10, 30, 6.1234)
    text = render_status(
        KEYSET, POLICY, now, 80, algorithm="ES256", location="/srv/keys/default.json"
    )
    assert text == EXPECTED


def test_timeline_fits_the_width() -> None:
    now = at(29, 10, 30)
    for width in (60, 80, 120):
        text = render_status(KEYSET, POLICY, now, width, algorithm="ES256", location="x")
        header_and_bars = text.splitlines()[1:7]
        assert max(len(line) for line in header_and_bars) <= width


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=23, minutes=59, seconds=53.8678), "23h59m"),
        (timedelta(seconds=42.9), "42s"),
        (timedelta(minutes=5, seconds=0.5), "5m"),
        (timedelta(days=1, hours=2, minutes=3), "1d2h"),
        (timedelta(days=2, minutes=3), "2d"),
        (timedelta(seconds=0.4), "0s"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_human_duration(duration: timedelta, text: str) -> None:
    assert human_duration(duration) == text


def test_status_command_rounds_the_next_transition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["rotate"]) == 0
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"next transition: \S+ \(in ([^)]*)\)", out)
    assert match is not None, out
    assert re.fullmatch(r"\d+h\d+m|\d+[hms]", match.group(1)), match.group(1)
    assert "|" in out and "#" in out
