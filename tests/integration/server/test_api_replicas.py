"""Several ``linkctl serve`` processes on one store, one of them with ``--keeper``.

Nothing a request needs lives in one process: a key created once works on both, a token
refreshed through one is what the other answers next, a revocation reaches both within
the documented second, and the keeper inside ``serve --keeper`` obtains and keeps tokens
through the store's leases like ``linkctl keeper``.
"""

from __future__ import annotations

import time

from tests.support.oracle import OidcServer
from tests.support.oracle_links import link_for, open_store
from tests.support.server import create_key, run_linkctl, serve


def test_two_servers_one_store(api_env: dict[str, str], oracle: OidcServer) -> None:
    machine = oracle.register_machine_client()
    with open_store(api_env) as store, store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link_for(oracle, machine, "ci-machine", grant="client_credentials"))
    key = create_key(api_env, "--links", "ci-*")
    with serve(api_env, "--keeper", "--workers", "2") as first, serve(api_env) as second:
        token = first.get("/v1/links/ci-one/token?min_valid=59.9", key=key)
        assert token.status_code == 200, token.text
        again = second.get("/v1/links/ci-one/token?min_valid=30", key=key)
        assert again.status_code == 200 and again.json()["access_token"] == token.json()["access_token"]

        # The keeper in the first process obtains the client-credentials link's first token.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open_store(api_env) as store:
                grant = store.get_grant("ci-machine")
            if grant is not None and grant.access_expires_at is not None:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the keeper of serve --keeper obtained no token:\n{first.log()}")
        assert second.get("/v1/links/ci-machine/token?min_valid=1", key=key).status_code == 200

        key_id = [k for k in _keys(api_env) if k["state"] == "active"][-1]["id"]
        assert run_linkctl(api_env, "apikey", "revoke", str(key_id)).returncode == 0
        revoked_at = time.monotonic()
        refused: dict[str, float] = {}
        while len(refused) < 2 and time.monotonic() - revoked_at < 5:
            for label, served in (("first", first), ("second", second)):
                if label not in refused and served.get("/v1/links/ci-one/token", key=key).status_code == 401:
                    refused[label] = time.monotonic() - revoked_at
            time.sleep(0.05)
        assert set(refused) == {"first", "second"}, refused
        assert max(refused.values()) < 1.5, refused  # the key cache's TTL is 1 s
    assert "the keeper stopped" not in first.log()


def _keys(env: dict[str, str]) -> list[dict[str, object]]:
    import json

    result = run_linkctl(env, "apikey", "list", "-o", "json")
    assert result.returncode == 0, result.stderr
    keys: list[dict[str, object]] = json.loads(result.stdout)
    return keys
