"""Helpers shared by the store tests: the backends of the contract suite, a LinkWrite maker,
file digests, a child process's environment."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store
from reconciler.store.grants import GrantStore
from reconciler.store.sqlite import sqlite_path

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class StoreBackend:
    """A store backend the contract suite runs against: how to name a fresh store, how to open one."""

    name: str
    make_url: Callable[[Path], str]  # a fresh, empty store's URL (a scratch directory given)

    def open(self, settings: Settings, *, notice: Callable[[str], None] | None = None) -> Store:
        """Open the store that ``settings.state_url`` names (by URL, as the CLI does)."""
        if self.name == "postgresql":
            # The contract suite drives a fake clock: the caller's ``now`` is the clock here.
            # Child processes and the PostgreSQL-only tests use the database clock.
            from reconciler.store.postgres import PostgresStore

            return PostgresStore.open(settings, notice=notice, caller_clock=True)
        return open_store(settings, notice=notice)


def _sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'store' / 'state.db'}"


def _postgres_url(directory: Path) -> str:
    from tests.support.postgres import fresh_url

    return fresh_url()


# A backend joins the contract suite by one entry here (see docs/testing.md).
BACKENDS: dict[str, StoreBackend] = {
    "sqlite": StoreBackend("sqlite", _sqlite_url),
    "postgresql": StoreBackend("postgresql", _postgres_url),
}


def db_path(settings: Settings) -> Path:
    """The SQLite file of settings."""
    return sqlite_path(settings.state_url)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (to prove it was not touched)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def link(
    name: str, *, client_id: str | None = "client-1", secret: str | None = "s3cret", **spec: Any
) -> LinkWrite:
    """A LinkWrite with sensible defaults."""
    full_spec: dict[str, Any] = {"provider": "custom", "scopes": ["read"], **spec}
    if client_id is not None:
        full_spec["clientId"] = client_id
    secrets: dict[str, Secret | None] = {}
    if secret is not None:
        full_spec["clientSecret"] = {"$secret": "clientSecret"}
        secrets["clientSecret"] = Secret(secret)
    return LinkWrite(
        name=name,
        provider="custom",
        spec=full_spec,
        spec_hash=hashlib.sha256(repr(sorted(full_spec.items())).encode()).hexdigest(),
        secrets=secrets,
        secret_fingerprints={"clientSecret": "fp-" + name} if secret is not None else {},
        source_file="links/main.yaml",
        source_line=1,
    )


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for a child Python process that opens the same store."""
    env = dict(os.environ)  # HOME and the XDG dirs: isolated_env put them there
    if settings.state_key is not None:
        env["LINKCTL_STATE_KEY"] = settings.state_key.reveal()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["LINKCTL_STATE"] = settings.state_url
    env["LINKCTL_STATE_KEY_FILE"] = str(settings.state_key_file)
    return env


PYTHON = sys.executable


def store_with_fresh_token(
    settings: Settings, name: str, *, access_token: str = "the-access-token", expires_in: int = 3600
) -> None:
    """Create the store of ``settings`` with one authorized link whose access token is fresh."""
    from reconciler.domain.tokens import TokenResponse

    store = open_store(settings, notice=lambda _: None)
    try:
        with store.write(expected_serial=None, actor="test") as tx:
            tx.put_link(link(name, tokenEndpoint="https://idp.example.com/token"))
        now = time.time()
        answer = TokenResponse(
            access_token=Secret(access_token),
            refresh_token=Secret("the-refresh-token"),
            token_type="Bearer",
            expires_in=expires_in,
            scope="openid",
            received_at=now,
        )
        store.save_authorization(name, answer, clock_now=now)
    finally:
        store.close()


class PerLinkBatches:
    """A store with the ``GrantStore`` base-class batch methods: one single-link write per item.

    The reference the stores' own batch methods are held to: each backend overrides them
    for speed (one transaction, or one statement, per batch) and must answer and write
    exactly as these per-link loops do.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


for _batch in ("acquire_leases", "mark_in_flight_many", "commit_tokens_many", "record_failures_many"):
    setattr(PerLinkBatches, _batch, getattr(GrantStore, _batch))
