"""The tests' timing policies and the one way they open a keyset's writer.

``POLICY`` is the daily policy most tests count in (a key a day, published 12 h ahead); the
others are named for what their tests need, and each test file imports its own as ``POLICY``.
``open_writer`` is ``KeysetWriter(storage, KeysetSpec.from_settings(keyset), ...)``, said once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from keyrotd.config import KeysetSettings
from keyrotd.model import Policy
from keyrotd.storage.interface import Storage
from keyrotd.writer import KeysetSpec, KeysetWriter

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

POLICY = Policy(
    rotation_period=24 * HOUR,
    publish_ahead=12 * HOUR,
    token_lifetime=HOUR,
    clock_skew=5 * MINUTE,
)
"""A key a day, published 12 h ahead, 1 h tokens, 5 min of skew (the example configuration's
rhythm)."""

POLICY_A_DAY_AHEAD = Policy(
    rotation_period=24 * HOUR,
    publish_ahead=24 * HOUR,
    token_lifetime=HOUR,
    clock_skew=5 * MINUTE,
)
"""``POLICY`` with the successor published a whole period ahead (the status timeline tests)."""

POLICY_TWO_HOURS_AHEAD = Policy(
    rotation_period=24 * HOUR,
    publish_ahead=2 * HOUR,
    token_lifetime=HOUR,
    clock_skew=MINUTE,
)
"""A key a day, published 2 h ahead, 1 min of skew (the writer tests, test_writer.py)."""

HOURLY = Policy(
    rotation_period=HOUR,
    publish_ahead=10 * MINUTE,
    token_lifetime=5 * MINUTE,
    clock_skew=30 * SECOND,
)
"""A key an hour (the file store's leftover tests)."""

EVERY_MINUTE = Policy(
    rotation_period=60 * SECOND,
    publish_ahead=20 * SECOND,
    token_lifetime=10 * SECOND,
    clock_skew=5 * SECOND,
)
"""A key a minute (the crash harness: many rotations in a short run)."""

EVERY_20_SECONDS = Policy(
    rotation_period=20 * SECOND,
    publish_ahead=3 * SECOND,
    token_lifetime=SECOND,
    clock_skew=SECOND,
)
"""A key every 20 s, published 3 s ahead (the race tests: a rotation within a test's run)."""

EVERY_10_SECONDS = Policy(10 * SECOND, 5 * SECOND, SECOND, timedelta(0))
"""A key every 10 s, published 5 s ahead, no skew (the model tests)."""

EVERY_3_SECONDS = Policy(
    rotation_period=3 * SECOND,
    publish_ahead=2 * SECOND,
    token_lifetime=2 * SECOND,
    clock_skew=SECOND,
    verifier_cache=SECOND / 2,
)
"""A key every 3 s with a 0.5 s verifier cache (the reload tests: several transitions in a run)."""


def open_writer(
    storage: Storage, keyset: KeysetSettings, *args: Any, **options: Any
) -> KeysetWriter:
    """The writer of ``keyset`` on ``storage``; ``args`` and ``options`` are
    ``KeysetWriter``'s after the spec (the clock, key_factory=, custody=, ...)."""
    return KeysetWriter(storage, KeysetSpec.from_settings(keyset), *args, **options)
