"""Fixtures of the multi-keeper and PostgreSQL fault tests: a fresh database per test, the 3 s oracle.

``state_url(backend)`` gives a fresh, empty store URL: a file under tmp_path for SQLite, a
database created for the test (and dropped after it) on the local PostgreSQL for
PostgreSQL. ``tests.support.cluster.CLUSTER_BACKENDS`` is what the long runs use: PostgreSQL (the SQLite path of
one machine is covered by tests/integration/test_keeper_stress.py); set
``LINKCTL_CLUSTER_BACKENDS=sqlite,postgresql`` to run the same harness on SQLite too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.oracle import OidcServer, start_oidc_server
from tests.conftest import require

@pytest.fixture(scope="module")
def short_ttl_oracle() -> Iterator[OidcServer]:
    """An oracle whose access tokens live 3 s (refreshes all the time); refresh tokens rotate."""
    with start_oidc_server(ORACLE_ACCESS_TOKEN_TTL="3") as server:
        yield server


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def state_url(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A factory: a fresh, empty store URL of a backend (PostgreSQL databases dropped at the end)."""
    created: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'state-{len(created)}.db'}"
        try:
            _admin("SELECT 1")
        except Exception as exc:  # psycopg missing or the server down: both mean "no PostgreSQL here"
            require(False, f"PostgreSQL is not reachable on 127.0.0.1:5432 ({type(exc).__name__})")
        name = f"linkctl_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        _admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    yield make
    if not created:
        return
    from reconciler.store.postgres_conn import close_pools

    close_pools()
    for name in created:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
