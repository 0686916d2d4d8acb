"""Fixtures of the multi-keeper and PostgreSQL fault tests: fresh stores, the 3 s oracle.

``state_url(backend)`` gives a fresh, empty store URL: a file under tmp_path for SQLite, a
new schema in this run's test database for PostgreSQL (tests/support/postgres.py: the
database is created for the run and dropped at its end; a missing server skips locally and
fails under CI=true). ``tests.support.cluster.CLUSTER_BACKENDS`` is what the long run
uses: PostgreSQL (one machine's SQLite path is tests/integration/test_keeper_stress.py);
``LINKCTL_CLUSTER_BACKENDS=sqlite,postgresql`` runs the same harness on SQLite too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.oracle import OidcServer, start_oidc_server


@pytest.fixture(scope="module")
def short_ttl_oracle() -> Iterator[OidcServer]:
    """An oracle whose access tokens live 3 s (refreshes all the time); refresh tokens rotate.

    Like every oracle the tests start, it remembers every client, grant and consumed token of
    the run (``start_oidc_server`` lifts oidc-provider's 1,000-entry default).
    """
    with start_oidc_server(ORACLE_ACCESS_TOKEN_TTL="3") as server:
        yield server


@pytest.fixture
def state_url(tmp_path: Path) -> Callable[[str], str]:
    """A factory: a fresh, empty store URL of a backend (``sqlite`` or ``postgresql``)."""
    made: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            made.append(backend)
            return f"sqlite:///{tmp_path / f'state-{len(made)}.db'}"
        from tests.support.postgres import fresh_url

        return fresh_url()

    return make
