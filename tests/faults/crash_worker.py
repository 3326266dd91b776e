"""The process the crash tests kill: a zygote that forks writers on demand.

Run as a script: ``python crash_worker.py CONFIG_JSON``. The zygote imports keyrotd once, then
reads commands on stdin, one a line:

    fork SEED [POINT COUNT]   fork a writer; with POINT it SIGKILLs itself at that point of its
                              COUNT-th storage write (see ``SELF_KILL_POINTS``)
    quit

For each fork it prints ``child PID`` and, once the writer died, ``dead PID STATUS``. The writer
loops ``rotate --now`` / ``rotate`` / tick through a KeysetWriter and prints, with one
``write(2)`` per line (atomic on a pipe), ``I SEQ ACTION`` before each command and ``T SEQ EVENT
KID AT EXCEPTION`` for each transition *after* the write returned, then ``D SEQ``. Its clock is
the wall clock sped up: ``start + (time.time() - epoch) * speed``, which the parent shares.

Only the standard library and keyrotd are imported: this file runs outside pytest.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from keyrotd.lifecycle.commands import TICK, Command, Rotate
from keyrotd.model import Policy
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter

SELF_KILL_POINTS = (
    "temp-created",  # under the lock, the temp file is created and still empty
    "before-fsync",  # the temp file is written (in the page cache), not yet fsynced
    "before-rename",  # the temp file is complete and fsynced, not yet renamed
    "after-rename",  # renamed, the directory not yet fsynced
    "before-report",  # the write returned, nothing printed yet
)
ACTIONS = ("tick", "rotate", "rotate-now")
WEIGHTS = (3, 3, 4)


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sped_up_clock(config: dict[str, Any]) -> Callable[[], datetime]:
    start = datetime.fromisoformat(config["start"])
    epoch, speed = float(config["epoch"]), float(config["speed"])
    return lambda: start + timedelta(seconds=(time.time() - epoch) * speed)


def command(action: str) -> Command:
    return TICK if action == "tick" else Rotate(now=action == "rotate-now")


def install_self_kill(point: str, count: int) -> Callable[[], None]:
    """Wrap the file backend's primitives so the COUNT-th write dies at POINT; return the hook
    for the point that lies outside the backend (``before-report``)."""
    writes = {"n": 0}
    real_fsync, real_replace, real_fdopen = os.fsync, os.replace, os.fdopen
    real_write = FileStorage.write

    def counting_write(self: FileStorage, keyset: str, data: bytes, expected: str | None) -> str:
        writes["n"] += 1
        return real_write(self, keyset, data, expected)

    def armed() -> bool:
        return writes["n"] == count

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        if point == "temp-created" and armed():
            die()
        return real_fdopen(fd, *args, **kwargs)

    def fsync(fd: int) -> None:
        if point == "before-fsync" and armed() and not os.path.isdir(f"/proc/self/fd/{fd}"):
            die()
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if point == "before-rename" and armed():
            die()
        real_replace(src, dst, **kwargs)
        if point == "after-rename" and armed():
            die()

    # The file backend calls these through the ``os`` module: this child process only.
    setattr(FileStorage, "write", counting_write)  # noqa: B010
    setattr(os, "fsync", fsync)  # noqa: B010
    setattr(os, "replace", replace)  # noqa: B010
    setattr(os, "fdopen", fdopen)  # noqa: B010

    def before_report() -> None:
        if point == "before-report" and writes["n"] >= count:
            die()

    return before_report


def writer(config: dict[str, Any], seed: int, point: str | None, count: int) -> None:
    rng = random.Random(seed)
    before_report = install_self_kill(point, count) if point else (lambda: None)
    key = base64.b64decode(config["key"]) if config["key"] else None
    policy = Policy(*(timedelta(seconds=s) for s in config["policy"]))
    spec = KeysetSpec("default", config["algorithm"], 2048, policy)
    manager = KeysetWriter(FileStorage(Path(config["path"]), key), spec, sped_up_clock(config))
    for seq in range(1_000_000):
        action = rng.choices(ACTIONS, WEIGHTS)[0]
        emit(f"I {seq} {action}")
        outcome = manager.apply(command(action))
        if outcome.written:
            before_report()
        for t in outcome.transitions:
            emit(f"T {seq} {t.event} {t.kid} {t.at.isoformat()} {t.exception or '-'}")
        emit(f"D {seq}")
        time.sleep(rng.uniform(0, float(config["pause"])))


def zygote(config: dict[str, Any]) -> None:
    logging.getLogger("keyrotd").addHandler(logging.NullHandler())
    logging.getLogger("keyrotd").propagate = False
    emit("ready")
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        seed = int(words[1])
        point, count = (words[2], int(words[3])) if len(words) > 3 else (None, 0)
        pid = os.fork()
        if pid == 0:
            try:
                writer(config, seed, point, count)
            except BaseException as error:  # report it: the parent fails the test with it
                emit(f"E {type(error).__name__}: {error}")
                os._exit(3)
            os._exit(0)
        emit(f"child {pid}")
        _, status = os.waitpid(pid, 0)
        emit(f"dead {pid} {status}")


if __name__ == "__main__":
    zygote(json.loads(sys.argv[1]))
