"""Integration fixtures: a real OAuth 2.0 / OIDC server (npm oidc-provider) for every test.

The server and its helpers live in ``tests/support/oracle.py``; here they become fixtures:
``oidc_server`` (one oracle for the session), ``oracle`` (the same, faults and logs cleared
around the test) and ``client`` (a real ``TokenClient``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.oauth.client import TokenClient
from tests.support.oracle import OidcServer, reset_around, start_oidc_server


@pytest.fixture(scope="session")
def oidc_server() -> Iterator[OidcServer]:
    """One oracle for the whole session (access tokens live 60 s)."""
    with start_oidc_server() as server:
        yield server


@pytest.fixture
def oracle(oidc_server: OidcServer) -> Iterator[OidcServer]:
    """The session oracle with faults and logs cleared before and after the test."""
    yield from reset_around(oidc_server)


@pytest.fixture
def client() -> Iterator[TokenClient]:
    """A real token client with a 5 s timeout (closed at teardown)."""
    token_client = TokenClient(timeout=5)
    yield token_client
    token_client.close()
