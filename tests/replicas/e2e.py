"""The daemon issue's end-to-end verifier run, on three replicas sharing AWS storage.

Reused as they are from ``tests/daemon/test_rotation_e2e.py``: the keyset and its timings,
``Run`` (the issuer that signs a token every 100 ms with the key from ``/keysets/e2e/signing-key``
and switches to ``next`` at ``next_activates_at`` from the schedule it holds; the two verifier
loops, one right after signing, one just before expiry; the failures and counts) and ``Verifier``
(``PyJWKClient`` caching for the longest the policy allows and never refetching on an unknown
kid). What that module keeps inside its test function (start the threads, SIGKILL the daemon
halfway just after an activation, start it again, wait for the rotations, stop) is repeated here
in :func:`drive`, with the issuer on replica 0 and each verifier on another replica, so that a
token signed with one replica's key is verified with another replica's JWKS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.daemon.test_rotation_e2e import KEYSET, ROTATIONS, Run, Verifier
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for

NAME = str(KEYSET["name"])


@dataclass(frozen=True)
class Drive:
    """What :func:`drive` did, in wall-clock time (epoch seconds)."""

    run: Run
    start: float
    end: float
    killed: float
    back: float


def drive(replicas: Sequence[Daemon]) -> Drive:
    """Issue and verify across ``replicas`` for ``ROTATIONS`` rotations; SIGKILL the issuer's
    replica halfway, just after an activation, and start it again."""
    issuer, fresh, before_expiry = replicas[0], replicas[1], replicas[2]
    run = Run(issuer)
    run.refresh_schedule()
    assert run.schedule is not None, "the issuer's replica has no signing key"
    threads = [
        threading.Thread(target=run.issue),
        threading.Thread(target=run.verify_fresh, args=(Verifier(jwks_url(fresh)),)),
        threading.Thread(
            target=run.verify_before_expiry, args=(Verifier(jwks_url(before_expiry)),)
        ),
    ]
    start = time.time()
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(run.signed) >= ROTATIONS // 2, 60, "half of the rotations")
        activation = wait_for(run.next_activation, 10, "a scheduled activation")
        wait_for(lambda: time.time() > activation + 0.2, 10, "the activation")
        killed = time.time()
        issuer.kill()
        issuer.start()
        back = time.time()
        wait_for(lambda: len(run.signed) >= ROTATIONS + 1, 90, f"{ROTATIONS} rotations")
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(30)
    return Drive(run, start, time.time(), killed, back)


def jwks_url(replica: Daemon) -> str:
    return f"http://127.0.0.1:{replica.port}/keysets/{NAME}/jwks.json"
