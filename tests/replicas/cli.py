"""Many ``keyrotd`` CLI processes released at the moments a test chooses.

Starting the CLI costs close to a second of CPU (the interpreter, pydantic, boto3, what a first
call loads lazily): fifty ``keyrotd`` commands started at once on two cores reach storage 3 to
25 s later, when the keys they were told to revoke have long left the JWKS (a key lives seconds
here), and the start-up alone takes 20 s of the test budget. So a small fork server imports what
the CLI imports and runs ``keyrotd status`` once, then forks one process per command it is sent;
each child runs ``keyrotd.cli.main(argv)`` (what the ``keyrotd`` console script runs) with its own
stdout and stderr files and its own storage client, and exits with its code. The children are
separate processes racing each other and the replicas as ``keyrotd`` commands do; only the
interpreter start and the first-call work are shared. What a child prints is the CLI's output;
its transitions are read with the regular expression of ``faults.test_races``.

A command may name a key by its role instead of its kid: ``@newest``, ``@active`` or ``@oldest``
(of the live keys). The child resolves it with ``keyrotd status --json`` right before it runs the
command, so that a revoke aims at a key that is still in the JWKS at that moment, however long
the process waited for a core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from keyrotd.lifecycle.events import Transition
from tests.faults.test_races import TRANSITION

FORK_SERVER = """
import contextlib, io, json, os, sys, time, traceback
from datetime import datetime
import boto3, keyrotd.cli, keyrotd.cli.commands, keyrotd.keys, keyrotd.writer
import keyrotd.storage.aws.storage

ROLES = ("@newest", "@active", "@oldest")


def resolve(argv):
    if not any(role in argv for role in ROLES):
        return argv
    status = ["--config", argv[1], "status", "--json", "--keyset", argv[argv.index("--keyset") + 1]]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        keyrotd.cli.main(status)
    keys = json.loads(out.getvalue())["keysets"][0]["keys"]
    keys.sort(key=lambda key: datetime.fromisoformat(key["created_at"]))
    active = next(key["kid"] for key in keys if key["state"] == "active")
    kids = {"@newest": keys[-1]["kid"], "@active": active, "@oldest": keys[0]["kid"]}
    return [kids.get(word, word) for word in argv]


directory, config = sys.argv[1:3]
with contextlib.redirect_stdout(io.StringIO()):  # what a first call loads, loaded once for all
    keyrotd.cli.main(["--config", config, "status", "--json"])
print("ready", flush=True)
children = 0
for line in sys.stdin:
    index, argv = json.loads(line)
    if os.fork():
        children += 1
        continue
    for fd, suffix in ((1, "out"), (2, "err")):
        os.dup2(os.open(f"{directory}/{index}.{suffix}", os.O_WRONLY | os.O_CREAT, 0o600), fd)
    code = 70
    try:
        argv = resolve(argv)
        code = keyrotd.cli.main(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        with open(f"{directory}/{index}.json", "w") as done:
            json.dump({"code": code, "finished": time.time(), "argv": argv[2:]}, done)
        os._exit(code)
for _ in range(children):
    os.wait()
"""


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]  # as released
    ran: tuple[str, ...]  # with the roles resolved to kids
    code: int
    stdout: str
    stderr: str
    released: float  # wall clock
    finished: float

    def transitions(self) -> list[Transition]:
        """The transitions it printed (``exception`` None when it printed none)."""
        return [
            Transition(event, kid, datetime.fromisoformat(at), exception or None)  # type: ignore[arg-type]
            for event, kid, at, exception in TRANSITION.findall(self.stdout)
        ]


class CliForks:
    """The fork server: :meth:`release` one command, then :meth:`results` of them all."""

    def __init__(self, directory: Path, config: Path, env: Mapping[str, str]) -> None:
        directory.mkdir(parents=True)
        self.directory = directory
        self.config = config
        self.released: dict[int, tuple[tuple[str, ...], float]] = {}
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER, str(directory), str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={k: v for k, v in env.items() if not k.startswith("KEYROTD_")},
            text=True,
            start_new_session=True,  # the server and its children: killed together if need be
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "ready\n", (line, self.process.poll())

    def release(self, index: int, *argv: str) -> None:
        """Fork a process that runs ``keyrotd --config CONFIG *argv``."""
        assert self.process.stdin is not None
        command = ["--config", str(self.config), *argv]
        self.process.stdin.write(json.dumps([index, command]) + "\n")
        self.process.stdin.flush()
        self.released[index] = (argv, time.time())

    def results(self, timeout: float) -> list[Result]:
        """Wait (bounded) for every process released; their results in release order."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"CLI processes still running after {timeout}s") from None
        self.kill()  # closes the pipe
        found = []
        for index, (argv, released) in sorted(self.released.items(), key=lambda i: i[1][1]):
            done = json.loads((self.directory / f"{index}.json").read_text())
            found.append(
                Result(
                    argv,
                    tuple(done["argv"]),
                    done["code"],
                    (self.directory / f"{index}.out").read_text(),
                    (self.directory / f"{index}.err").read_text(),
                    released,
                    done["finished"],
                )
            )
        return found

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
