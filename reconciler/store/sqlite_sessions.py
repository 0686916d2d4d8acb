"""The admin-session half of the SQLite store (``sessions`` table).

A mixin of :class:`reconciler.store.sqlite.SQLiteStore`; it relies on ``self._conn``,
``self._sealer`` and ``self._immediate()`` of the concrete store. The CSRF secret is
sealed (AES-256-GCM) with its row's session hash as associated data.
"""

from __future__ import annotations

import contextlib
import sqlite3

from reconciler.errors import StateError
from reconciler.secrets import Secret
from reconciler.store import sealing
from reconciler.store.sessions import SessionRecord, Sessions, csrf_aad


class SQLiteSessions(Sessions):
    """Admin sessions over the connection of the store that mixes this in."""

    _conn: sqlite3.Connection
    _sealer: sealing.Sealer

    def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    def put_session(
        self, session_hash: str, *, api_key_id: str, csrf_secret: Secret, created_at: float, expires_at: float
    ) -> None:
        """Record a new session; rows expired before ``created_at`` are dropped."""
        sealed = self._sealer.seal(csrf_secret.reveal().encode("ascii"), csrf_aad(session_hash))
        with self._immediate() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (created_at,))
            try:
                conn.execute(
                    "INSERT INTO sessions (session_hash, api_key_id, csrf_secret, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (session_hash, api_key_id, sealed, created_at, expires_at),
                )
            except sqlite3.IntegrityError:
                raise StateError(
                    "cannot record the session: unknown API key or a duplicate session"
                ) from None

    def get_session(self, session_hash: str) -> SessionRecord | None:
        """The session row of a cookie hash (ended and expired ones too)."""
        row = self._conn.execute(
            "SELECT api_key_id, csrf_secret, created_at, expires_at, ended_at FROM sessions"
            " WHERE session_hash = ?",
            (session_hash,),
        ).fetchone()
        if row is None:
            return None
        try:
            secret = self._sealer.open(row[1], csrf_aad(session_hash)).decode("ascii")
        except sealing.SealError:
            return None  # an altered or copied row is no session
        return SessionRecord(
            session_hash=session_hash,
            api_key_id=row[0],
            csrf_secret=Secret(secret),
            created_at=row[2],
            expires_at=row[3],
            ended_at=row[4],
        )

    def end_session(self, session_hash: str, *, now: float) -> bool:
        """Mark a session ended (``/logout``); False if there was none still open."""
        with self._immediate() as conn:
            cursor = conn.execute(
                "UPDATE sessions SET ended_at = ? WHERE session_hash = ? AND ended_at IS NULL",
                (now, session_hash),
            )
            return cursor.rowcount > 0
