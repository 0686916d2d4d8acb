"""services.tokens: a fresh-enough token is returned without building an HTTP client."""

from __future__ import annotations

from typing import Any

from reconciler.oauth.client import TokenResponse
from reconciler.secrets import Secret
from reconciler.services import tokens
from reconciler.store.base import Store


def test_a_fresh_token_needs_no_client(store: Store) -> None:
    response = TokenResponse(Secret("access-1"), Secret("refresh-1"), "Bearer", 3600.0, "read", 1_000.0)
    store.save_authorization("crm", response, clock_now=1_000.0)

    def no_client(timeout: float) -> Any:
        raise AssertionError("a client was built")

    grant, now = tokens.fresh_access_token(
        store, "crm", min_valid=60.0, wait=1.0, client_factory=no_client, clock=lambda: 1_100.0
    )
    assert now == 1_100.0 and grant.access_token is not None
    assert tokens.token_json(grant, now) == {
        "access_token": "access-1",
        "token_type": "Bearer",
        "expires_at": "1970-01-01T01:16:40+00:00",  # today's token -o json format
        "expires_in": 3500,
    }
