"""The grant half of the SQLite store: tokens and refresh bookkeeping (``grants`` table).

:class:`SQLiteGrants` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`;
OAuth flows and the keeper reach it through the :class:`~reconciler.store.grants.GrantStore`
interface. It owns every SQL statement that touches ``grants``, except the row
that :meth:`SQLiteStore.write` creates for a new link (see :func:`insert_initial_grant`,
defined here so the status rules live in one place).

Extending it (leases, fenced token writes): add methods here that use
``self._immediate()`` for read-modify-write, condition every token write on
``token_version`` (``UPDATE ... WHERE link_uid = ? AND token_version = ?`` and check
``rowcount``), seal tokens with :meth:`_seal_token`, add columns through a new
``migrations/000N_*.sql`` file plus :data:`GRANT_COLUMNS`, and end every write that
changes an input of the due rule with :func:`write_due_at`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from reconciler.domain.grants import GrantStatus
from reconciler.domain.links import spec_json_uses_client_credentials, uses_client_credentials
from reconciler.domain.schedule import due_at
from reconciler.secrets import Secret
from reconciler.store import grants, sealing
from reconciler.store.sqlite_token_read import open_token, read_access_token

# Columns of ``grants`` read into a Grant, in SELECT order (``g.`` prefixed in queries).
GRANT_COLUMNS = (
    "link_uid",
    "status",
    "token_version",
    "access_token",
    "refresh_token",
    "token_type",
    "scope",
    "access_expires_at",
    "obtained_at",
    "last_refresh_at",
    "next_refresh_at",
    "retry_at",
    "attempts",
    "last_error",
    "error_class",
    "lease_owner",
    "lease_expires_at",
    "in_flight_since",
    "lost_response",
    "details_json",
)
_SELECT_GRANTS = (
    "SELECT l.name, "
    + ", ".join(f"g.{c}" for c in GRANT_COLUMNS)
    + " FROM grants g JOIN links l ON l.uid = g.link_uid"
)
IN_CHUNK = 500  # host parameters per ``IN (...)`` (SQLite's default limit is 999 before 3.32)
# What the due rule reads of a grant and its link (the grant type lives in the spec).
_DUE_INPUTS = (
    "SELECT g.link_uid, g.status, g.retry_at, g.next_refresh_at, g.in_flight_since,"
    " g.access_token IS NOT NULL, l.spec_json, g.due_at FROM grants g JOIN links l ON l.uid = g.link_uid"
    " WHERE g.link_uid IN ({marks})"
)


def write_due_at(conn: sqlite3.Connection, uids: Sequence[str]) -> None:
    """Store ``grants.due_at`` of these grants from their rows as they are now (caller's transaction).

    Computed by :func:`reconciler.domain.schedule.due_at`, the one due rule, so the due
    query (``SQLiteLeases.due_links``) needs no copy of it in SQL.
    """
    updates: list[tuple[float | None, str]] = []
    for start in range(0, len(uids), IN_CHUNK):
        chunk = tuple(uids[start : start + IN_CHUNK])
        rows = conn.execute(_DUE_INPUTS.format(marks=", ".join("?" * len(chunk))), chunk)
        for uid, status, retry_at, next_refresh_at, in_flight_since, has_access, spec_json, stored in rows:
            at = due_at(
                status=status,
                retry_at=retry_at,
                next_refresh_at=next_refresh_at,
                in_flight_since=in_flight_since,
                has_access_token=bool(has_access),
                client_credentials=spec_json_uses_client_credentials(spec_json),
            )
            if at != stored:  # most lease writes leave it as it was: no row or index write then
                updates.append((at, uid))
    conn.executemany("UPDATE grants SET due_at = ? WHERE link_uid = ?", updates)


def initial_grant_status(spec: Mapping[str, Any]) -> GrantStatus:
    """The status of a new link's grant: credentials first, then an admin's consent."""
    return GrantStatus.NEEDS_AUTHORIZATION if spec.get("clientId") else GrantStatus.PENDING_CREDENTIALS


def insert_initial_grant(conn: sqlite3.Connection, uid: str, spec: Mapping[str, Any]) -> None:
    """Create the grant row of a new link (inside the caller's transaction)."""
    status = initial_grant_status(spec)
    # The row's inputs of the due rule are all known here (no tokens, nothing scheduled):
    # computing them directly saves apply a read and a write per new link.
    first_due = due_at(
        status=status,
        retry_at=None,
        next_refresh_at=None,
        in_flight_since=None,
        has_access_token=False,
        client_credentials=uses_client_credentials(spec),
    )
    conn.execute(
        "INSERT INTO grants (link_uid, status, token_version, due_at) VALUES (?, ?, 0, ?)",
        (uid, status, first_due),
    )


def promote_pending_grant(conn: sqlite3.Connection, uid: str, spec: Mapping[str, Any]) -> None:
    """On a link update: ``pending_credentials`` becomes ``needs_authorization`` once a clientId exists.

    Never touches tokens or any other status. The due time is written again either way:
    the update may have changed the link's grant type (client credentials or not).
    """
    if spec.get("clientId"):
        conn.execute(
            "UPDATE grants SET status = ? WHERE link_uid = ? AND status = ?",
            (GrantStatus.NEEDS_AUTHORIZATION, uid, GrantStatus.PENDING_CREDENTIALS),
        )
    write_due_at(conn, (uid,))


class SQLiteGrants:
    """Grant queries over the connection of the store that mixes this in.

    Relies on these attributes of the concrete store:

    * ``self._conn`` — the store's ``sqlite3.Connection`` (``isolation_level=None``:
      transactions are explicit; ``foreign_keys=ON``).
    * ``self._sealer`` — a :class:`reconciler.store.sealing.Sealer` for token columns
      (AAD ``linkctl/grant/<uid>/<field>``).
    * ``self._immediate()`` — a context manager running its block in ``BEGIN IMMEDIATE``
      … ``COMMIT`` (``ROLLBACK`` and re-raise on any exception); use it for every
      read-modify-write so that one writer at a time sees a consistent row.
    """

    _conn: sqlite3.Connection
    _sealer: sealing.Sealer

    def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    # -- reads ---------------------------------------------------------------------
    def get_grant(self, name: str, *, with_tokens: bool = False) -> grants.Grant | None:
        """The grant of a link; tokens are decrypted only when asked for."""
        row = self._conn.execute(_SELECT_GRANTS + " WHERE l.name = ?", (name,)).fetchone()
        return None if row is None else self._grant_from_row(row, with_tokens=with_tokens)

    def get_access_token(self, name: str) -> grants.AccessToken | None:
        """The stored access token of a link (one narrow row, one decryption); None: no grant."""
        return read_access_token(self._conn, self._sealer, name)

    def list_grants(self) -> list[grants.Grant]:
        """All grants without tokens, ordered by link name."""
        rows = self._conn.execute(_SELECT_GRANTS + " ORDER BY l.name").fetchall()
        return [self._grant_from_row(row, with_tokens=False) for row in rows]

    def list_grants_with_status(self, statuses: Collection[GrantStatus]) -> list[grants.Grant]:
        """The grants (without tokens) in one of ``statuses``, ordered by link name."""
        wanted = sorted(str(GrantStatus(status)) for status in set(statuses))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        rows = self._conn.execute(_SELECT_GRANTS + f" WHERE g.status IN ({marks}) ORDER BY l.name", wanted)
        return [self._grant_from_row(row, with_tokens=False) for row in rows.fetchall()]

    def _iter_grant_rows(self, where: str = "", params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """Raw grant rows (``name`` first, then :data:`GRANT_COLUMNS`) for extensions."""
        yield from self._conn.execute(_SELECT_GRANTS + (f" WHERE {where}" if where else ""), params)

    # -- token sealing -------------------------------------------------------------
    def _seal_token(self, uid: str, field: str, token: Secret | None) -> bytes | None:
        """Ciphertext for a token column (``None`` stays NULL)."""
        if token is None:
            return None
        return self._sealer.seal(token.reveal().encode("utf-8"), sealing.grant_aad(uid, field))

    def _open_token(self, uid: str, field: str, blob: bytes | None) -> Secret | None:
        """Decrypt a token column into a :class:`Secret`."""
        return open_token(self._sealer, uid, field, blob)

    def _grant_from_row(self, row: tuple[Any, ...], *, with_tokens: bool) -> grants.Grant:
        name, *values = row
        col = dict(zip(GRANT_COLUMNS, values, strict=True))
        uid = col["link_uid"]
        access = refresh = None
        if with_tokens:
            access = self._open_token(uid, "access_token", col["access_token"])
            refresh = self._open_token(uid, "refresh_token", col["refresh_token"])
        return grants.Grant(
            link_name=name,
            link_uid=uid,
            status=GrantStatus(col["status"]),
            token_version=col["token_version"],
            access_token=access,
            refresh_token=refresh,
            has_refresh_token=col["refresh_token"] is not None,
            token_type=col["token_type"],
            scope=col["scope"],
            access_expires_at=col["access_expires_at"],
            obtained_at=col["obtained_at"],
            last_refresh_at=col["last_refresh_at"],
            next_refresh_at=col["next_refresh_at"],
            retry_at=col["retry_at"],
            attempts=col["attempts"],
            last_error=col["last_error"],
            error_class=col["error_class"],
            lease_owner=col["lease_owner"],
            lease_expires_at=col["lease_expires_at"],
            in_flight_since=col["in_flight_since"],
            lost_response=bool(col["lost_response"]),
            details=json.loads(col["details_json"] or "{}"),
        )
