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
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keyrotd import __version__
from keyrotd.daemon.state import Snapshot
from keyrotd.model import KeyState
from keyrotd.propagation import held

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
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
        for name in snap.order:
            health = snap.health.get(name)
            if health is not None and health.last_success is not None:
                last_read.add_metric([name], health.last_success)
            storage_up.add_metric([name], 1.0 if health is not None and health.ready else 0.0)
            published = snap.published.get(name)
            if published is None:
                continue
            keyset = published.keyset
            for state in _LIVE:
                keys.add_metric([name, state.value], sum(k.state is state for k in keyset.keys))
            active = keyset.active
            if active is not None and active.activates_at is not None:
                age.add_metric([name], now - active.activates_at.timestamp())
            if math.isfinite(published.changes_at):
                upcoming.add_metric([name], published.changes_at - now)
        yield from (ready, keys, age, upcoming, last_read, storage_up)


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
        snap, now = self._snapshot(), self._clock()
        for name in snap.order:
            published = snap.published.get(name)
            if published is not None:
                holding = any(held(k, now) for k in published.keyset.pending)
                gauge.add_metric([name], 1.0 if holding else 0.0)
        yield gauge


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
        info = Gauge("keyrotd_build_info", "keyrotd version", ["version"], registry=self.registry)
        info.labels(__version__).set(1)
        ProcessCollector(namespace="keyrotd", registry=self.registry)  # keyrotd_process_*
        self.registry.register(_BoardCollector(snapshot))

    def transition(self, keyset: str, event: str) -> None:
        self._transitions.labels(keyset, event).inc()
        if event == "key.activated":
            self._rotations.labels(keyset).inc()

    def rotation_failed(self, keyset: str) -> None:
        self._rotation_failures.labels(keyset).inc()

    def storage_failed(self, keyset: str) -> None:
        self._storage_failures.labels(keyset).inc()

    def notify_dropped(self) -> None:
        self._notify_dropped.inc()

    def admin_request(self, client: str, action: str, status: int) -> None:
        self._admin_requests.labels(client, action, str(status)).inc()

    def watch(self, keyset: str) -> None:
        """Show the counters of ``keyset`` at zero before anything happened."""
        self._rotations.labels(keyset)
        self._rotation_failures.labels(keyset)
        self._storage_failures.labels(keyset)

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
