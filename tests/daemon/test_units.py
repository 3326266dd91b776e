"""The daemon's pure parts, in-process: conditional requests, max-age, sd_notify, clock jumps."""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyrotd import logs
from keyrotd.config import KeysetSettings
from keyrotd.daemon.clock import ClockWatch
from keyrotd.daemon.responses import etag_matches
from keyrotd.daemon.state import Board, ServedKeyset
from keyrotd.daemon.systemd import Notifier
from keyrotd.errors import ConfigError
from keyrotd.keys import generate_key
from keyrotd.lifecycle.commands import plan
from keyrotd.secretfiles import load_admin_token
from tests.support.clock import T0_2030 as T0

SETTINGS = KeysetSettings(
    name="k",
    algorithm="ES256",
    rotation_period=timedelta(seconds=60),
    publish_ahead=timedelta(seconds=20),
    token_lifetime=timedelta(seconds=10),
    clock_skew=timedelta(seconds=5),
)


def bootstrapped() -> ServedKeyset:
    from keyrotd.model import Keyset

    first = plan(Keyset("k"), SETTINGS.policy, T0, fresh=(generate_key("ES256"),))
    return ServedKeyset.compute(SETTINGS, first.keyset, T0)


def test_etag_matching_follows_if_none_match_rules() -> None:
    etag = b'"abc"'
    assert etag_matches(b'"abc"', etag)
    assert etag_matches(b'W/"abc"', etag)
    assert etag_matches(b'"x", W/"abc"', etag)
    assert etag_matches(b"*", etag)
    assert not etag_matches(b'"abcd"', etag)
    assert not etag_matches(b"abc", etag)
    assert not etag_matches(b"", etag)


def test_max_age_counts_down_to_the_next_transition_within_the_cap() -> None:
    published = bootstrapped()
    successor_due = (T0 + timedelta(seconds=40)).timestamp()
    assert published.changes_at == successor_due
    assert published.max_age(T0.timestamp(), cap=300) == 40
    assert published.max_age(T0.timestamp(), cap=7) == 7
    assert published.max_age(successor_due - 0.5, cap=300) == 0
    assert published.max_age(successor_due + 10, cap=300) == 0


def test_the_served_view_changes_at_an_activation_before_any_write() -> None:
    successor = generate_key("ES256")
    published = bootstrapped()
    later = plan(published.stored, SETTINGS.policy, T0 + timedelta(seconds=40), fresh=(successor,))
    wall = T0 + timedelta(seconds=40)
    board = Board(monotonic=lambda: wall.timestamp())  # a wall clock that never jumps
    board.arrange(("k",))
    stored = board.loaded(SETTINGS, later.keyset, wall)
    activation = (T0 + timedelta(seconds=60)).timestamp()
    assert stored.recompute_at == activation
    wall = datetime.fromtimestamp(activation - 0.001, UTC)
    before = board.current("k", activation - 0.001)
    wall = datetime.fromtimestamp(activation, UTC)
    after = board.current("k", activation)
    assert before is stored and after is not None
    assert after.keyset.active is not None and after.keyset.active.kid == successor.kid
    assert after.body != before.body and after.etag != before.etag
    wall = datetime.fromtimestamp(activation + 1, UTC)
    assert board.current("k", activation + 1) is after  # computed once, then kept


def test_the_served_view_holds_what_fell_due_within_a_forward_clock_jump() -> None:
    """Until the manager has postponed the schedule, a jump does not make the activation due."""
    successor = generate_key("ES256")
    published = bootstrapped()
    later = plan(published.stored, SETTINGS.policy, T0 + timedelta(seconds=40), fresh=(successor,))
    mono = 1000.0
    board = Board(monotonic=lambda: mono)
    board.arrange(("k",))
    stored = board.loaded(SETTINGS, later.keyset, T0 + timedelta(seconds=40))
    mono += 1  # one second passes; the wall clock leaps 30 s, past the activation at 60 s
    held = board.current("k", (T0 + timedelta(seconds=71)).timestamp())
    assert held is not None and held.keyset.active is not None
    assert held.keyset.active.kid == stored.keyset.active.kid if stored.keyset.active else False
    assert {k["kid"] for k in held.keyset.jwks()["keys"]} >= {successor.kid}


def test_the_board_calls_its_change_hook_outside_its_lock() -> None:
    """the hook (sd_notify) runs after the lock the HTTP path needs is released."""
    held: list[bool] = []
    board = Board(on_change=lambda *_: held.append(board._lock.locked()))
    board.arrange(("k",))
    board.loaded(SETTINGS, bootstrapped().stored, T0)
    board.failed("k", "storage failing")
    assert held == [False, False, False]


def test_notifier_drops_and_counts_what_a_full_socket_cannot_take() -> None:
    name = f"keyrotd-unit-full-{os.getpid()}"
    drops: list[int] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())  # never read: its queue fills
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name}, on_drop=lambda: drops.append(1))
        for _ in range(100):  # far more than net.unix.max_dgram_qlen; none of them waits
            notifier.notify("WATCHDOG=1")
    assert 0 < len(drops) < 100


def test_notifier_sends_to_an_abstract_socket() -> None:
    name = f"keyrotd-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1", "STATUS=ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"


def test_notifier_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0
    assert Notifier({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None
    Notifier({}).notify("READY=1")  # outside systemd: nothing, no error


def test_clock_watch_reports_jumps_not_drift() -> None:
    wall = iter([100.0, 101.0, 102.1, 40.0, 41.0, 150.0])
    mono = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    jumps: list[float] = []
    done = threading.Event()

    def on_jump(seconds: float) -> None:
        jumps.append(round(seconds, 1))
        if len(jumps) == 2:
            done.set()

    watch = ClockWatch(on_jump, every=0.001, wall=lambda: next(wall), monotonic=lambda: next(mono))
    watch.start()
    assert done.wait(5)
    watch.stop()
    assert jumps == [-63.1, 108.0]


def test_admin_token_checks(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret-of-32-characters-01234567 \n")
    path.chmod(0o640)
    assert load_admin_token(path) == b"s3cret-of-32-characters-01234567"
    path.chmod(0o604)
    with pytest.raises(ConfigError, match="accessible to other users"):
        load_admin_token(path)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_admin_token(tmp_path)


def test_text_logs_show_the_error_field_once() -> None:
    stream = io.StringIO()
    logs.configure("text", "info", stream)
    try:
        extra = {"keyset": "k", "error": "k.json: it is not valid JSON"}
        logging.getLogger("keyrotd.daemon").error("keyset k: storage read failed", extra=extra)
    finally:
        logs.configure()
    line = stream.getvalue().strip()
    assert line.endswith("keyset k: storage read failed: k.json: it is not valid JSON"), line
    assert line.count("not valid JSON") == 1


def test_read_body_gives_the_body_up_to_the_limit() -> None:
    from keyrotd.daemon.responses import read_body

    assert read_body({"body": b"abcd"}, limit=4) == b"abcd"
    assert read_body({"body": b"abcde"}, limit=4) is None
    assert read_body({"body": b""}) == b""
