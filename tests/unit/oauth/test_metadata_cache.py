"""Discovery metadata is cached across processes through the store (MetadataCache)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from reconciler.errors import ProviderConfigError
from reconciler.oauth.client import TokenClient

ISSUER = "https://id.example.com"
DOCUMENT = {"issuer": ISSUER, "token_endpoint": f"{ISSUER}/token", "revocation_endpoint": f"{ISSUER}/revoke"}


class DictCache:
    def __init__(self) -> None:
        self.items: dict[str, tuple[Mapping[str, Any], float]] = {}

    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        return self.items.get(issuer)

    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        self.items[issuer] = (dict(metadata), fetched_at)


def counting_transport(calls: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json=DOCUMENT)

    return httpx.MockTransport(handler)


def test_fetched_once_then_served_from_the_cache_by_another_client() -> None:
    calls: list[str] = []
    cache = DictCache()
    now = [1000.0]
    with TokenClient(
        transport=counting_transport(calls), metadata_cache=cache, clock=lambda: now[0]
    ) as first:
        assert first.discover(ISSUER).revocation_endpoint == f"{ISSUER}/revoke"
    assert len(calls) == 1 and cache.items[ISSUER][1] == 1000.0
    now[0] += 3600
    with TokenClient(
        transport=counting_transport(calls), metadata_cache=cache, clock=lambda: now[0]
    ) as second:
        assert second.discover(ISSUER).token_endpoint == f"{ISSUER}/token"
    assert len(calls) == 1  # a second process needs no request


def test_stale_cache_is_refetched() -> None:
    calls: list[str] = []
    cache = DictCache()
    cache.put_provider_metadata(ISSUER, {**DOCUMENT, "token_endpoint": f"{ISSUER}/old"}, fetched_at=0.0)
    with TokenClient(
        transport=counting_transport(calls), metadata_cache=cache, clock=lambda: 2 * 86400.0
    ) as c:
        assert c.discover(ISSUER).token_endpoint == f"{ISSUER}/token"
    assert len(calls) == 1 and cache.items[ISSUER][1] == 2 * 86400.0


def test_cached_document_for_another_issuer_is_refused() -> None:
    cache = DictCache()
    cache.put_provider_metadata(ISSUER, {**DOCUMENT, "issuer": "https://evil.example.com"}, fetched_at=0.0)
    calls: list[str] = []
    client = TokenClient(transport=counting_transport(calls), metadata_cache=cache, clock=lambda: 1.0)
    with client, pytest.raises(ProviderConfigError, match="evil"):  # the issuer check covers the cache
        client.discover(ISSUER)
