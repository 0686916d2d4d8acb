"""Store health of the SQLite store: the file still there, its schema version read now.

:class:`SQLiteHealth` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`; it relies
on ``self._conn`` and ``self.url``.
"""

from __future__ import annotations

import sqlite3

from reconciler.errors import StateError
from reconciler.store.health import SchemaStatus, StoreHealth
from reconciler.store.schema import load_migrations
from reconciler.store.sqlite_open import read_meta, sqlite_path


class SQLiteHealth(StoreHealth):
    """Readiness over the connection of the store that mixes this in."""

    _conn: sqlite3.Connection
    url: str

    def schema_status(self) -> SchemaStatus:
        """Read the schema version now (``StateError`` when the file is gone or unreadable)."""
        path = sqlite_path(self.url)
        # An open connection keeps reading a deleted file: the path is what other processes see.
        if not path.is_file():
            raise StateError(f"the store file {path} is gone", hint="restore it, or set LINKCTL_STATE to it")
        try:
            version, _ = read_meta(self._conn)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the store {path}: {exc}") from None
        return SchemaStatus(version=version, known=len(load_migrations()))
