"""``/metrics``: linkctl's figures in the Prometheus text format, through the official client.

One :class:`Metrics` per ``serve`` process holds its own registry (never the global one):

* per-process counters, fed by one-call hooks — :meth:`Metrics.observe_request` (the
  token API, by HTTP status), :meth:`Metrics.observe_outcome` (the in-process keeper of
  ``serve --keeper``, by outcome: given to :class:`reconciler.keeper.Keeper` as
  ``observe``), :meth:`Metrics.timed` (wraps the keeper's token client: refresh latency)
  and :meth:`Metrics.observe_notification` (webhook deliveries);
* figures of the whole store, computed at scrape time by :class:`_StoreCollector`
  (links by status and provider, each link's status, seconds to access-token expiry,
  webhook deliveries waiting), from one read cached for :data:`SNAPSHOT_SECONDS`, so a
  scrape of 10,000 links stays cheap however often Prometheus asks.

Labels are link names, providers, statuses, outcomes and HTTP codes: never a token, key,
secret or URL.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.domain.grants import GrantStatus

if TYPE_CHECKING:
    from reconciler.domain.tokens import ClientConfig, TokenResponse
    from reconciler.keeper import Outcome, TokenClientLike
    from reconciler.secrets import Secret
    from reconciler.store.notifications import LinkState

__all__ = ["CONTENT_TYPE", "SNAPSHOT_SECONDS", "Metrics", "StoreSnapshot"]

log = logging.getLogger("linkctl.server")

CONTENT_TYPE = CONTENT_TYPE_LATEST
SNAPSHOT_SECONDS = 2.0  # how long one read of the store serves scrapes
PROVIDERS = ("google", "microsoft", "custom")
OUTCOMES = ("refreshed", "obtained", "failed", "skipped")
DELIVERY_OUTCOMES = ("delivered", "retry", "given_up")
# Token endpoint round trips: from a fast local provider to a slow one near the timeout.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclasses.dataclass(frozen=True)
class StoreSnapshot:
    """What one scrape shows of the store: every link's state and the webhook backlog."""

    links: Sequence[LinkState]
    backlog: int
    taken_at: float


class Metrics:
    """The registry of one process and its hooks (see the module docstring)."""

    def __init__(
        self,
        read_store: Callable[[], StoreSnapshot],
        *,
        clock: Callable[[], float] = time.time,
        snapshot_seconds: float = SNAPSHOT_SECONDS,
    ) -> None:
        """``read_store`` takes a :class:`StoreSnapshot` (called at most every ``snapshot_seconds``)."""
        # The *_created series double the text of every counter for nothing a query needs.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.token_requests = Counter(
            "linkctl_token_requests",
            "Token API requests answered by this process, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "linkctl_refreshes",
            "Refresh attempts of this process's keeper (serve --keeper), by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.refresh_seconds = Histogram(
            "linkctl_refresh_duration_seconds",
            "Token endpoint round trip of this process's keeper refreshes",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.notifications = Counter(
            "linkctl_notifications",
            "Status webhook deliveries made by this process, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.refreshes.labels(outcome)
        for outcome in DELIVERY_OUTCOMES:
            self.notifications.labels(outcome)
        self.store_collector = _StoreCollector(read_store, clock=clock, cache_seconds=snapshot_seconds)
        self.registry.register(self.store_collector)

    # -- hooks -----------------------------------------------------------------------
    def observe_request(self, status: int) -> None:
        """Count one token API answer by its HTTP status (srv-api calls it once per request)."""
        self.token_requests.labels(str(int(status))).inc()

    def observe_outcome(self, outcome: Outcome) -> None:
        """Count one keeper outcome (``Keeper(observe=metrics.observe_outcome)``)."""
        self.refreshes.labels(outcome.result).inc()

    def observe_notification(self, outcome: str) -> None:
        """Count one webhook delivery outcome (``NotifierThread(observe=...)``)."""
        self.notifications.labels(outcome).inc()

    def timed(self, client: TokenClientLike) -> TokenClientLike:
        """``client`` with its refresh and client-credentials requests timed into the histogram."""
        return _TimedClient(client, self.refresh_seconds)

    # -- exposition ------------------------------------------------------------------
    def render(self) -> bytes:
        """The text exposition of every family (``Content-Type``: :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _TimedClient:
    """A token client whose grant requests are timed (everything else passes through)."""

    def __init__(self, client: TokenClientLike, histogram: Histogram) -> None:
        self._client = client
        self._histogram = histogram

    def refresh(self, config: ClientConfig, refresh_token: Secret) -> TokenResponse:
        """Refresh grant, timed."""
        with self._histogram.time():
            return self._client.refresh(config, refresh_token)

    def client_credentials(self, config: ClientConfig) -> TokenResponse:
        """Client credentials grant, timed."""
        with self._histogram.time():
            return self._client.client_credentials(config)

    def revoke(self, config: ClientConfig, token: Secret, *, token_type_hint: str = "refresh_token") -> None:
        """Revocation (not timed)."""
        self._client.revoke(config, token, token_type_hint=token_type_hint)

    def with_endpoints(self, config: ClientConfig, *, revoking: bool = False) -> ClientConfig:
        """Discovery (not timed)."""
        return self._client.with_endpoints(config, revoking=revoking)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _StoreCollector(Collector):
    """Families computed from the store at scrape time, from a snapshot cached briefly."""

    def __init__(
        self, read_store: Callable[[], StoreSnapshot], *, clock: Callable[[], float], cache_seconds: float
    ) -> None:
        self._read = read_store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._snapshot: StoreSnapshot | None = None

    def snapshot(self) -> StoreSnapshot:
        """The cached snapshot, read again when older than the cache time (one reader at a time)."""
        with self._lock:
            now = self._clock()
            if self._snapshot is None or now - self._snapshot.taken_at >= self._cache_seconds:
                self._snapshot = self._read()
            return self._snapshot

    def describe(self) -> Iterator[Metric]:
        """The families without samples (registering must not read the store)."""
        yield GaugeMetricFamily("linkctl_store_up", "1 when the last read of the store for /metrics worked")
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The families with samples from the current snapshot (none, and store_up 0, if unreadable)."""
        up = GaugeMetricFamily("linkctl_store_up", "1 when the last read of the store for /metrics worked")
        try:
            snapshot: StoreSnapshot | None = self.snapshot()
        except Exception as error:  # the counters of this process are still worth a scrape
            log.warning("/metrics cannot read the store: %s", getattr(error, "message", type(error).__name__))
            snapshot = None
        up.add_metric([], 0 if snapshot is None else 1)
        yield up
        yield from self._families(snapshot, self._clock())

    @staticmethod
    def _families(snapshot: StoreSnapshot | None = None, now: float = 0.0) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "linkctl_links", "Links in the store, by grant status and provider", labels=["status", "provider"]
        )
        status = GaugeMetricFamily(
            "linkctl_link_status", "1 for each link's current grant status", labels=["link", "status"]
        )
        expiry = GaugeMetricFamily(
            "linkctl_access_token_expiry_seconds",
            "Seconds until each link's access token expires (negative: expired)",
            labels=["link"],
        )
        backlog = GaugeMetricFamily(
            "linkctl_notifications_pending", "Status webhook deliveries still to make (all processes)"
        )
        if snapshot is not None:
            counts = Tally((s.status or "unknown", s.provider) for s in snapshot.links)
            statuses = [str(s) for s in GrantStatus]
            providers = sorted({*PROVIDERS, *(p for _, p in counts)})
            for name in [*statuses, *sorted({st for st, _ in counts} - set(statuses))]:
                for provider in providers:
                    by_status.add_metric([name, provider], counts.get((name, provider), 0))
            for state in snapshot.links:
                status.add_metric([state.name, state.status or "unknown"], 1)
                if state.access_expires_at is not None:
                    expiry.add_metric([state.name], round(state.access_expires_at - now, 3))
            backlog.add_metric([], snapshot.backlog)
        yield from (by_status, status, expiry, backlog)
