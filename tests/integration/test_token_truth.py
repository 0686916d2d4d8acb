"""``linkctl token`` tells the truth: lifetimes too short for --min-valid, and one exit code per failure.

A real oidc-provider whose access tokens live 5 s; refreshes are counted at the server
(its token-endpoint log), never inferred from our own bookkeeping.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.oauth.client import TokenClient
from tests.support.oracle import OidcServer, reset_around, start_oidc_server
from tests.support.oracle_links import add_authorized_links, link_for, open_store, run, state_env

TTL = 5


@pytest.fixture(scope="module")
def short_ttl_server() -> Iterator[OidcServer]:
    """An oracle whose access tokens live 5 s."""
    with start_oidc_server(ORACLE_ACCESS_TOKEN_TTL=str(TTL)) as server:
        yield server


@pytest.fixture
def server(short_ttl_server: OidcServer) -> Iterator[OidcServer]:
    """The 5 s oracle with faults and logs cleared around the test."""
    yield from reset_around(short_ttl_server)


def _token_requests(server: OidcServer) -> list[str]:
    return [str(r["grant_type"]) for r in server.requests()]


def _forget_recorded_lifetime(tmp_path: Path) -> None:
    """What a store written before lifetimes were recorded holds: no ``expires_in``."""
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE grants SET details_json = json_remove(details_json, '$.expires_in')")


def test_min_valid_above_the_recorded_lifetime_fails_without_a_request(
    server: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    add_authorized_links(server, store, ["short"], client)
    store.close()
    server.reset()
    for _ in range(3):
        result = run(env, "token", "short", "--min-valid", "30")
        assert result.returncode == 8, result.stderr
        assert result.stdout == ""
        assert f"tokens live {TTL} s, shorter than --min-valid 30" in result.stderr
        assert "Traceback" not in result.stderr
    as_json = run(env, "token", "short", "--min-valid", "30", "-o", "json")
    assert as_json.returncode == 8
    error = json.loads(as_json.stdout)
    assert error["error"] == "token_lifetime_too_short" and error["exit_code"] == 8
    assert error["token_lifetime"] == TTL and error["min_valid"] == 30 and error["hint"]
    assert _token_requests(server) == []  # never refreshed: the recorded lifetime said it all
    ok = run(env, "token", "short", "--min-valid", "1")
    assert ok.returncode == 0 and ok.stdout.strip()


def test_one_refresh_shows_the_lifetime_is_too_short(
    server: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    add_authorized_links(server, store, ["old"], client)
    store.close()
    _forget_recorded_lifetime(tmp_path)
    server.reset()
    first = run(env, "token", "old", "--min-valid", "30")
    assert first.returncode == 8, first.stderr
    assert f"tokens live {TTL} s" in first.stderr and first.stdout == ""
    assert _token_requests(server) == ["refresh_token"]  # one refresh showed it
    again = run(env, "token", "old", "--min-valid", "30")
    assert again.returncode == 8, again.stderr
    assert _token_requests(server) == ["refresh_token"]  # and that was the only one


def test_client_credentials_token_too_short_is_obtained_once(server: OidcServer, tmp_path: Path) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    cc = server.register_machine_client()
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link_for(server, cc, "machine", grant="client_credentials"))
    store.close()
    for _ in range(2):
        result = run(env, "token", "machine", "--min-valid", "60")
        assert result.returncode == 8, result.stderr
    assert _token_requests(server) == ["client_credentials"]


def test_each_token_failure_has_its_own_exit_code(
    server: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    registered = add_authorized_links(server, store, ["live"], client)
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link_for(server, registered, "never"))
    store.close()
    server.reset()

    unknown = run(env, "token", "nope", "-o", "json")
    assert unknown.returncode == 6
    assert json.loads(unknown.stdout)["error"] == "unknown_link"
    assert run(env, "token", "nope").stderr.startswith("error: no link named 'nope'")

    needs = run(env, "token", "never", "-o", "json")
    assert needs.returncode == 5
    body = json.loads(needs.stdout)
    assert body["error"] == "needs_authorization" and "linkctl authorize never" in body["hint"]

    time.sleep(1.5)  # the 5 s token now has less than 4 s left: --min-valid 4 needs a refresh
    server.fault("unavailable", retry_after=7)
    down = run(env, "token", "live", "--min-valid", "4", "-o", "json")
    assert down.returncode == 7, down.stderr
    body = json.loads(down.stdout)
    assert body["error"] == "provider_unavailable" and body["retry_after"] == 7
    assert set(body) >= {"error", "message", "hint", "exit_code"}
    # Once the provider is back, the same command works (nothing was parked).
    back = run(env, "token", "live", "--min-valid", "4")
    assert back.returncode == 0, back.stderr
    assert _token_requests(server) == ["refresh_token", "refresh_token"]  # the 503, then the retry
