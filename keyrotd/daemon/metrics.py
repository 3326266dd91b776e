"""Prometheus metrics, ``keyrotd_*``, in a registry of their own.

Counters are incremented where things happen (the runners). Everything that depends on the
clock — key ages, seconds to the next transition, keys per state, readiness — is computed at
scrape time from the board's snapshot by :class:`_BoardCollector`, so it is never stale.

No label holds a credential: an observed URL is shown by :func:`public_url` (no query, fragment
or user info), and the families naming admin clients (``keyrotd_admin_requests_total``) are in a
registry of their own, rendered only for a token with a ``status`` scope
(:meth:`Metrics.render`, ``keyrotd.daemon.admin.sees_client_names``).
"""

from __future__ import annotations

import math
import time
import urllib.parse
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from keyrotd import __version__
from keyrotd.daemon.state import Snapshot
from keyrotd.model import KeyState
from keyrotd.propagation import held

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
SIGN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_LIVE = (KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED)


class _BoardCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap, now = self._snapshot(), time.time()
        ready = GaugeMetricFamily(
            "keyrotd_ready",
            "1 when every keyset has a JWKS to serve, as /readyz (storage: keyrotd_storage_up)",
        )
        ready.add_metric([], 1.0 if snap.ready else 0.0)
        keys = GaugeMetricFamily(
            "keyrotd_keys", "Keys per state in the JWKS", labels=["keyset", "state"]
        )
        age = GaugeMetricFamily(
            "keyrotd_active_key_age_seconds",
            "Seconds since the signing key activated",
            labels=["keyset"],
        )
        upcoming = GaugeMetricFamily(
            "keyrotd_next_transition_seconds",
            "Seconds until the keyset next changes by itself (negative: overdue)",
            labels=["keyset"],
        )
        last_read = GaugeMetricFamily(
            "keyrotd_storage_last_success_timestamp_seconds",
            "Unix time of the last successful storage read or write",
            labels=["keyset"],
        )
        storage_up = GaugeMetricFamily(
            "keyrotd_storage_up",
            "1 when the last storage access of the keyset worked",
            labels=["keyset"],
        )
        period = GaugeMetricFamily(
            "keyrotd_rotation_period_seconds",
            "The keyset's rotation_period (alert rules compare key ages with it)",
            labels=["keyset"],
        )
        ahead = GaugeMetricFamily(
            "keyrotd_publish_ahead_seconds",
            "The keyset's publish_ahead: a successor exists that long before it is due",
            labels=["keyset"],
        )
        for name in snap.order:
            health = snap.health.get(name)
            if health is not None and health.last_success is not None:
                last_read.add_metric([name], health.last_success)
            storage_up.add_metric([name], 1.0 if health is not None and health.ready else 0.0)
            published = snap.published.get(name)
            if published is None:
                continue
            policy = published.settings.policy
            period.add_metric([name], policy.rotation_period.total_seconds())
            ahead.add_metric([name], policy.publish_ahead.total_seconds())
            keyset = published.keyset
            for state in _LIVE:
                keys.add_metric([name, state.value], sum(k.state is state for k in keyset.keys))
            active = keyset.active
            if active is not None and active.activates_at is not None:
                age.add_metric([name], now - active.activates_at.timestamp())
            if math.isfinite(published.changes_at):
                upcoming.add_metric([name], published.changes_at - now)
        yield from (ready, keys, age, upcoming, last_read, storage_up, period, ahead)


class HeldGauge(Collector):
    """``keyrotd_activation_held{keyset}`` (observe), from the board at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot], clock: Callable[[], datetime]) -> None:
        self._snapshot, self._clock = snapshot, clock

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "keyrotd_activation_held",
            "1 while a successor is held past its scheduled time awaiting confirmation",
            labels=["keyset"],
        )
        seconds = GaugeMetricFamily(
            "keyrotd_activation_held_seconds",
            "Seconds a successor has been held past its scheduled time (0: none held)",
            labels=["keyset"],
        )
        snap, now = self._snapshot(), self._clock()
        for name in snap.order:
            published = snap.published.get(name)
            if published is not None:
                since = [k.scheduled_at for k in published.keyset.pending if held(k, now)]
                first = min((at for at in since if at is not None), default=None)
                gauge.add_metric([name], 1.0 if since else 0.0)
                seconds.add_metric([name], 0.0 if first is None else (now - first).total_seconds())
        yield gauge
        yield seconds


class _RequestCollector(Collector):
    """``keyrotd_storage_requests_total{operation}``: requests sent to the storage service (AWS
    Secrets Manager: each HTTP attempt, retries included, as billed), read from the backend."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "keyrotd_storage_requests",
            "Requests sent to the storage service, by operation (retries included)",
            labels=["operation"],
        )
        for operation, count in sorted(self._counts().items()):
            family.add_metric([operation], float(count))
        yield family


HTTP_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip
"""Upper bounds (seconds) of ``keyrotd_http_request_duration_seconds``: a JWKS answer takes
microseconds, an admin rotate with RSA key generation seconds."""


class RouteStats:
    """One route's requests on one listener, counted in plain ints on the event loop's thread
    (no lock, no prometheus_client call per request); exported at scrape time."""

    __slots__ = ("buckets", "codes", "total")

    def __init__(self) -> None:
        self.codes = [0] * 6
        """Requests by ``status // 100`` (index 2: 2xx, ... 5: 5xx)."""
        self.buckets = [0] * (len(HTTP_BUCKETS) + 1)
        """Requests by the first bucket whose bound is not below their duration (last: +Inf)."""
        self.total = 0.0

    def count(self, status: int, seconds: float) -> None:
        """One answer (``http.App.answer`` does the same inline, on the hot path)."""
        self.codes[status // 100] += 1
        self.buckets[bisect_left(HTTP_BUCKETS, seconds)] += 1
        self.total += seconds


class HttpStats(Collector):
    """``keyrotd_http_requests_total{listener,route,code}`` and
    ``keyrotd_http_request_duration_seconds{listener,route}``: routes are templates
    (``/keysets/{name}/jwks.json``), never raw paths; codes are classes (``2xx``)."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], RouteStats] = {}

    def route(self, listener: str, template: str) -> RouteStats:
        """The counters of ``template`` on ``listener`` (made once, when the app starts)."""
        return self._routes.setdefault((listener, template), RouteStats())

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "keyrotd_http_requests",
            "HTTP requests answered, by listener, route template and status class",
            labels=["listener", "route", "code"],
        )
        durations = HistogramMetricFamily(
            "keyrotd_http_request_duration_seconds",
            "Time from a request's arrival in the app to its answer, by listener and route",
            labels=["listener", "route"],
        )
        for (listener, route), stats in sorted(self._routes.items()):
            buckets, codes = list(stats.buckets), list(stats.codes)  # one moment's copy
            if not sum(codes):
                continue
            for index, count in enumerate(codes):
                if count:
                    requests.add_metric([listener, route, f"{index}xx"], float(count))
            cumulative, running = [], 0
            for bound, count in zip((*HTTP_BUCKETS, math.inf), buckets, strict=True):
                running += count
                cumulative.append((_bound(bound), float(running)))
            durations.add_metric([listener, route], cumulative, stats.total)
        yield requests
        yield durations


def _bound(value: float) -> str:
    return "+Inf" if value == math.inf else repr(value)


class Metrics:
    """The daemon's metrics; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry(auto_describe=False)
        self._transitions = Counter(
            "keyrotd_transitions",
            "Lifecycle transitions written by this daemon",
            ["keyset", "event"],
            registry=self.registry,
        )
        self._rotations = Counter(
            "keyrotd_rotations",
            "Keys activated by this daemon",
            ["keyset"],
            registry=self.registry,
        )
        self._rotation_failures = Counter(
            "keyrotd_rotation_failures",
            "Failed attempts to write a transition",
            ["keyset"],
            registry=self.registry,
        )
        self._storage_failures = Counter(
            "keyrotd_storage_failures",
            "Failed storage reads and writes",
            ["keyset"],
            registry=self.registry,
        )
        self._storage_rollbacks = Counter(
            "keyrotd_storage_rollbacks",
            "Keyset documents refused for going back to an older revision (G8)",
            ["keyset"],
            registry=self.registry,
        )
        self._notify_dropped = Counter(
            "keyrotd_notify_dropped",
            "sd_notify messages dropped because $NOTIFY_SOCKET was full (its reader stalled)",
            registry=self.registry,
        )
        self.reloads = Counter(
            "keyrotd_config_reloads",
            "Configuration reloads (SIGHUP) by result",
            ["result"],
            registry=self.registry,
        )
        self.admin_registry = CollectorRegistry(auto_describe=False)
        """The families that name admin clients (see the module docstring)."""
        self._admin_requests = Counter(
            "keyrotd_admin_requests",
            "Requests to the admin endpoints by client (or unknown), action and HTTP status",
            ["client", "action", "code"],
            registry=self.admin_registry,
        )
        self._tokens_signed = Counter(
            "keyrotd_tokens_signed",
            "Tokens signed by POST /keysets/{name}/sign",
            ["keyset"],
            registry=self.registry,
        )
        self._sign_seconds = Histogram(
            "keyrotd_sign_seconds",
            "Seconds to check and sign one token of POST /keysets/{name}/sign",
            ["keyset"],
            buckets=SIGN_BUCKETS,
            registry=self.registry,
        )
        self._admin_children: dict[tuple[str, str, int], Counter] = {}
        self._sign_children: dict[str, tuple[Counter, Histogram]] = {}
        info = Gauge("keyrotd_build_info", "keyrotd version", ["version"], registry=self.registry)
        info.labels(__version__).set(1)
        ProcessCollector(namespace="keyrotd", registry=self.registry)  # keyrotd_process_*
        self.registry.register(_BoardCollector(snapshot))
        self.http = HttpStats()
        self.registry.register(self.http)

    def transition(self, keyset: str, event: str) -> None:
        self._transitions.labels(keyset, event).inc()
        if event == "key.activated":
            self._rotations.labels(keyset).inc()

    def rotation_failed(self, keyset: str) -> None:
        self._rotation_failures.labels(keyset).inc()

    def storage_failed(self, keyset: str) -> None:
        self._storage_failures.labels(keyset).inc()

    def storage_rollback(self, keyset: str) -> None:
        self._storage_rollbacks.labels(keyset).inc()

    def notify_dropped(self) -> None:
        self._notify_dropped.inc()

    def admin_request(self, client: str, action: str, status: int) -> None:
        key = (client, action, status)  # a child per label set, looked up once (hot path)
        child = self._admin_children.get(key)
        if child is None:
            child = self._admin_children[key] = self._admin_requests.labels(
                client, action, str(status)
            )
        child.inc()

    def token_signed(self, keyset: str, seconds: float) -> None:
        children = self._sign_children.get(keyset)
        if children is None:
            children = (self._tokens_signed.labels(keyset), self._sign_seconds.labels(keyset))
            self._sign_children[keyset] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, keyset: str) -> None:
        """Show the counters of ``keyset`` at zero before anything happened."""
        self._rotations.labels(keyset)
        self._rotation_failures.labels(keyset)
        self._storage_failures.labels(keyset)
        self._storage_rollbacks.labels(keyset)
        self._tokens_signed.labels(keyset)
        # what an alert counts with increase(): a series first seen at 1 would show no increase
        self._transitions.labels(keyset, "key.retained")

    def count_requests(self, storage: object) -> None:
        """Expose the backend's request counts, if it keeps them (``request_counts()``)."""
        counts = getattr(storage, "request_counts", None)
        if callable(counts):
            self.registry.register(_RequestCollector(counts))

    def render(self, *, client_names: bool = False) -> bytes:
        """The ``/metrics`` body; the admin client families only with ``client_names``."""
        public = generate_latest(self.registry)
        return public + generate_latest(self.admin_registry) if client_names else public


def public_url(url: str) -> str:
    """``url`` as a label or a log line may show it: scheme, host, port and path, never the
    query (a signed URL's ``X-Amz-Signature``), the fragment or user info."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
