"""``keyrotd_http_requests_total`` and ``keyrotd_http_request_duration_seconds`` of a running
daemon: route templates (never a raw path, keyset name or query), status classes, a histogram
whose counts agree with the requests made, and every family declared before its samples."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon

from .conftest import DaemonFactory

KEYSETS: list[dict[str, object]] = [
    {"name": "main", "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"},
    {"name": "second", "algorithm": "ES256", "rotation_period": "2h", "publish_ahead": "30m"},
]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(daemon: Daemon) -> Samples:
    text = daemon.get("/metrics").body.decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status_class(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(keysets=KEYSETS).start()
    before = samples(daemon)
    for _ in range(3):
        assert daemon.get("/keysets/main/jwks.json?cache-buster=1").status == 200
    assert daemon.get("/keysets/second/jwks.json").status == 200
    assert daemon.get("/keysets/nope/jwks.json").status == 404
    assert daemon.get("/.well-known/jwks.json").status == 200
    assert daemon.get("/secret/path?token=abc").status == 404
    assert daemon.admin("GET", "/keysets/main/signing-key").status == 200
    assert daemon.admin("GET", "/keysets/main/signing-key", token="wrong").status == 401
    after = samples(daemon)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total, jwks = "keyrotd_http_requests_total", "/keysets/{name}/jwks.json"
    assert grew(total, listener="public", route=jwks, code="2xx") == 4
    assert grew(total, listener="public", route=jwks, code="4xx") == 1
    assert grew(total, listener="public", route="/.well-known/jwks.json", code="2xx") == 1
    assert grew(total, listener="public", route="other", code="4xx") == 1
    signing = "/keysets/{name}/signing-key"
    assert grew(total, listener="public", route=signing, code="2xx") == 1
    assert grew(total, listener="public", route=signing, code="4xx") == 1

    count = "keyrotd_http_request_duration_seconds_count"
    assert grew(count, listener="public", route=jwks) == 5
    bucket = "keyrotd_http_request_duration_seconds_bucket"
    inf = value(after, bucket, listener="public", route=jwks, le="+Inf")
    assert inf == value(after, count, listener="public", route=jwks)
    assert value(after, bucket, listener="public", route=jwks, le="0.1") == inf  # fast answers

    routes = {
        dict(labels).get("route") for name, labels in after if name.startswith("keyrotd_http")
    }
    assert routes <= {
        "/.well-known/jwks.json",
        jwks,
        signing,
        "/metrics",
        "/readyz",
        "other",
    }, routes


def test_every_family_is_declared_before_its_first_sample(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(keysets=KEYSETS).start()
    daemon.get("/keysets/main/jwks.json")
    declared: set[str] = set()
    for line in daemon.get("/metrics").body.decode().splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0]  # type: ignore[index]
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert name in declared or family in declared, line


def test_policy_gauges_for_the_alert_rules(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(keysets=KEYSETS).start()
    found = samples(daemon)
    assert value(found, "keyrotd_rotation_period_seconds", keyset="second") == 7200
    assert value(found, "keyrotd_publish_ahead_seconds", keyset="second") == 1800
    assert ("keyrotd_activation_held_seconds", frozenset({("keyset", "main")})) in found
    assert value(found, "keyrotd_activation_held_seconds", keyset="main") == 0
