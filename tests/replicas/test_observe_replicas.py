"""Propagation-gated activation across three replicas on AWS storage (docs/guarantees.md).

Three ``keyrotd run`` replicas share one keyset on moto's Secrets Manager; each observes the
three replicas' public JWKS URLs and one nginx (honouring keyrotd's Cache-Control) in front of
the first. One replica is stopped: its URL stops answering, so a successor published meanwhile
is held by the other two, however late; once it is back every replica, the CLI and every
issuer agree on the one activation time that the confirming replica wrote, and switch then.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_observe import NGINX, Nginx, signing_key, status
from tests.support.daemon import Daemon
from tests.support.moto import (
    REGION,
    MotoServer,
    fake_aws_environment,
)
from tests.support.waiting import wait_for

from .cluster import make_replicas

pytestmark = pytest.mark.slow

KEYSET: dict[str, object] = {
    "name": "main",
    "algorithm": "ES256",
    "rotation_period": "3s",
    "publish_ahead": "3s",
    "token_lifetime": "2s",
    "clock_skew": "0s",
    "verifier_cache": "1s",
}
SERVER = {"refresh_interval": "1s", "jwks_max_age": "1s"}


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[list[Daemon], list[str]]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    with fake_aws_environment():
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYROTD_", "NOTIFY_"))}
        moto = MotoServer()
        moto.start()
        prefix = f"observe-{uuid.uuid4().hex[:12]}/"
        storage = {
            "type": "aws",
            "secret_prefix": prefix,
            "region": REGION,
            "endpoint_url": moto.url,
        }
        daemons = make_replicas(
            tmp_path, 3, storage=storage, server=SERVER, keysets=[KEYSET], env=env
        )
        proxy = Nginx(tmp_path / "nginx", daemons[0].port, honour_origin=True)
        urls = [f"http://127.0.0.1:{d.port}/.well-known/jwks.json" for d in daemons] + [proxy.url]
        for daemon in daemons:
            daemon.config.write_text(daemon.config.read_text() + f"observe = {json.dumps(urls)}\n")
        try:
            for daemon in daemons:
                daemon.start(wait=False)
            for daemon in daemons:
                daemon.wait_ready()
            yield daemons, urls
        finally:
            for daemon in daemons:
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.stop()
            proxy.close()
            moto.stop()


def awaiting(report: dict[str, Any], url: str) -> dict[str, Any] | None:
    """The pending key of a ``status --json`` report that ``url`` has not served yet."""
    for key in report["keys"]:
        progress = key.get("propagation")
        if key["state"] == "pending" and progress and progress["confirmed_at"] is None:
            lacking = [u["url"] for u in progress["urls"] if u["lacking_since"] is not None]
            if url in lacking:
                return key  # type: ignore[no-any-return]
    return None


def test_a_stopped_replica_holds_activation_until_it_is_back(
    replicas: tuple[list[Daemon], list[str]],
) -> None:
    daemons, urls = replicas
    down = daemons[2]
    down.stop()
    successor = wait_for(lambda: awaiting(status(daemons[0]), urls[2]), 20, "a held successor")
    kid = successor["kid"]
    scheduled = datetime.fromisoformat(successor["propagation"]["scheduled_at"]).timestamp()
    active = signing_key(daemons[0])["active"]["kid"]
    wait_for(lambda: time.time() > scheduled + 3, 10, "well past the scheduled time", every=0.2)
    for daemon in daemons[:2]:
        schedule = signing_key(daemon)
        assert schedule["active"]["kid"] == active
        assert schedule["next"]["kid"] == kid and schedule["next_activates_at"] is None
    report = status(daemons[1])
    assert report["held"]["kid"] == kid and urls[2] in report["held"]["lacking"]
    assert report["next_activates_at"] is None
    held_events = [
        e for d in daemons[:2] for e in d.log_events() if e.get("event") == "key.activation_held"
    ]
    assert any(e["kid"] == kid and urls[2] in e["urls"] for e in held_events)

    down.start()
    confirmed = wait_for(
        lambda: (s := signing_key(daemons[0]))["next_activates_at"] and s, 20, "confirmation"
    )
    assert confirmed["next"]["kid"] == kid
    at = confirmed["next_activates_at"]
    for daemon in daemons:  # every replica, the CLI: one time (they read it within a refresh)
        wait_for(lambda d=daemon: signing_key(d)["next_activates_at"] == at, 3, "agreement")
    assert status(daemons[1])["next_activates_at"] == at
    confirmers = [
        d
        for d in daemons
        for e in d.log_events()
        if e.get("event") == "key.confirmed" and e["kid"] == kid
    ]
    assert len(confirmers) == 1  # one replica won the compare-and-swap; the others read it
    switch = datetime.fromisoformat(at).timestamp()
    for daemon in daemons:
        wait_for(lambda d=daemon: signing_key(d)["active"]["kid"] == kid, 20, "the switch")
        assert time.time() >= switch
    [key] = [k for k in status(daemons[2])["keys"] if k["kid"] == kid]
    assert key["state"] == "active" and key["activates_at"] == at  # the time never moved
