"""Server fixtures: a store with links at the oracle, and one ``linkctl serve`` on it per module.

``api_env``: the environment of a store holding ``ci-one`` and ``ci-two`` and ``other``
(authorized at the session oracle) and ``ci-new`` (declared, never authorized);
``served``: a running ``linkctl serve`` on that store (tests/support/server.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.oauth.client import TokenClient
from tests.support.oracle import OidcServer
from tests.support.oracle_links import add_authorized_links, link_for, open_store, state_env
from tests.support.server import Served, serve

AUTHORIZED = ("ci-one", "ci-two", "other")
UNAUTHORIZED = "ci-new"


def prepare_store(server: OidcServer, directory: Path) -> dict[str, str]:
    """A fresh store under ``directory`` with the links named in the module docstring."""
    env = state_env(directory)
    client = TokenClient(timeout=10)
    try:
        with open_store(env) as store:
            registered = add_authorized_links(server, store, AUTHORIZED, client)
            with store.write(expected_serial=None, actor="test") as tx:
                tx.put_link(link_for(server, registered, UNAUTHORIZED))
    finally:
        client.close()
    return env


@pytest.fixture(scope="module")
def api_env(oidc_server: OidcServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the module's prepared store."""
    return prepare_store(oidc_server, tmp_path_factory.mktemp("api-store"))


@pytest.fixture(scope="module")
def served(api_env: dict[str, str]) -> Iterator[Served]:
    """One ``linkctl serve`` on the module's store."""
    with serve(api_env) as running:
        yield running
