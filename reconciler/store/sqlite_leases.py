"""Refresh leases and fenced token writes of the SQLite store (the ``grants`` table).

:class:`SQLiteLeases` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`, beside
:class:`~reconciler.store.sqlite_grants.SQLiteGrants`, whose helpers it uses. Callers are
``oauth.flows`` (:meth:`save_authorization`), ``reconciler.keeper`` and ``linkctl token``
(everything else), always through the :class:`~reconciler.store.grants.GrantStore` interface.

How the invariants listed in docs/testing.md hold here:

* one refresh in flight per link: :meth:`acquire_lease` is one conditional ``UPDATE``
  (SQLite serializes writers), so of many processes exactly one gets the lease until it
  expires; the keeper picks a TTL longer than its HTTP timeout;
* fencing: every later write says ``WHERE token_version = ? AND lease_owner = ?`` and
  raises :class:`~reconciler.store.grants.LeaseLost` when it matched no row;
* durability: the store runs WAL with ``synchronous=FULL``; :meth:`commit_tokens` writes
  the rotated refresh token, bumps the version and releases the lease in one commit,
  so nothing (release, hand-out) can happen before the token is on disk;
* a request that was sent but never answered (:meth:`mark_in_flight` without a commit,
  then a crash) is turned into ``lost_response`` when the next holder takes the lease.

Scheduling is data: each write that changes an input of the due rule ends with
:func:`~reconciler.store.sqlite_grants.write_due_at` (the domain rule, in Python), and
:meth:`due_links` / :meth:`next_due_at` only compare ``grants.due_at`` with the clock.

The ``*_many`` methods (the keeper's batches) run the same per-row statements for many
links inside ONE ``BEGIN IMMEDIATE`` … ``COMMIT``: one fsync for the batch instead of one
per link. Each row stays fenced on its own (``token_version`` + ``lease_owner``); a
fenced-out row is reported for that link and does not roll back the others. A batch
commit returns only after the whole transaction is durable, so a caller that releases
nothing and hands nothing out before it returns keeps invariant 4 for every link.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.domain.grants import GrantStatus
from reconciler.domain.links import uses_client_credentials
from reconciler.domain.schedule import next_refresh_time
from reconciler.errors import StateError
from reconciler.store import grants
from reconciler.store.sqlite_grants import IN_CHUNK, write_due_at
from reconciler.store.sqlite_links import links_with_secrets

if TYPE_CHECKING:
    from reconciler.domain.tokens import TokenResponse
    from reconciler.secrets import Secret
    from reconciler.store import sealing
    from reconciler.store.read_ahead import ReadAhead

_LINK_UID = "(SELECT uid FROM links WHERE name = ?)"
_STATUSES = frozenset(GrantStatus)
_REFRESHING = str(GrantStatus.REFRESHING)
# A lease is free when nobody holds it or its holder let it expire.
_LEASE_FREE = "(g.lease_owner IS NULL OR g.lease_expires_at <= :now)"
# The moment a row becomes due (0 = now), not before its current lease ends. ``due_at`` is
# written by the one due rule (``reconciler.domain.schedule.due_at``; NULL: never due).
_DUE_AT = "MAX(g.due_at, COALESCE(g.lease_expires_at, 0))"
DUE_LINKS_QUERY = (
    "SELECT l.name FROM grants g JOIN links l ON l.uid = g.link_uid"
    # ``g.due_at <= :now`` follows from the last term; it lets the due_at index narrow the rows.
    f" WHERE g.due_at <= :now AND {_LEASE_FREE} AND {_DUE_AT} <= :now"
    # Earliest due time first, in the due_at index's order: the scan stops after ``limit``
    # rows (ordering by the expression above sorted every due row, 55 ms for 10,000).
    " ORDER BY g.due_at, l.name LIMIT :limit"
)
# When a holder left a request in flight, the next holder learns the response was lost.
_ADOPT_IN_FLIGHT = (
    "lost_response = CASE WHEN in_flight_since IS NOT NULL THEN 1 ELSE lost_response END,"
    " details_json = CASE WHEN in_flight_since IS NOT NULL"
    " THEN json_set(details_json, '$.lost_response_sent_at', in_flight_since) ELSE details_json END,"
    " in_flight_since = NULL"
)


# The per-row statements, shared by the single-link methods and their batch forms.
_ACQUIRE = (
    "UPDATE grants SET lease_owner = :owner, lease_expires_at = :expires,"
    # A request left in flight by an expired holder (crash): its answer is lost.
    " lost_response = CASE WHEN in_flight_since IS NOT NULL AND lease_owner IS NOT :owner"
    " THEN 1 ELSE lost_response END,"
    " details_json = CASE WHEN in_flight_since IS NOT NULL AND lease_owner IS NOT :owner"
    " THEN json_set(details_json, '$.lost_response_sent_at', in_flight_since)"
    " ELSE details_json END,"
    " in_flight_since = CASE WHEN lease_owner IS :owner THEN in_flight_since END"
    f" WHERE link_uid = {_LINK_UID.replace('?', ':name')}"
    " AND (lease_owner IS NULL OR lease_expires_at <= :now OR lease_owner = :owner)"
)
_MARK = (
    "UPDATE grants SET in_flight_since = ?, status = ?,"
    " lease_expires_at = COALESCE(?, lease_expires_at)"
    f" WHERE link_uid = {_LINK_UID} AND token_version = ? AND lease_owner = ?"
    " AND lease_expires_at > ?"
)
# Every token write records the lifetime the provider stated (``linkctl token --min-valid``
# refuses from it without refreshing) and forgets an earlier lost response.
_DETAILS_AFTER_TOKENS = (
    "json_set(json_remove(COALESCE(details_json, '{}'), '$.lost_response_sent_at'), '$.expires_in', ?)"
)
# Fenced token write; also releases the lease, in the same transaction (invariant 4).
_COMMIT = (
    "UPDATE grants SET access_token = ?, refresh_token = COALESCE(?, refresh_token),"
    " token_type = ?, scope = COALESCE(?, scope), access_expires_at = ?,"
    " token_version = token_version + 1, status = ?, obtained_at = COALESCE(obtained_at, ?),"
    " last_refresh_at = ?, next_refresh_at = ?, retry_at = NULL, attempts = 0,"
    " last_error = NULL, error_class = NULL, lease_owner = NULL, lease_expires_at = NULL,"
    " in_flight_since = NULL, lost_response = 0,"
    f" details_json = {_DETAILS_AFTER_TOKENS}"
    " WHERE link_uid = ? AND token_version = ? AND (lease_owner = ? OR lease_owner IS NULL)"
)
_FAIL = (
    "UPDATE grants SET status = :status, error_class = :error_class, last_error = :message,"
    " retry_at = :retry_at, attempts = attempts + 1,"
    " details_json = CASE WHEN :lost"
    " THEN json_set(details_json, '$.lost_response_sent_at', COALESCE(in_flight_since, :now))"
    " ELSE details_json END,"
    " lost_response = MAX(lost_response, :lost),"
    " in_flight_since = NULL, lease_owner = NULL, lease_expires_at = NULL"
    f" WHERE link_uid = {_LINK_UID.replace('?', ':name')} AND token_version = :version"
    " AND (lease_owner = :owner OR lease_owner IS NULL)"
)


class SQLiteLeases:
    """Leases, scheduling and fenced token writes over the store's connection.

    Same attribute contract as :class:`~reconciler.store.sqlite_grants.SQLiteGrants`:
    ``self._conn`` (``isolation_level=None``), ``self._sealer`` and ``self._immediate()``,
    plus that mixin's helpers (``get_grant``, ``_seal_token``, ``_grant_from_row``).
    """

    if TYPE_CHECKING:  # provided by SQLiteGrants / SQLiteStore; declared for mypy only
        _conn: sqlite3.Connection
        _sealer: sealing.Sealer
        _read_ahead: ReadAhead

        def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
        def get_grant(self, name: str, *, with_tokens: bool = False) -> grants.Grant | None: ...
        def _seal_token(self, uid: str, field: str, token: Secret | None) -> bytes | None: ...
        def _iter_grant_rows(
            self, where: str = "", params: tuple[Any, ...] = ()
        ) -> Iterator[tuple[Any, ...]]: ...
        def _grant_from_row(self, row: tuple[Any, ...], *, with_tokens: bool) -> grants.Grant: ...

    # -- first tokens ----------------------------------------------------------------
    def save_authorization(self, name: str, response: TokenResponse, *, clock_now: float) -> grants.Grant:
        """Store first tokens (authorize, device or client-credentials): version +1, status healthy.

        Clears errors, the lost-response flag and any lease (the version bump fences a
        refresh that was still in flight with the previous grant). A response without a
        refresh token keeps the stored one.
        """
        with self._immediate() as conn:
            uid, spec_json = self._uid_and_spec(conn, name)
            spec = json.loads(spec_json)
            has_rt = response.refresh_token is not None or self._has_refresh_token(conn, uid)
            next_at = next_refresh_time(
                response.received_at,
                response.expires_in,
                has_refresh_token=has_rt,
                client_credentials=uses_client_credentials(spec),
            )
            conn.execute(
                "UPDATE grants SET access_token = ?, refresh_token = COALESCE(?, refresh_token),"
                " token_type = ?, scope = ?, access_expires_at = ?, token_version = token_version + 1,"
                " status = ?, obtained_at = ?, last_refresh_at = NULL, next_refresh_at = ?, retry_at = NULL,"
                " attempts = 0, last_error = NULL, error_class = NULL, lease_owner = NULL,"
                " lease_expires_at = NULL, in_flight_since = NULL, lost_response = 0,"
                f" details_json = json_set({_DETAILS_AFTER_TOKENS}, '$.authorized_scopes', json(?))"
                " WHERE link_uid = ?",
                (
                    *self._token_columns(uid, response),
                    GrantStatus.HEALTHY,
                    clock_now,
                    next_at,
                    response.expires_in,
                    # What was consented to: the declared scopes the authorization asked for.
                    json.dumps(list(spec.get("scopes") or ())),
                    uid,
                ),
            )
            write_due_at(conn, (uid,))
            return self._read(name)

    # -- scheduling ------------------------------------------------------------------
    def due_links(self, now: float, *, limit: int) -> list[str]:
        """Names of links to refresh or obtain now, most overdue first, whose lease is free."""
        rows = self._conn.execute(DUE_LINKS_QUERY, {"now": now, "limit": max(int(limit), 0)}).fetchall()
        return [row[0] for row in rows]

    def next_due_at(self) -> float | None:
        """The earliest time any link becomes due (None: nothing is scheduled)."""
        row = self._conn.execute(f"SELECT MIN({_DUE_AT}) FROM grants g WHERE g.due_at IS NOT NULL").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- leases ----------------------------------------------------------------------
    def acquire_lease(self, name: str, *, owner: str, ttl: float, now: float) -> grants.Grant | None:
        """Take the refresh lease of a link (tokens decrypted); None while someone else holds it."""
        with self._immediate() as conn:
            cursor = conn.execute(_ACQUIRE, {"owner": owner, "expires": now + ttl, "now": now, "name": name})
            if cursor.rowcount != 1:
                self._uid_and_spec(conn, name)  # raises for an unknown link
                return None
            self._write_due_at(conn, [name])
            return self._read(name, with_tokens=True)

    def mark_in_flight(
        self, name: str, *, owner: str, token_version: int, now: float, ttl: float | None = None
    ) -> None:
        """Record durably that a token request is about to be sent (optionally renewing the lease)."""
        with self._immediate() as conn:
            cursor = conn.execute(
                _MARK,
                (now, _REFRESHING, None if ttl is None else now + ttl, name, token_version, owner, now),
            )
            if cursor.rowcount != 1:
                raise self._lease_lost(conn, name, owner, token_version, "mark the refresh in flight")
            self._write_due_at(conn, [name])

    def commit_tokens(
        self,
        name: str,
        *,
        owner: str,
        expected_version: int,
        response: TokenResponse,
        now: float,
        next_refresh_at: float | None,
    ) -> grants.Grant:
        """Store refreshed tokens (fenced) and release the lease in the same transaction.

        The new refresh token replaces the old one; a response without one keeps it.
        Accepted when this owner still holds the lease, or nobody does (an expired lease
        nobody took): the unchanged token version proves no one else wrote tokens.
        """
        with self._immediate() as conn:
            uid, _ = self._uid_and_spec(conn, name)
            cursor = conn.execute(
                _COMMIT,
                (
                    *self._token_columns(uid, response),
                    GrantStatus.HEALTHY,
                    now,
                    now,
                    next_refresh_at,
                    response.expires_in,
                    uid,
                    expected_version,
                    owner,
                ),
            )
            if cursor.rowcount != 1:
                raise self._lease_lost(conn, name, owner, expected_version, "store refreshed tokens")
            write_due_at(conn, (uid,))
            return self._read(name)

    def record_failure(
        self,
        name: str,
        *,
        owner: str,
        expected_version: int,
        status: GrantStatus,
        error_class: str,
        message: str,
        retry_at: float | None,
        lost_response: bool,
        now: float,
    ) -> grants.Grant:
        """Record a failed attempt (fenced), count it, and release the lease.

        ``lost_response`` marks the refresh token as possibly consumed (kept until tokens
        are written again); the send time is kept in ``details['lost_response_sent_at']``.
        """
        if status not in _STATUSES:
            raise ValueError(f"unknown grant status {status!r}")
        with self._immediate() as conn:
            record = grants.FailureRecord(
                name, expected_version, status, error_class, message, retry_at, lost_response
            )
            cursor = conn.execute(_FAIL, self._failure_params(record, owner=owner, now=now))
            if cursor.rowcount != 1:
                raise self._lease_lost(conn, name, owner, expected_version, "record a failed refresh")
            self._write_due_at(conn, [name])
            return self._read(name)

    def release_lease(self, name: str, *, owner: str) -> bool:
        """Give up a lease without writing tokens; False if ``owner`` no longer held it.

        A request still marked in flight becomes a lost response: nobody knows its outcome.
        """
        with self._immediate() as conn:
            cursor = conn.execute(
                f"UPDATE grants SET {_ADOPT_IN_FLIGHT}, lease_owner = NULL, lease_expires_at = NULL"
                f" WHERE link_uid = {_LINK_UID} AND lease_owner = ?",
                (name, owner),
            )
            if cursor.rowcount != 1:
                return False
            self._write_due_at(conn, [name])
            return True

    # -- batches (one transaction each) ---------------------------------------------
    def acquire_leases(
        self, names: Sequence[str], *, owner: str, ttl: float, now: float
    ) -> list[grants.Grant]:
        """Take the leases of several links in one transaction (tokens decrypted).

        Same rule per row as :meth:`acquire_lease`; links held elsewhere or deleted are left out.
        """
        unique = list(dict.fromkeys(names))
        with self._immediate() as conn:
            taken = [
                name
                for name in unique
                if conn.execute(
                    _ACQUIRE, {"owner": owner, "expires": now + ttl, "now": now, "name": name}
                ).rowcount
                == 1
            ]
            self._write_due_at(conn, taken)
            self._read_ahead.remember(links_with_secrets(conn, taken))
            return self._read_many(taken, with_tokens=True)

    def mark_in_flight_many(
        self, items: Sequence[tuple[str, int]], *, owner: str, now: float, ttl: float | None = None
    ) -> list[grants.LeaseLost | None]:
        """:meth:`mark_in_flight` for ``(name, token_version)`` pairs in one durable transaction."""
        out: list[grants.LeaseLost | None] = []
        expires = None if ttl is None else now + ttl
        with self._immediate() as conn:
            marked: list[str] = []
            for name, version in items:
                cursor = conn.execute(_MARK, (now, _REFRESHING, expires, name, version, owner, now))
                if cursor.rowcount == 1:
                    marked.append(name)
                    out.append(None)
                else:
                    out.append(self._lease_lost(conn, name, owner, version, "mark the refresh in flight"))
            self._write_due_at(conn, marked)
        return out

    def commit_tokens_many(
        self, commits: Sequence[grants.TokenCommit], *, owner: str, now: float
    ) -> list[grants.LeaseLost | None]:
        """:meth:`commit_tokens` for several links in one durable transaction (each row fenced)."""
        out: list[grants.LeaseLost | None] = []
        with self._immediate() as conn:
            uids = self._uids(conn, [c.name for c in commits])
            committed: list[str] = []
            for c in commits:
                uid = uids.get(c.name)
                if uid is None:
                    out.append(
                        self._lease_lost(conn, c.name, owner, c.expected_version, "store refreshed tokens")
                    )
                    continue
                cursor = conn.execute(
                    _COMMIT,
                    (
                        *self._token_columns(uid, c.response),
                        GrantStatus.HEALTHY,
                        now,
                        now,
                        c.next_refresh_at,
                        c.response.expires_in,
                        uid,
                        c.expected_version,
                        owner,
                    ),
                )
                if cursor.rowcount == 1:
                    committed.append(uid)
                    out.append(None)
                else:
                    out.append(
                        self._lease_lost(conn, c.name, owner, c.expected_version, "store refreshed tokens")
                    )
            write_due_at(conn, committed)
        return out

    def record_failures_many(
        self, failures: Sequence[grants.FailureRecord], *, owner: str, now: float
    ) -> list[grants.LeaseLost | None]:
        """:meth:`record_failure` for several links in one durable transaction (each row fenced)."""
        for f in failures:
            if f.status not in _STATUSES:
                raise ValueError(f"unknown grant status {f.status!r}")
        out: list[grants.LeaseLost | None] = []
        with self._immediate() as conn:
            recorded: list[str] = []
            for f in failures:
                cursor = conn.execute(_FAIL, self._failure_params(f, owner=owner, now=now))
                if cursor.rowcount == 1:
                    recorded.append(f.name)
                    out.append(None)
                else:
                    out.append(
                        self._lease_lost(conn, f.name, owner, f.expected_version, "record a failed refresh")
                    )
            self._write_due_at(conn, recorded)
        return out

    # -- helpers ---------------------------------------------------------------------
    @staticmethod
    def _failure_params(f: grants.FailureRecord, *, owner: str, now: float) -> dict[str, Any]:
        return {
            "status": f.status,
            "error_class": f.error_class,
            "message": f.message,
            "retry_at": f.retry_at,
            "lost": 1 if f.lost_response else 0,
            "now": now,
            "name": f.name,
            "version": f.expected_version,
            "owner": owner,
        }

    def _write_due_at(self, conn: sqlite3.Connection, names: Sequence[str]) -> None:
        """Write the due time of these links' grants after a write changed an input of the rule."""
        write_due_at(conn, list(self._uids(conn, names).values()))

    def _uids(self, conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(names), IN_CHUNK):
            chunk = names[start : start + IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            out.update(conn.execute(f"SELECT name, uid FROM links WHERE name IN ({marks})", chunk).fetchall())
        return out

    def _read_many(self, names: Sequence[str], *, with_tokens: bool) -> list[grants.Grant]:
        out: list[grants.Grant] = []
        for start in range(0, len(names), IN_CHUNK):
            chunk = tuple(names[start : start + IN_CHUNK])
            marks = ", ".join("?" * len(chunk))
            rows = self._iter_grant_rows(f"l.name IN ({marks})", chunk)
            out.extend(self._grant_from_row(row, with_tokens=with_tokens) for row in rows)
        order = {name: i for i, name in enumerate(names)}
        out.sort(key=lambda g: order[g.link_name])
        return out

    def _uid_and_spec(self, conn: sqlite3.Connection, name: str) -> tuple[str, str]:
        row = conn.execute("SELECT uid, spec_json FROM links WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StateError(f"no link named {name!r} in the store", hint="run `linkctl list` to see links")
        return row[0], row[1]

    def _has_refresh_token(self, conn: sqlite3.Connection, uid: str) -> bool:
        row = conn.execute(
            "SELECT refresh_token IS NOT NULL FROM grants WHERE link_uid = ?", (uid,)
        ).fetchone()
        return bool(row and row[0])

    def _token_columns(self, uid: str, response: TokenResponse) -> tuple[Any, ...]:
        """``access_token, refresh_token, token_type, scope, access_expires_at`` values."""
        expires_at = None if response.expires_in is None else response.received_at + response.expires_in
        return (
            self._seal_token(uid, "access_token", response.access_token),
            self._seal_token(uid, "refresh_token", response.refresh_token),
            response.token_type,
            response.scope,
            expires_at,
        )

    def _read(self, name: str, *, with_tokens: bool = False) -> grants.Grant:
        grant = self.get_grant(name, with_tokens=with_tokens)
        if grant is None:  # pragma: no cover - the caller checked inside the same transaction
            raise StateError(f"no link named {name!r} in the store")
        return grant

    def _lease_lost(
        self, conn: sqlite3.Connection, name: str, owner: str, version: int, action: str
    ) -> grants.LeaseLost:
        row = conn.execute(
            "SELECT g.token_version, g.lease_owner, g.lease_expires_at FROM grants g"
            " JOIN links l ON l.uid = g.link_uid WHERE l.name = ?",
            (name,),
        ).fetchone()
        found = None if row is None else (row[0], row[1])
        return grants.fenced_out(name, action, version=version, found=found, owner=owner)
