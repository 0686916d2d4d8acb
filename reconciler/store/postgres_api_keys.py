"""The API-key and admin-session half of the PostgreSQL store (``api_keys`` and ``sessions`` tables).

Mixins of :class:`reconciler.store.postgres.PostgresStore`, the twins of
:mod:`reconciler.store.sqlite_api_keys` and :mod:`reconciler.store.sqlite_sessions`. Expiry
and use times are the database's (``now`` of the caller converted or replaced, see
:class:`~reconciler.store.postgres_conn.ClockFrame`); the moments read back are in the
caller's clock, so a key or session expires at the same instant on every machine.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg

from reconciler.errors import StateError
from reconciler.secrets import Secret
from reconciler.store import sealing
from reconciler.store.api_keys import ApiKeyRecord, ApiKeys
from reconciler.store.sessions import SessionRecord, Sessions, csrf_aad

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx

_COLUMNS = "id, key_hash, label, patterns_json, admin, created_at, expires_at, last_used_at, revoked_at"


class PostgresApiKeys(ApiKeys):
    """API keys over the store's connector ``self._db``."""

    _db: Connector

    if TYPE_CHECKING:

        def _check_writable(self) -> None: ...

    def _record(self, row: tuple[Any, ...]) -> ApiKeyRecord:
        clock = self._db.clock
        return ApiKeyRecord(
            id=row[0],
            key_hash=row[1],
            label=row[2],
            patterns=tuple(json.loads(row[3])),
            admin=bool(row[4]),
            created_at=clock.from_db(row[5]) or 0.0,
            expires_at=clock.from_db(row[6]),
            last_used_at=clock.from_db(row[7]),
            revoked_at=clock.from_db(row[8]),
        )

    def _one(self, where: str, value: str) -> ApiKeyRecord | None:
        row = self._db.query(
            f"SELECT {_COLUMNS} FROM api_keys WHERE {where} = %s", (value,), action="read an API key"
        )
        return None if row is None else self._record(tuple(row))

    def put_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a new key (its id and hash are unique)."""
        self._check_writable()
        clock = self._db.clock

        def work(tx: Tx) -> None:
            try:
                tx.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        record.id,
                        record.key_hash,
                        record.label,
                        json.dumps(list(record.patterns)),
                        int(record.admin),
                        clock.to_db(record.created_at),
                        clock.to_db(record.expires_at),
                        clock.to_db(record.last_used_at),
                        clock.to_db(record.revoked_at),
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise StateError("an API key with this id or hash exists already") from None

        self._db.run(work, write=True, action="store an API key")

    def get_api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key whose hash is ``key_hash`` (revoked and expired ones too)."""
        return self._one("key_hash", key_hash)

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key by id."""
        return self._one("id", key_id)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        rows = self._db.run(
            lambda tx: tx.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall(),
            write=False,
            action="list API keys",
        )
        return [self._record(tuple(row)) for row in rows]

    def revoke_api_key(self, key_id: str, *, now: float) -> ApiKeyRecord | None:
        """Mark a key revoked (idempotent: the first revocation time stays); None if unknown."""
        self._check_writable()
        row = self._db.run(
            lambda tx: tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s"
                f" RETURNING {_COLUMNS}",
                (self._db.clock.now(tx.db_now, now), key_id),
            ).fetchone(),
            write=True,
            action="revoke an API key",
        )
        return None if row is None else self._record(tuple(row))

    def touch_api_key(self, key_id: str, *, now: float) -> None:
        """Record that a key was used now (by the database clock; never moves ``last_used_at`` back)."""
        self._check_writable()
        self._db.run(
            lambda tx: tx.execute(
                "UPDATE api_keys SET last_used_at = %(now)s WHERE id = %(id)s"
                " AND (last_used_at IS NULL OR last_used_at < %(now)s)",
                {"now": self._db.clock.now(tx.db_now, now), "id": key_id},
            ),
            write=True,
            action="record an API key's use",
        )


class PostgresSessions(Sessions):
    """Admin sessions over the store's connector ``self._db`` (CSRF secrets sealed)."""

    _db: Connector
    _sealer: sealing.Sealer

    if TYPE_CHECKING:

        def _check_writable(self) -> None: ...

    def put_session(
        self, session_hash: str, *, api_key_id: str, csrf_secret: Secret, created_at: float, expires_at: float
    ) -> None:
        """Record a new session; rows expired by the database clock are dropped."""
        self._check_writable()
        sealed = self._sealer.seal(csrf_secret.reveal().encode("ascii"), csrf_aad(session_hash))
        clock = self._db.clock

        def work(tx: Tx) -> None:
            now = clock.now(tx.db_now, created_at)
            tx.execute("DELETE FROM sessions WHERE expires_at < %s", (now,))
            try:
                tx.execute(
                    "INSERT INTO sessions (session_hash, api_key_id, csrf_secret, created_at, expires_at)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (session_hash, api_key_id, sealed, now, clock.to_db(expires_at)),
                )
            except psycopg.errors.IntegrityError:
                raise StateError(
                    "cannot record the session: unknown API key or a duplicate session"
                ) from None

        self._db.run(work, write=True, action="record a session")

    def get_session(self, session_hash: str) -> SessionRecord | None:
        """The session row of a cookie hash (ended and expired ones too)."""
        row = self._db.run(
            lambda tx: tx.execute(
                "SELECT api_key_id, csrf_secret, created_at, expires_at, ended_at FROM sessions"
                " WHERE session_hash = %s",
                (session_hash,),
            ).fetchone(),
            write=False,
            action="read a session",
        )
        if row is None:
            return None
        try:
            secret = self._sealer.open(bytes(row[1]), csrf_aad(session_hash)).decode("ascii")
        except sealing.SealError:
            return None  # an altered or copied row is no session
        clock = self._db.clock
        return SessionRecord(
            session_hash=session_hash,
            api_key_id=row[0],
            csrf_secret=Secret(secret),
            created_at=clock.from_db(row[2]) or 0.0,
            expires_at=clock.from_db(row[3]) or 0.0,
            ended_at=clock.from_db(row[4]),
        )

    def end_session(self, session_hash: str, *, now: float) -> bool:
        """Mark a session ended (``/logout``); False if there was none still open."""
        self._check_writable()
        ended: bool = self._db.run(
            lambda tx: (
                tx.execute(
                    "UPDATE sessions SET ended_at = %s WHERE session_hash = %s AND ended_at IS NULL",
                    (self._db.clock.now(tx.db_now, now), session_hash),
                ).rowcount
                > 0
            ),
            write=True,
            action="end a session",
        )
        return ended
