"""Audit events of a grant's life against the real oidc-provider: authorized, status changed, revoked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.settings import Settings
from reconciler.store import open_store
from tests.conftest import ROOT
from tests.integration.test_oauth_cli import free_port, put_link, settings, start_cli, stored_tokens
from tests.support.oracle import OidcServer

__all__ = ["settings"]  # the fixture, shared with test_oauth_cli


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LINKCTL_STATE": settings.state_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _events(settings: Settings) -> list[dict[str, Any]]:
    result = _cli(settings, "state", "events", "-o", "json")
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)["events"]
    return events


def test_authorize_refresh_failure_and_revocation_are_audited(
    oracle: OidcServer, settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.setenv("LINKCTL_ACTOR", "alice@ops")
    registered = oracle.register_client(redirect_uris=(f"http://127.0.0.1:{free_port()}/callback",))
    put_link(settings, oracle, registered, "mail")
    process = start_cli(settings, "authorize", "mail", "--no-browser", "--timeout", "30")
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        httpx.get(oracle.login_and_consent(url), timeout=10)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    authorized = [e for e in _events(settings) if e["action"] == "grant.authorized"]
    assert len(authorized) == 1
    event = authorized[0]
    assert event["link"] == "mail" and event["actor"] == "alice@ops" and event["at"]
    assert event["detail"]["grant"] == "authorization_code" and event["detail"]["refresh_token"] is True
    assert "offline_access" in event["detail"]["scope"].split()

    # A refresh that fails moves healthy -> transient_error: one event with both statuses.
    time.sleep(2.5)
    oracle.fault("server_error_html")
    failed = _cli(settings, "token", "mail", "--min-valid", "58")
    assert failed.returncode == 7, failed.stderr
    changed = [e for e in _events(settings) if e["action"] == "grant.status_changed"]
    assert len(changed) == 1
    detail = changed[0]["detail"]
    assert detail["old_status"] == "healthy" and detail["new_status"] == "transient_error"
    assert detail["error"] == "TransientProviderError" and detail["error_class"] == "transient"
    assert detail["http_status"] == 500
    assert _cli(settings, "token", "mail", "--min-valid", "58").returncode == 0  # recovered: no event

    with open_store(settings) as store, TokenClient(timeout=5) as client:
        tokens = stored_tokens(settings, "mail")
        result = keeper.revoke_grant(store, "mail", client)
    assert result.revoked
    events = _events(settings)
    revoked = [e for e in events if e["action"] == "grant.revoked"]
    assert len(revoked) == 1 and revoked[0]["detail"]["revoked_tokens"] == ["refresh_token", "access_token"]
    assert [e["action"] for e in events].count("grant.status_changed") == 1
    text = json.dumps(events)
    assert all(t.reveal() not in text for t in tokens) and "" not in {k for e in events for k in e["detail"]}
