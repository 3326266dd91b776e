"""The parent side of the crash tests: fork writers, SIGKILL them, check the store after each.

Shared by ``tests/faults/test_crash.py`` (CI-sized) and ``benchmarks/crash_soak.py`` (1,000
rotations). See ``crash_worker.py`` for the child side and its line protocol.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from keyrotd.lifecycle.events import Transition
from keyrotd.model import Keyset, KeyState, from_json
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import T0
from tests.support.keysets import EVERY_MINUTE as POLICY

from .helpers import History

WORKER = Path(__file__).with_name("crash_worker.py")
TIMEOUT = 60.0
"""Bound on every wait for the child (it answers within milliseconds when healthy)."""


class ChildFailed(AssertionError):
    pass


class LineReader:
    """Lines from a pipe, with a deadline on every wait."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""
        self.queued: list[str] = []

    def lines_until(self, deadline: float) -> list[str]:
        """Every complete line that arrives before ``deadline`` (monotonic)."""
        lines, self.queued = self.queued, []
        while (remaining := deadline - time.monotonic()) > 0:
            lines += self._read(remaining)
        return lines

    def until(self, prefix: str, timeout: float = TIMEOUT) -> tuple[list[str], str]:
        """Lines up to the first starting with ``prefix``, and that line; later ones stay queued."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            for index, line in enumerate(self.queued):
                if line.startswith(prefix):
                    seen += self.queued[:index]
                    self.queued = self.queued[index + 1 :]
                    return seen, line
            seen, self.queued = seen + self.queued, []
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"no {prefix!r} line within {timeout}s; got {seen[-5:]}")
            self.queued = self._read(remaining)

    def _read(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise ChildFailed("the crash worker's zygote exited")
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in complete]


@dataclass
class CrashFigures:
    lives: int = 0
    rotations: int = 0
    commands: int = 0
    kills_in_flight: int = 0
    kills_leaving_temp_file: int = 0
    unreported_emergencies: int = 0
    seconds: float = 0.0

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.lives} SIGKILLs, {self.rotations} rotations, {self.commands} "
            f"commands; {self.kills_in_flight} kills with a command in flight, "
            f"{self.kills_leaving_temp_file} left a temp file; "
            f"{self.unreported_emergencies} emergency activations written but never reported; "
            f"{self.seconds:.1f}s"
        )


@dataclass
class CrashRun:
    """One store, one zygote, many short-lived writers."""

    directory: Path
    encrypted: bool
    algorithm: str = "EdDSA"
    speed: float = 500.0
    """Simulated seconds per real second: a 60 s rotation period lasts 120 ms."""
    pause: float = 0.002
    seed: int = 0
    worker: Path = WORKER
    """The child's script (``crash_worker.py``, or a variant that writes through a custody)."""
    extra: dict[str, object] = field(default_factory=dict)
    """More of the child's configuration, for such a variant."""
    ready_line: str | None = None
    """A line the child prints once set up: the random delay before the kill starts there."""
    history: History = field(init=False)
    figures: CrashFigures = field(default_factory=CrashFigures)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.key = os.urandom(32) if self.encrypted else None
        self.store = self.directory / "store"
        self.history = History(POLICY)
        self.epoch = time.time()
        self.started = time.monotonic()
        config = {
            "path": str(self.store),
            "key": base64.b64encode(self.key).decode() if self.key else "",
            "algorithm": self.algorithm,
            "policy": [POLICY.rotation_period.total_seconds(), 20, 10, 5],
            "start": T0.isoformat(),
            "epoch": self.epoch,
            "speed": self.speed,
            "pause": self.pause,
            **self.extra,
        }
        self.stderr = (self.directory / "worker.stderr").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(self.worker), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.reader = LineReader(self.process.stdout)
        self.reader.until("ready")
        self._bootstrap()

    def _bootstrap(self) -> None:
        """Write the first key here, so that every later activation has a creation to follow."""
        spec = KeysetSpec("default", self.algorithm, 2048, POLICY)
        outcome = KeysetWriter(self.storage(), spec, self.now).apply()
        self.history.report(outcome.transitions)
        self.history.observe(outcome.keyset)

    def now(self) -> datetime:
        return T0 + timedelta(seconds=(time.time() - self.epoch) * self.speed)

    def storage(self) -> FileStorage:
        return FileStorage(self.store, self.key)

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b"quit\n")
            self.process.stdin.close()
            self.process.wait(TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(TIMEOUT)
        finally:
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.stderr.close()

    def __enter__(self) -> CrashRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one life ----------------------------------------------------------------------------

    def life(self, max_delay: float, point: str | None = None, count: int = 0) -> None:
        """Fork a writer; SIGKILL it after a random delay (or let it kill itself at ``point``)."""
        assert self.process.stdin is not None
        order = f"fork {self.rng.randrange(2**32)}"
        if point is not None:
            order += f" {point} {count}"
        self.process.stdin.write(order.encode() + b"\n")
        self.process.stdin.flush()
        lines, child = self.reader.until("child ")
        pid = int(child.split()[1])
        if self.ready_line is not None:
            early, ready = self.reader.until(self.ready_line)
            lines += [*early, ready]
        if point is None:
            lines += self.reader.lines_until(time.monotonic() + self.rng.uniform(0, max_delay))
            with contextlib.suppress(ProcessLookupError):  # it died by itself: said below
                os.kill(pid, signal.SIGKILL)
        ended = [line for line in lines if line.startswith(f"dead {pid} ")]
        if ended:  # it died by itself before the kill
            dead = ended[0]
        else:
            rest, dead = self.reader.until(f"dead {pid} ")
            lines += rest
        status = int(dead.split()[2])
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            errors = [line for line in lines if line.startswith("E ")]
            raise ChildFailed(f"the writer did not die of SIGKILL (status {status}): {errors}")
        self.figures.lives += 1
        self.figures.seconds = time.monotonic() - self.started
        self.check(self._replay(lines))

    def _replay(self, lines: list[str]) -> str | None:
        """Report the writer's printed transitions; the command in flight when it died."""
        in_flight: str | None = None
        transitions = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "I":
                in_flight = rest.split()[1]
                self.figures.commands += 1
            elif kind == "T":
                _seq, event, kid, at, exception = rest.split(" ", 4)
                transitions.append(
                    Transition(
                        event,  # type: ignore[arg-type]
                        kid,
                        datetime.fromisoformat(at),
                        None if exception == "-" else exception,
                    )
                )
            elif kind == "D":
                in_flight = None
            elif kind == "E":
                raise ChildFailed(line)
        self.history.report(transitions)
        self.figures.rotations = self.history.activations
        if in_flight is not None:
            self.figures.kills_in_flight += 1
        return in_flight

    # -- the checks --------------------------------------------------------------------------

    def load(self) -> Keyset:
        """The stored document; any error here (corrupt, unreadable) fails the test."""
        stored = self.storage().read("default")
        assert stored is not None, "the store is empty after a crash"
        return from_json(stored.data, stored.location)

    def check(self, in_flight: str | None) -> None:
        if any(name.endswith(".tmp") for name in os.listdir(self.store)):
            self.figures.kills_leaving_temp_file += 1
        keyset = self.load()
        now = self.now()
        self.history.observe(keyset, now)
        self.history.check_nothing_lost(keyset)
        assert keyset.updated_at is not None and keyset.updated_at <= now
        for key in keyset.history:
            if key.state is KeyState.EXPIRED:
                assert key.expires_at is not None and key.expires_at <= keyset.updated_at, key
        early = self.history.unexplained_activations()
        if early and in_flight == "rotate-now":
            # The writer died after writing an emergency rotation and before printing it: the key
            # activated by that write is the active one, activated at the write's own time.
            [key] = early
            active = keyset.active
            assert active is not None and active.kid == key.kid, early
            # (Later writes of the same command, e.g. re-dating a successor it published after
            # a slow write, may have moved updated_at on.)
            assert key.activates_at is not None and key.activates_at <= keyset.updated_at, key
            self.history.exceptions.add(key.kid)
            self.figures.unreported_emergencies += 1
        else:
            assert not early, f"G2: activated without publish_ahead nor a reason: {early}"
