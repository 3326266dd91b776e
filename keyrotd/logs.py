"""Logging: one event a line, JSON by default, on stderr.

Every line has an ``event`` field: each logging call in keyrotd names one (``tests/test_logs.py``
checks them all), and a line of a library whose logger the daemon adopts (asyncio, APScheduler)
gets ``<family>.<level>``. Lifecycle events carry ``keyset``, ``kid`` and ``by`` (``self`` or
``storage``: who made the change) as fields. Nothing in keyrotd passes key material to a logger;
``tests`` scan every line for the private values to keep it that way.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final, TextIO

from keyrotd.times import rfc3339

FIELDS: Final = (
    "keyset",
    "kid",
    "by",
    "at",
    "exception",
    "error",
    "attempt",
    "path",
    "listener",
    "accepted",  # storage.rollback_detected: the revision accepted and the one refused
    "found",
)
AUDIT_FIELDS: Final = ("client", "remote", "method", "action", "status", "count", "now")
"""The fields of ``admin.request`` events (``keyrotd.daemon.audit``)."""
PROPAGATION_FIELDS: Final = ("url", "urls", "delay")  # docs/guarantees.md events
LIBRARY_EVENTS: Final = (
    ("apscheduler", "scheduler"),
    ("asyncio", "http"),
    ("botocore", "aws"),
    ("urllib3", "aws"),
)
"""The event family of a library's own lines, by logger name prefix (else ``log``)."""


def event_of(record: logging.LogRecord) -> str:
    """The record's ``event``; for a line without one (a library's), ``<family>.<level>``."""
    event = record.__dict__.get("event")
    if isinstance(event, str) and event:
        return event
    family = next((f for prefix, f in LIBRARY_EVENTS if record.name.startswith(prefix)), "log")
    return f"{family}.{record.levelname.lower()}"


_ENCODER: Final = json.JSONEncoder(default=str)
"""One encoder for every line (``json.dumps`` with ``default`` makes one per call)."""
_FIELDS: Final = (*FIELDS, *AUDIT_FIELDS, *PROPAGATION_FIELDS)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": rfc3339(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "event": event_of(record),
        }
        given = record.__dict__
        for name in _FIELDS:
            value = given.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return _ENCODER.encode(entry)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The message, then the ``error`` field (JSON keeps it a field of its own)."""
        error = record.__dict__.get("error")
        text = super().format(record)
        return text if error is None else f"{text}: {error}"

    def formatException(self, ei: object) -> str:
        return ""  # tracebacks stay out of operator logs; --debug shows them on the CLI


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Install the keyrotd handler on the ``keyrotd`` logger (idempotent, for SIGHUP reloads)."""
    logger = logging.getLogger("keyrotd")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
