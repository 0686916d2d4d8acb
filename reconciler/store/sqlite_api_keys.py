"""The API-key and session half of the SQLite store (``api_keys`` and ``sessions`` tables).

Mixins of :class:`reconciler.store.sqlite.SQLiteStore` (like :mod:`~reconciler.store.sqlite_pending`);
they rely on ``self._conn``, ``self._sealer`` and ``self._immediate()`` of the concrete store.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

from reconciler.errors import StateError
from reconciler.store.api_keys import ApiKeyRecord, ApiKeys

_COLUMNS = "id, key_hash, label, patterns_json, admin, created_at, expires_at, last_used_at, revoked_at"


def _record(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0],
        key_hash=row[1],
        label=row[2],
        patterns=tuple(json.loads(row[3])),
        admin=bool(row[4]),
        created_at=row[5],
        expires_at=row[6],
        last_used_at=row[7],
        revoked_at=row[8],
    )


class SQLiteApiKeys(ApiKeys):
    """API keys over the connection of the store that mixes this in."""

    _conn: sqlite3.Connection

    def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    def put_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a new key (its id and hash are unique)."""
        with self._immediate() as conn:
            try:
                conn.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.key_hash,
                        record.label,
                        json.dumps(list(record.patterns)),
                        int(record.admin),
                        record.created_at,
                        record.expires_at,
                        record.last_used_at,
                        record.revoked_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise StateError("an API key with this id or hash exists already") from None

    def get_api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key whose hash is ``key_hash`` (revoked and expired ones too)."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        return None if row is None else _record(row)

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key by id."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _record(row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
        return [_record(row) for row in rows]

    def revoke_api_key(self, key_id: str, *, now: float) -> ApiKeyRecord | None:
        """Mark a key revoked (idempotent: the first revocation time stays); None if unknown."""
        with self._immediate() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now, key_id)
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _record(row)

    def touch_api_key(self, key_id: str, *, now: float) -> None:
        """Record that a key was used at ``now`` (never moves ``last_used_at`` back)."""
        with self._immediate() as conn:
            conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                (now, key_id, now),
            )
