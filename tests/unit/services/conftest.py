"""Fixtures for the service tests: a store in tmp_path with one authorization code link."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.oauth.client import ClientConfig, TokenResponse
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store

LINK_SPEC: dict[str, Any] = {
    "provider": "custom",
    "grant": "authorization_code",
    "scopes": ["read", "offline_access"],
    "clientId": "client-1",
    "clientSecret": {"$secret": "clientSecret"},
    "authorizationEndpoint": "https://idp.example/authorize",
    "tokenEndpoint": "https://idp.example/token",
    "redirectUri": "https://linkctl.example/callback/crm",
}


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    """Default settings: sqlite file and key file under the isolated HOME."""
    return Settings.from_env(isolated_env)


@pytest.fixture
def open_(settings: Settings) -> Iterator[Callable[[], Store]]:
    """Open stores on the same file (each its own connection; closed at teardown)."""
    opened: list[Store] = []

    def factory() -> Store:
        opened.append(open_store(settings, notice=lambda _: None))
        return opened[-1]

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_: Callable[[], Store]) -> Store:
    """A store holding the link ``crm`` (authorization code, client secret sealed)."""
    store = open_()
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(
            LinkWrite(
                name="crm",
                provider="custom",
                spec=LINK_SPEC,
                spec_hash="h",
                secrets={"clientSecret": Secret("client-secret-canary")},
                secret_fingerprints={"clientSecret": "fp"},
                source_file="links/crm.yaml",
                source_line=1,
            )
        )
    return store


class FakeTokenClient:
    """Answers a code exchange with fixed tokens and records what it was sent."""

    def __init__(self, *, now: float = 1_000.0) -> None:
        self.exchanges: list[dict[str, str]] = []
        self.now = now

    def with_endpoints(self, config: ClientConfig, *, revoking: bool = False) -> ClientConfig:
        """Endpoints are declared: nothing to discover."""
        return config

    def exchange_code(
        self, config: ClientConfig, *, code: str, code_verifier: str, redirect_uri: str
    ) -> TokenResponse:
        """Record the exchange; answer with an access and a refresh token."""
        self.exchanges.append({"code": code, "code_verifier": code_verifier, "redirect_uri": redirect_uri})
        return TokenResponse(
            access_token=Secret("access-canary"),
            refresh_token=Secret("refresh-canary"),
            token_type="Bearer",
            expires_in=3600.0,
            scope="read offline_access",
            received_at=self.now,
        )


@pytest.fixture
def client() -> FakeTokenClient:
    """A fake token client."""
    return FakeTokenClient()
