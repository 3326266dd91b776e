"""Every log line is an event: each logging call in keyrotd names one, and the formatter gives
one to the lines of the libraries whose loggers the daemon adopts (asyncio, APScheduler)."""

from __future__ import annotations

import ast
import io
import json
import logging
from pathlib import Path

import keyrotd
from keyrotd import logs

PACKAGE = Path(keyrotd.__file__).parent
LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def logging_calls(tree: ast.AST) -> list[ast.Call]:
    """The calls ``log.<level>(...)`` (every module names its logger ``log``)."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "log"
    ]


def names_an_event(call: ast.Call, tree: ast.AST) -> bool:
    """``extra=`` holds an ``"event"`` key, literally or in the dict the variable was given."""
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    if isinstance(extra, ast.Name):  # ``extra = {...}`` assigned earlier in the function
        assigned = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == extra.id for t in node.targets)
        ]
        extra = assigned[0] if len(assigned) == 1 else None
    return isinstance(extra, ast.Dict) and any(
        isinstance(key, ast.Constant) and key.value == "event" for key in extra.keys
    )


def test_every_logging_call_in_keyrotd_names_an_event() -> None:
    missing = []
    calls = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for call in logging_calls(tree):
            calls += 1
            if not names_an_event(call, tree):
                missing.append(f"{path.relative_to(PACKAGE)}:{call.lineno}")
    assert calls > 30  # the scan finds the calls at all
    assert missing == []


def test_a_library_line_gets_an_event_of_its_own() -> None:
    stream = io.StringIO()
    logs.configure("json", "info", stream)
    library = logging.getLogger("apscheduler.scheduler")
    library.handlers = list(logging.getLogger("keyrotd").handlers)
    library.propagate = False
    try:
        library.warning("Run time of job was missed by 0:00:01")
        logging.getLogger("keyrotd.daemon").info("named", extra={"event": "daemon.starting"})
    finally:
        library.handlers = []
        library.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["scheduler.warning", "daemon.starting"]
