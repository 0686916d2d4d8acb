"""Store health of the PostgreSQL store: the server reachable now, its schema version read now.

:class:`PostgresHealth` is a mixin of :class:`reconciler.store.postgres.PostgresStore` (the twin
of :mod:`reconciler.store.sqlite_health`): one round trip, no retries, so ``GET /readyz``
answers within about two seconds even while the server is down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.store.health import SchemaStatus, StoreHealth
from reconciler.store.schema import load_migrations

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx


class PostgresHealth(StoreHealth):
    """Readiness over the store's connector ``self._db``."""

    _db: Connector

    def schema_status(self) -> SchemaStatus:
        """Read the schema version now (``StateError`` when the server cannot be reached)."""

        def version(tx: Tx) -> int:
            row = tx.execute(
                "SELECT value FROM meta WHERE key = 'schema_version' AND to_regclass('meta') IS NOT NULL"
            ).fetchone()
            return int(row[0]) if row else 0

        return SchemaStatus(
            version=self._db.once(version, action="read the schema version"),
            known=len(load_migrations("postgresql")),
        )
