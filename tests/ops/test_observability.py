"""deploy/prometheus and deploy/grafana: the alert rules pass ``promtool check rules`` and their
unit tests (``promtool test rules``: every alert fires in at least one), and every metric a rule
or a dashboard panel uses is in the ``/metrics`` of a real daemon (AWS storage on moto, so that
the storage request counter is there too)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.moto import AWS_TEST_ENVIRONMENT, REGION, moto_endpoint

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "keyrotd-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "keyrotd-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "keyrotd.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)

# Metrics a rule or panel may use before the daemon has them (none now: the test below fails for
# a name on it that the daemon already has).
NOT_YET_MERGED: frozenset[str] = frozenset()


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    return [rule["expr"] for rule in rules()] + queries


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\bkeyrotd_[a-z0-9_]+", expression))


def promtool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMTOOL), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RULES.parent,
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_promtool_runs_the_unit_tests_of_the_rules() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_fires_in_at_least_one_unit_test() -> None:
    tested = yaml.safe_load(RULE_TESTS.read_text())
    assert tested["rule_files"] == [RULES.name]
    fired = {
        case["alertname"]
        for test in tested["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tested["tests"]
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    alerts = {rule["alert"] for rule in rules()}
    assert fired == alerts and quiet == alerts  # each also checked quiet before its incident


@pytest.fixture(scope="module")
def aws_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with moto_endpoint() as url:
        daemon = make_daemon(tmp_path_factory.mktemp("metrics"), env=AWS_TEST_ENVIRONMENT)
        text = daemon.config.read_text()
        storage = (
            f'[storage]\ntype = "aws"\nregion = "{REGION}"\nendpoint_url = "{url}"\n'
            'secret_prefix = "keyrotd-metrics/"\n'
        )
        daemon.config.write_text(re.sub(r"\[storage\]\npath = [^\n]*\n", storage, text))
        daemon.start()
        daemon.get("/.well-known/jwks.json")
        try:
            yield daemon
        finally:
            daemon.stop()


def exposed(daemon: Daemon) -> set[str]:
    """Every series name ``/metrics`` declares, with a histogram's and a counter's suffixes."""
    names: set[str] = set()
    # as Prometheus scrapes it: with a token of a status scope, which sees the admin families too
    answer = daemon.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    for line in answer.body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total")
            names |= {name, base}
            if kind == "counter":
                names.add(base + "_total")
            if kind == "histogram":
                names |= {base + "_bucket", base + "_count", base + "_sum"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_of_the_rules_and_dashboard_is_in_a_real_daemons_metrics(
    aws_daemon: Daemon,
) -> None:
    used = set().union(*(metric_names(expression) for expression in expressions()))
    assert {"keyrotd_http_requests_total", "keyrotd_storage_requests_total"} <= used
    have = exposed(aws_daemon)
    missing = used - have - NOT_YET_MERGED
    assert not missing, f"used by deploy/ but not in /metrics: {sorted(missing)}"
    merged = NOT_YET_MERGED & have
    assert not merged, f"in /metrics now: remove {sorted(merged)} from NOT_YET_MERGED"


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "keyrotd" and dashboard["refresh"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Active key age", "Next transition", "Storage requests", "JWKS requests"):
        assert wanted in titles
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for used in re.findall(r"\$(\w+)", target["expr"]):
                assert used in variables or used.startswith("__"), (panel["title"], used)
