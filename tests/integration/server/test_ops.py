"""``/healthz``, ``/readyz``, ``/metrics`` and status webhooks of a real ``linkctl serve --keeper``.

The store holds links authorized at the real oidc-provider; one of them has its refresh
token revoked there. ``serve --keeper`` refreshes both: the counters and the latency
histogram come from its keeper, the token API counter from real requests, the store
gauges from the store, each family read back with prometheus_client's own text parser;
the revoked link turns ``needs_authorization`` and serve's notifier POSTs that change,
signed, to a real receiver. Readiness turns 503 when the store's schema is newer than
this linkctl, and when the store file vanishes (never re-created by the probe).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from reconciler.domain.notify import NotifyTargetDecl, target_origin
from reconciler.oauth.client import TokenClient
from reconciler.secrets import Secret
from reconciler.services.notify import Notifier, verify
from reconciler.store.schema import load_migrations
from tests.support.oracle import OidcServer
from tests.support.oracle_links import add_authorized_links, open_store, revoke_refresh_token, state_env
from tests.support.server import Served, create_key, serve
from tests.support.webhooks import Receiver

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
HOOK_KEY = "ops-test-webhook-signing-key-01"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _families(text: str) -> dict[str, Samples]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        samples = found.setdefault(f"{family.name}:{family.type}", {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _scrape_until(served: Served, ready: str, timeout: float = 20) -> str:
    """/metrics once ``ready`` appears in it (the in-process keeper works meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        text = served.get("/metrics").text
        if ready in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_serve_keeper_metrics_and_webhooks(oracle: OidcServer, client: TokenClient, tmp_path: Path) -> None:
    env = state_env(tmp_path)
    env["LINKCTL_NOTIFY_INTERVAL"] = "0.2"
    with Receiver().running() as receiver:
        with open_store(env) as store:
            registered = add_authorized_links(oracle, store, ["crm", "erp"], client)
            decl = NotifyTargetDecl(Secret(receiver.url), Secret(HOOK_KEY), target_origin(receiver.url))
            store.put_notify_targets([decl], actor="test", now=time.time())
            Notifier(store, None, actor="test").detect()  # the baseline: both healthy
            erp = store.get_grant("erp", with_tokens=True)
            assert erp is not None and erp.refresh_token is not None
            revoke_refresh_token(oracle, registered, erp.refresh_token)
        conn = sqlite3.connect(tmp_path / "state.db")
        with conn:  # both due now, for the keeper inside serve
            conn.execute("UPDATE grants SET next_refresh_at = 0, due_at = 0")
        conn.close()
        key = create_key(env, "--links", "*")
        with serve(env, "--keeper") as served:
            assert served.get("/healthz").json() == {"status": "ok"}
            ready = served.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            text = _scrape_until(served, 'linkctl_refreshes_total{outcome="failed"} 1.0')
            assert served.get("/v1/links/crm/token", key=key).status_code == 200
            assert served.get("/v1/links/crm/token").status_code == 401
            assert served.get("/v1/links/erp/token", key=key).status_code == 409
            text = served.get("/metrics").text
            (post,) = receiver.wait_for(1)
            log = served.log()
    families = _families(text)
    for name, kind in FAMILIES.items():
        assert f"{name}:{kind}" in families, name
    requests = families["linkctl_token_requests:counter"]
    for status in ("200", "401", "409"):
        assert requests[("linkctl_token_requests_total", (("status", status),))] == 1, requests
    refreshes = families["linkctl_refreshes:counter"]
    assert refreshes[("linkctl_refreshes_total", (("outcome", "refreshed"),))] == 1
    assert refreshes[("linkctl_refreshes_total", (("outcome", "failed"),))] == 1
    latency = families["linkctl_refresh_duration_seconds:histogram"]
    assert latency[("linkctl_refresh_duration_seconds_count", ())] == 2
    assert 0 < latency[("linkctl_refresh_duration_seconds_sum", ())] < 10
    links = families["linkctl_links:gauge"]
    assert links[("linkctl_links", (("provider", "custom"), ("status", "healthy")))] == 1
    assert links[("linkctl_links", (("provider", "custom"), ("status", "needs_authorization")))] == 1
    assert links[("linkctl_links", (("provider", "google"), ("status", "healthy")))] == 0
    status = families["linkctl_link_status:gauge"]
    assert status[("linkctl_link_status", (("link", "erp"), ("status", "needs_authorization")))] == 1
    expiry = families["linkctl_access_token_expiry_seconds:gauge"]
    assert 40 < expiry[("linkctl_access_token_expiry_seconds", (("link", "crm"),))] <= 60
    assert families["linkctl_store_up:gauge"][("linkctl_store_up", ())] == 1
    # The webhook came from serve's own notifier, signed with the declared key.
    assert verify(
        HOOK_KEY,
        post.headers["X-Linkctl-Timestamp"],
        post.body,
        post.headers["X-Linkctl-Signature"],
        now=time.time(),
    )
    body = post.json
    assert (body["link"], body["old_status"], body["new_status"]) == ("erp", "healthy", "needs_authorization")
    # No secret in the scrape, the webhook or the server's log.
    secrets = [key, HOOK_KEY]
    assert registered.client_secret is not None
    secrets.append(registered.client_secret.reveal())
    with open_store(env) as store:
        for name in ("crm", "erp"):
            grant = store.get_grant(name, with_tokens=True)
            assert grant is not None and grant.access_token is not None
            secrets.append(grant.access_token.reveal())
            if grant.refresh_token is not None:
                secrets.append(grant.refresh_token.reveal())
    for where, data in (("/metrics", text), ("the webhook", post.body.decode()), ("the log", log)):
        assert not [s[:6] for s in secrets if s in data], where


def test_readyz_turns_503_for_a_newer_schema_and_a_vanished_store(tmp_path: Path) -> None:
    env = state_env(tmp_path)
    open_store(env).close()
    db = tmp_path / "state.db"
    with serve(env) as served:
        assert served.get("/readyz").status_code == 200
        conn = sqlite3.connect(db)
        with conn:
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (len(load_migrations()) + 1,)
            )
        conn.close()
        newer = served.get("/readyz")
        assert newer.status_code == 503 and newer.headers["cache-control"] == "no-store"
        assert newer.json()["status"] == "not_ready" and "upgrade linkctl" in newer.json()["reason"]
        db.rename(tmp_path / "moved.db")
        for _ in range(3):  # whichever thread answers: not ready, and the file is not created again
            gone = served.get("/readyz")
            assert gone.status_code == 503 and gone.json()["status"] == "not_ready", gone.text
        assert not db.exists()
        assert served.get("/healthz").status_code == 200  # alive, only not ready
        scrape = served.get("/metrics")
        assert scrape.status_code == 200  # this process's counters still scrape
        assert _families(scrape.text)["linkctl_store_up:gauge"][("linkctl_store_up", ())] == 0


def test_a_bad_notify_setting_stops_serve_and_keeper_before_they_start(tmp_path: Path) -> None:
    from tests.support.server import run_linkctl

    env = state_env(tmp_path)
    for command, var, value in (
        (("serve", "--listen", "127.0.0.1:0"), "LINKCTL_NOTIFY_INTERVAL", "soon"),
        (("keeper", "--once"), "LINKCTL_NOTIFY_MAX_ATTEMPTS", "0"),
    ):
        done = run_linkctl({**env, var: value}, *command)
        assert done.returncode == 3, done.stderr
        assert done.stderr.startswith(f"{var}: error:") or f"\n{var}: error:" in done.stderr
        assert "Traceback" not in done.stderr
