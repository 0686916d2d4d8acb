"""The keeper against the real oidc-provider oracle (rotation + reuse detection)."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import time
from pathlib import Path

import pytest

from reconciler import keeper
from reconciler.domain.grants import GrantStatus
from reconciler.oauth.client import TokenClient
from tests.support.oracle import OidcServer
from tests.support.oracle_links import (
    add_authorized_links,
    introspect_active,
    link_for,
    open_store,
    run,
    spawn,
    state_env,
)


class Clock:
    """Real time plus an offset the test moves (the keeper's view of time only)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_six_rotations_and_every_old_refresh_token_is_dead(
    oracle: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    registered = add_authorized_links(oracle, store, ["rot"], client)
    clock = Clock()
    k = keeper.Keeper(store, client, clock=clock, rng=random.Random(1))
    old = []
    for _ in range(6):
        before = store.get_grant("rot", with_tokens=True)
        assert before is not None and before.refresh_token is not None
        old.append(before.refresh_token)
        clock.offset += 61  # the keeper thinks a 60 s token is due
        assert k.run_once().refreshed == ["rot"]
    now = store.get_grant("rot", with_tokens=True)
    assert now is not None and now.refresh_token is not None and now.status == GrantStatus.HEALTHY
    assert all(not introspect_active(oracle, registered, rt) for rt in old)
    assert introspect_active(oracle, registered, now.refresh_token)
    grant_types = [r["grant_type"] for r in oracle.requests()]
    assert grant_types.count("refresh_token") == 6
    store.close()


def test_token_min_valid_forces_a_refresh(oracle: OidcServer, client: TokenClient, tmp_path: Path) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    add_authorized_links(oracle, store, ["cli"], client)
    store.close()
    oracle.reset()
    fresh = run(env, "token", "cli", "--min-valid", "10")
    assert fresh.returncode == 0, fresh.stderr
    assert oracle.requests() == []  # fresh enough: no request
    time.sleep(2.5)  # the 60 s token has less than 58 s left: --min-valid 58 needs a refresh
    # (more than its 60 s lifetime would be refused: see test_token_truth.py)
    forced = run(env, "token", "cli", "--min-valid", "58", "--output", "json")
    assert forced.returncode == 0, forced.stderr
    data = json.loads(forced.stdout)
    assert data["access_token"] != fresh.stdout.strip()
    assert data["token_type"].lower() == "bearer" and 0 < data["expires_in"] <= 60 and data["expires_at"]
    assert [r["grant_type"] for r in oracle.requests()] == ["refresh_token"]
    assert data["access_token"] not in forced.stderr


def test_token_of_a_link_that_needs_authorization_fails_clearly(
    oracle: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    registered = oracle.register_client()
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link_for(oracle, registered, "new"))
    store.close()
    result = run(env, "token", "new")
    assert result.returncode != 0 and result.stdout == ""
    assert "needs authorization" in result.stderr and "linkctl authorize new" in result.stderr


def test_keeper_once_obtains_client_credentials_and_reports_waiting(
    oracle: OidcServer, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    cc = oracle.register_machine_client()
    human = oracle.register_client()
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link_for(oracle, cc, "machine", grant="client_credentials"))
        tx.put_link(link_for(oracle, human, "waiting"))
    store.close()
    result = run(env, "keeper", "--once", "--output", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["obtained"] == ["machine"] and report["waiting_for_authorization"] == ["waiting"]
    # Nothing due now (the machine token is fresh, "waiting" is not news): cron gets no mail.
    quiet = run(env, "keeper", "--once")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", quiet
    text = run(env, "keeper", "--once", "-v")
    assert text.returncode == 0 and "waiting for authorization 1" in text.stdout


def test_the_daemon_exits_0_on_sigterm_after_recovering_from_an_error(
    oracle: OidcServer, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link_for(oracle, oracle.register_machine_client(), "machine", grant="client_credentials"))
    store.close()
    oracle.fault("unavailable", retry_after=1, times=1)
    daemon = spawn(env, "keeper", "--poll-interval", "0.2")
    try:
        deadline = time.monotonic() + 30
        seen: list[object] = []
        while time.monotonic() < deadline and seen[-1:] != [200]:  # the 503, then the token
            time.sleep(0.1)
            seen = [r.get("status") or r.get("fault") for r in oracle.requests()]
        assert seen[:1] == ["unavailable"] and seen[-1:] == [200], seen
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    # Recovered errors are in the store and the log, not in the exit status (systemd).
    assert daemon.returncode == 0, err


def test_transient_503_then_recovery(oracle: OidcServer, client: TokenClient, tmp_path: Path) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    add_authorized_links(oracle, store, ["flaky"], client)
    clock = Clock()
    clock.offset = 61
    k = keeper.Keeper(store, client, clock=clock, rng=random.Random(1))
    oracle.fault("unavailable", retry_after=7)
    report = k.run_once()
    assert "flaky" in report.failed
    g = store.get_grant("flaky")
    assert g is not None and g.status == GrantStatus.TRANSIENT_ERROR and g.retry_at is not None
    assert g.retry_at >= clock() + 7 - 1
    clock.offset += 8
    assert k.run_once().refreshed == ["flaky"]
    store.close()


def test_lost_response_then_invalid_grant_names_the_cause(
    oracle: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    add_authorized_links(oracle, store, ["lost"], client)
    clock = Clock()
    clock.offset = 61
    k = keeper.Keeper(store, client, clock=clock, rng=random.Random(1))
    oracle.fault("drop_after")  # the server rotates, then drops the connection
    report = k.run_once()
    assert "may have consumed the refresh token" in report.failed["lost"]
    clock.offset += 1000
    k.run_once()
    g = store.get_grant("lost")
    assert g is not None and g.status == GrantStatus.NEEDS_AUTHORIZATION and g.last_error is not None
    assert "probably consumed by a lost response (sent at" in g.last_error
    store.close()


@pytest.mark.parametrize("endpoint", ["declared", "discovered"])
def test_revoke_grant_at_the_oracle(
    oracle: OidcServer, client: TokenClient, tmp_path: Path, endpoint: str
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    registered = add_authorized_links(oracle, store, ["bye"], client)
    if endpoint == "discovered":  # token and authorization endpoints declared, revocation's not
        write = link_for(oracle, registered, "bye")
        spec = {**write.spec, "revocationEndpoint": None, "issuer": oracle.issuer}
        with store.write(expected_serial=None, actor="test") as tx:
            tx.put_link(dataclasses.replace(write, spec=spec))
    before = store.get_grant("bye", with_tokens=True)
    assert before is not None and before.refresh_token is not None
    result = keeper.revoke_grant(store, "bye", client)
    assert result.revoked and "refresh_token" in result.revoked_tokens
    assert not introspect_active(oracle, registered, before.refresh_token)
    store.close()
