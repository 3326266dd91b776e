"""SIGHUP with a keyset left out of the configuration: its JWKS stays served until the restart,
its keys still leave at their times, nothing new is made for it, and ``status`` notes it."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime

import pytest

from keyrotd.lifecycle.planner import view
from keyrotd.model import KeyState
from tests.support.daemon import Daemon
from tests.support.keysets import EVERY_3_SECONDS as POLICY

from .conftest import DaemonFactory
from .test_journal import cli, stored

FAST = {  # a rotation every 3 s: a key expires within the test
    "name": "main",
    "algorithm": "ES256",
    "rotation_period": "3s",
    "publish_ahead": "2s",
    "token_lifetime": "2s",
    "clock_skew": "1s",
    "verifier_cache": "0.5s",
    "issuer": "https://auth.example/main",
}
OTHER = {"name": "other", "algorithm": "EdDSA", "publish_ahead": "1h"}


def kids(daemon: Daemon, path: str) -> set[str]:
    reply = daemon.get(path)
    assert reply.status == 200, (path, reply.status)
    return {key["kid"] for key in reply.json()["keys"]}


@pytest.mark.slow
def test_a_keyset_dropped_on_sighup_stays_served_and_rotates_no_more(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(
        keysets=[FAST, OTHER], server={"refresh_interval": "500ms", "jwks_max_age": "500ms"}
    )
    daemon.start()
    daemon.wait_for(
        lambda: any(e.get("event") == "key.retired" for e in daemon.log_events()), 15, "a rotation"
    )
    head, *blocks = daemon.config.read_text().split("[[keysets]]\n")
    kept = [block for block in blocks if 'name = "main"' not in block]
    assert len(kept) == 1
    daemon.config.write_text(head + "".join("[[keysets]]\n" + block for block in kept))
    daemon.send(signal.SIGHUP)
    daemon.wait_for(
        lambda: any(e.get("event") == "keyset.unconfigured" for e in daemon.log_events()),
        15,
        "keyset.unconfigured",
    )
    warning = next(e for e in daemon.log_events() if e.get("event") == "keyset.unconfigured")
    assert (warning["level"], warning["keyset"]) == ("warning", "main")
    reloaded = len(daemon.log_events())
    at_reload = stored(daemon)
    assert kids(daemon, "/.well-known/jwks.json") == kids(daemon, "/keysets/other/jwks.json")
    issued = "/main/.well-known/jwks.json"  # its issuer's JWKS too (no keyset took the path)
    assert kids(daemon, issued) == kids(daemon, "/keysets/main/jwks.json")
    assert daemon.get("/readyz").json() == {"status": "ready", "keysets": ["other"], "degraded": []}

    time.sleep(7)  # past two more scheduled rotations and an expiry of main
    served = kids(daemon, "/keysets/main/jwks.json")
    now = datetime.now(UTC)
    assert stored(daemon) == at_reload  # nothing written: no key created or activated
    live = {k.kid for k in at_reload.keys}
    retired = {k.kid for k in at_reload.keys if k.state is KeyState.RETIRED}
    expected = {k.kid for k in view(at_reload, POLICY, now).keys}  # the schedule, in memory
    assert served == expected and served <= live - retired  # keys leave at their times (G3, G5)
    later = [e for e in daemon.log_events()[reloaded:] if e.get("keyset") == "main"]
    assert [e for e in later if e.get("event") in ("key.created", "key.activated")] == []

    text = cli(daemon, "status")
    assert "main" in text.splitlines()[-1] and "no longer lists" in text.splitlines()[-1]
    report = json.loads(cli(daemon, "status", "--json"))
    assert report["unconfigured"] == ["main"]
    assert [k["name"] for k in report["keysets"]] == ["other"]

    assert daemon.stop() == 0
    daemon.start()  # the restart is when it goes
    assert daemon.get("/keysets/main/jwks.json").status == 404
