"""``/healthz``, ``/readyz`` and ``/metrics`` of ``linkctl serve`` over a real store and the oracle.

The families are read back with prometheus_client's own text parser; the keeper that feeds
the refresh counters and the latency histogram is the real one, refreshing at the real
oidc-provider, observed through the hooks ``serve --keeper`` gives it.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.server import ops
from reconciler.settings import Settings
from reconciler.store import open_store as open_by_url
from reconciler.store.base import Store
from reconciler.store.schema import load_migrations
from tests.support.oracle import OidcServer
from tests.support.oracle_links import add_authorized_links, open_store, state_env

FAMILIES = {
    "linkctl_token_requests": "counter",
    "linkctl_refreshes": "counter",
    "linkctl_refresh_duration_seconds": "histogram",
    "linkctl_notifications": "counter",
    "linkctl_links": "gauge",
    "linkctl_link_status": "gauge",
    "linkctl_access_token_expiry_seconds": "gauge",
    "linkctl_notifications_pending": "gauge",
    "linkctl_store_up": "gauge",
}


class Offset:
    """Real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _client(env: dict[str, str], clock: Offset) -> tuple[TestClient, ops.Operations]:
    settings = Settings.from_env(env)
    # As serve does: the stores of request threads never create or migrate (create=False).
    operations = ops.Operations(
        lambda: open_by_url(settings, notice=lambda _: None, create=False), actor="t", clock=clock
    )
    app = Starlette(routes=ops.routes())
    app.state.operations = operations
    return TestClient(app), operations


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], TestClient, ops.Operations, Offset]]:
    env = state_env(tmp_path)
    open_store(env).close()
    clock = Offset()
    client, operations = _client(env, clock)
    with client:
        yield env, client, operations, clock
    operations.stop()


def _families(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    found: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = found.setdefault(f"{family.name}:{family.type}", {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_healthz_and_readyz_when_all_is_well(served: tuple) -> None:  # type: ignore[type-arg]
    _, client, _, _ = served
    alive = client.get("/healthz")
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "schema_version": len(load_migrations())}
    assert ready.headers["cache-control"] == "no-store"


def test_readyz_is_503_for_a_newer_schema_and_for_a_vanished_store(served: tuple) -> None:  # type: ignore[type-arg]
    env, client, _, _ = served
    assert client.get("/readyz").status_code == 200
    db = Path(env["LINKCTL_STATE"].removeprefix("sqlite:///"))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (len(load_migrations()) + 1,))
    conn.close()
    newer = client.get("/readyz")
    assert newer.status_code == 503
    assert newer.json()["status"] == "not_ready" and "upgrade linkctl" in newer.json()["reason"]
    db.rename(db.with_suffix(".moved"))
    gone = client.get("/readyz")
    assert gone.status_code == 503 and "is gone" in gone.json()["reason"]
    again = client.get("/readyz")  # opened anew, and never created again
    assert again.status_code == 503 and "not ready" in again.json()["reason"]
    assert not db.exists()
    assert client.get("/healthz").status_code == 200  # alive, just not ready
    scrape = client.get("/metrics")  # counters still served, the store marked down
    assert scrape.status_code == 200
    assert _families(scrape.text)["linkctl_store_up:gauge"][("linkctl_store_up", ())] == 0


def test_metrics_families_from_the_keeper_the_api_and_the_store(
    served: tuple,  # type: ignore[type-arg]
    oracle: OidcServer,
    client: TokenClient,
) -> None:
    env, http, operations, clock = served
    store: Store = open_store(env)
    registered = add_authorized_links(oracle, store, ["crm", "erp"], client)
    clock.offset += 61  # the 60 s access tokens are due
    runner = keeper.Keeper(
        store,
        operations.timed_client(client),
        clock=clock,
        rng=random.Random(1),
        observe=operations.keeper_observer(),
    )
    assert sorted(runner.run_once().refreshed) == ["crm", "erp"]
    for status in (200, 200, 401, 409):
        operations.observe_request(status)
    scrape = http.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    families = _families(scrape.text)
    for name, kind in FAMILIES.items():
        assert f"{name}:{kind}" in families, name
    assert families["linkctl_token_requests:counter"] == {
        ("linkctl_token_requests_total", (("status", "200"),)): 2,
        ("linkctl_token_requests_total", (("status", "401"),)): 1,
        ("linkctl_token_requests_total", (("status", "409"),)): 1,
    }
    refreshes = families["linkctl_refreshes:counter"]
    assert refreshes[("linkctl_refreshes_total", (("outcome", "refreshed"),))] == 2
    assert refreshes[("linkctl_refreshes_total", (("outcome", "failed"),))] == 0
    latency = families["linkctl_refresh_duration_seconds:histogram"]
    assert latency[("linkctl_refresh_duration_seconds_count", ())] == 2
    assert 0 < latency[("linkctl_refresh_duration_seconds_sum", ())] < 10
    links = families["linkctl_links:gauge"]
    assert links[("linkctl_links", (("provider", "custom"), ("status", "healthy")))] == 2
    assert links[("linkctl_links", (("provider", "google"), ("status", "needs_authorization")))] == 0
    status = families["linkctl_link_status:gauge"]
    assert status[("linkctl_link_status", (("link", "crm"), ("status", "healthy")))] == 1
    expiry = families["linkctl_access_token_expiry_seconds:gauge"]
    # The new 60 s tokens, on the clock the keeper and the scrape share.
    assert 50 < expiry[("linkctl_access_token_expiry_seconds", (("link", "crm"),))] <= 60
    assert families["linkctl_notifications_pending:gauge"][("linkctl_notifications_pending", ())] == 0
    # Nothing secret in any label or value.
    assert registered.client_secret is not None
    secrets = [registered.client_secret.reveal()]
    for name in ("crm", "erp"):
        grant = store.get_grant(name, with_tokens=True)
        assert grant is not None and grant.access_token and grant.refresh_token
        secrets += [grant.access_token.reveal(), grant.refresh_token.reveal()]
    assert not [s for s in secrets if s in scrape.text]
    # The store is read at most every 2 s: a deleted link shows until the snapshot ages.
    with store.write(expected_serial=None, actor="t") as tx:
        tx.delete_link("erp")
    assert 'link="erp"' in http.get("/metrics").text
    clock.offset += 2.5
    assert 'link="erp"' not in http.get("/metrics").text
    store.close()
