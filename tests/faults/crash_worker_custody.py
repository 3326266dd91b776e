"""The crash worker of ``crash_worker.py`` writing a keyset in PKCS#11 custody.

Run as a script: ``python crash_worker_custody.py CONFIG_JSON``; the configuration adds
``module``, ``token_label`` and ``pin`` (the token of the test, found through the inherited
``SOFTHSM2_CONF``). Same zygote, same line protocol; each forked writer opens the token itself
(a PKCS#11 library must not be initialised before a fork) and logs in, prints ``L``, then
loops ``rotate --now`` / ``rotate`` / tick, making its keys in the token, until SIGKILLed.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import crash_worker as base  # this directory is the script's sys.path[0]
import pkcs11  # noqa: F401  (imported once in the zygote; the library is initialised per child)

from keyrotd.custody.interface import CustodyUnavailableError
from keyrotd.custody.pkcs11 import Pkcs11Custody
from keyrotd.model import Policy
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter


def writer(config: dict[str, Any], seed: int, point: str | None, count: int) -> None:
    if point is not None:
        raise ValueError("the custody worker dies at random moments only")
    rng = random.Random(seed)
    custody = Pkcs11Custody(Path(config["module"]), config["token_label"], config["pin"])
    policy = Policy(*(timedelta(seconds=s) for s in config["policy"]))
    spec = KeysetSpec("default", config["algorithm"], 2048, policy, custody="pkcs11")
    storage = FileStorage(Path(config["path"]), None)
    manager = KeysetWriter(storage, spec, base.sped_up_clock(config), custody=custody)
    # SoftHSM2's file store rewrites its token.object in place at every login: a process killed
    # then leaves the token uninitialised (docs/issuers.md). Log in before the kill may come.
    custody.held("default")
    base.emit("L")
    for seq in range(1_000_000):
        action = rng.choices(base.ACTIONS, base.WEIGHTS)[0]
        base.emit(f"I {seq} {action}")
        try:
            outcome = manager.apply(base.command(action))
        except CustodyUnavailableError as error:
            # A temporary error (the token is being written by a writer killed a moment ago):
            # the daemon retries it; so does this writer, after saying so.
            base.emit(f"U {seq} {error.message}")
            base.emit(f"D {seq}")
            time.sleep(0.01)
            continue
        for t in outcome.transitions:
            base.emit(f"T {seq} {t.event} {t.kid} {t.at.isoformat()} {t.exception or '-'}")
        base.emit(f"D {seq}")
        time.sleep(rng.uniform(0, float(config["pause"])))


if __name__ == "__main__":
    import json

    base.writer = writer
    base.zygote(json.loads(sys.argv[1]))
