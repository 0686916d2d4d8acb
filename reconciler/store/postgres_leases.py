"""Refresh leases and fenced token writes of the PostgreSQL store (the ``grants`` table).

:class:`PostgresLeases` is a mixin of :class:`reconciler.store.postgres.PostgresStore`, the
twin of :mod:`reconciler.store.sqlite_leases` for many keepers on many machines:

* claiming: :meth:`acquire_leases` takes the rows in ONE statement,
  ``UPDATE … WHERE link_uid IN (SELECT … FOR UPDATE OF g SKIP LOCKED) RETURNING``, so keepers
  that asked for overlapping batches never wait on each other and each row goes to one;
* one clock: a lease is free, expired or still held by the database's clock
  (``clock_timestamp()``, taken at the start of the transaction and again in the lease
  check of :meth:`mark_in_flight`), never by the caller's ``now``;
* fencing: every later write is conditional on ``token_version`` and ``lease_owner`` and
  raises :class:`~reconciler.store.grants.LeaseLost` when it matched no row; a keeper that
  paused past its lease can neither mark a new send (the lease check) nor commit (the
  next holder changed the owner, then the version);
* a lost commit acknowledgement is resolved by the connector (``pg_xact_status`` of the
  transaction): committed once, or run again under the same fence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reconciler.domain.grants import GrantStatus
from reconciler.domain.links import spec_json_uses_client_credentials, uses_client_credentials
from reconciler.domain.schedule import due_at, next_refresh_time
from reconciler.errors import StateError
from reconciler.store import grants
from reconciler.store.postgres_grants import (
    DUE_RETURNING,
    GRANT_COLUMNS,
    lease_lost,
    write_due_at,
    write_due_from_rows,
)
from reconciler.store.postgres_links import LINK_COLUMNS

if TYPE_CHECKING:
    from reconciler.domain.tokens import TokenResponse
    from reconciler.secrets import Secret
    from reconciler.store import sealing
    from reconciler.store.postgres_conn import Connector, Tx

_STATUSES = frozenset(GrantStatus)
_REFRESHING = str(GrantStatus.REFRESHING)
_HEALTHY = str(GrantStatus.HEALTHY)
_DUE_AT = "GREATEST(g.due_at, COALESCE(g.lease_expires_at, 0))"
_DUE_LINKS = (
    "SELECT l.name FROM grants g JOIN links l ON l.uid = g.link_uid"
    " WHERE g.due_at <= %(now)s AND (g.lease_owner IS NULL OR g.lease_expires_at <= %(now)s)"
    f" AND {_DUE_AT} <= %(now)s ORDER BY g.due_at, l.name LIMIT %(limit)s"  # as the SQLite store
)
_SENT_AT = "jsonb_set(g.details_json::jsonb, '{lost_response_sent_at}', to_jsonb(g.in_flight_since))::text"
_ACQUIRE = (
    "UPDATE grants g SET lease_owner = %(owner)s, lease_expires_at = %(expires)s,"
    # A request left in flight by an expired holder (crash): its answer is lost.
    " lost_response = CASE WHEN g.in_flight_since IS NOT NULL AND g.lease_owner IS DISTINCT FROM %(owner)s"
    " THEN 1 ELSE g.lost_response END,"
    " details_json = CASE WHEN g.in_flight_since IS NOT NULL AND g.lease_owner IS DISTINCT FROM %(owner)s"
    f" THEN {_SENT_AT} ELSE g.details_json END,"
    " in_flight_since = CASE WHEN g.lease_owner = %(owner)s THEN g.in_flight_since END"
    " FROM links l WHERE l.uid = g.link_uid AND g.link_uid IN ("
    " SELECT c.link_uid FROM grants c JOIN links cl ON cl.uid = c.link_uid WHERE cl.name = ANY(%(names)s)"
    " AND (c.lease_owner IS NULL OR c.lease_expires_at <= %(now)s OR c.lease_owner = %(owner)s)"
    " FOR UPDATE OF c SKIP LOCKED)"
    # The grant as leased (read back by the same statement), the due rule's inputs, and the
    # link with its sealed secrets (the keeper's next reads: see PostgresStore's read-ahead).
    f" RETURNING l.name, {', '.join(f'g.{c}' for c in GRANT_COLUMNS)}, {DUE_RETURNING},"
    f" {', '.join('l.' + c.strip() for c in LINK_COLUMNS.split(','))},"
    " ARRAY(SELECT s.field FROM secrets s WHERE s.link_uid = g.link_uid ORDER BY s.field),"
    " ARRAY(SELECT s.ciphertext FROM secrets s WHERE s.link_uid = g.link_uid ORDER BY s.field)"
)
_LINK_WIDTH = len(LINK_COLUMNS.split(","))
_DUE_WIDTH = len(DUE_RETURNING.split(","))
# One statement for a whole chunk: each row fenced by its token version, the lease owner and
# a lease not yet ended by the database clock; the due rule's inputs come back with it.
_MARK = (
    "UPDATE grants g SET in_flight_since = %(now)s, status = %(status)s,"
    " lease_expires_at = COALESCE(%(expires)s, g.lease_expires_at)"
    " FROM links l, unnest(%(names)s::text[], %(versions)s::bigint[]) AS v(name, version)"
    " WHERE l.name = v.name AND g.link_uid = l.uid AND g.token_version = v.version"
    " AND g.lease_owner = %(owner)s AND g.lease_expires_at > {fresh_now}"
    f" RETURNING l.name, g.token_version, {DUE_RETURNING}"
)
_DETAILS_AFTER_TOKENS = (
    "((COALESCE(details_json, '{}')::jsonb - 'lost_response_sent_at')"
    " || jsonb_build_object('expires_in', %(expires_in)s::float8))"
)
_TOKEN_SET = (
    "access_token = %(access)s, refresh_token = COALESCE(%(refresh)s, refresh_token),"
    " token_type = %(token_type)s, access_expires_at = %(expires_at)s,"
    " token_version = token_version + 1, status = %(status)s,"
    " retry_at = NULL, attempts = 0, last_error = NULL, error_class = NULL, lease_owner = NULL,"
    " lease_expires_at = NULL, in_flight_since = NULL, lost_response = 0"
)
# One statement for a whole chunk of refreshed tokens: each row fenced by its token version
# and the lease owner (or no owner: a lease that ended with nobody taking it); due_at is the
# Python rule's value for the row as written, computed before (every input is known then).
_COMMIT = (
    "UPDATE grants g SET access_token = v.access, refresh_token = COALESCE(v.refresh, g.refresh_token),"
    " token_type = v.token_type, access_expires_at = v.expires_at,"
    " token_version = g.token_version + 1, status = %(status)s,"
    " retry_at = NULL, attempts = 0, last_error = NULL, error_class = NULL, lease_owner = NULL,"
    " lease_expires_at = NULL, in_flight_since = NULL, lost_response = 0,"
    " scope = COALESCE(v.scope, g.scope), obtained_at = COALESCE(g.obtained_at, %(now)s),"
    " last_refresh_at = %(now)s, next_refresh_at = v.next, due_at = v.due_at,"
    " details_json = ((COALESCE(g.details_json, '{}')::jsonb - 'lost_response_sent_at')"
    " || jsonb_build_object('expires_in', v.expires_in))::text"
    " FROM unnest(%(uids)s::text[], %(versions)s::bigint[], %(access)s::bytea[], %(refresh)s::bytea[],"
    " %(token_types)s::text[], %(scopes)s::text[], %(expires_at)s::float8[], %(next)s::float8[],"
    " %(expires_in)s::float8[], %(due_at)s::float8[])"
    " AS v(uid, version, access, refresh, token_type, scope, expires_at, next, expires_in, due_at)"
    " WHERE g.link_uid = v.uid AND g.token_version = v.version"
    " AND (g.lease_owner = %(owner)s OR g.lease_owner IS NULL)"
    " RETURNING g.link_uid"
)
_AUTHORIZE = (
    f"UPDATE grants SET {_TOKEN_SET}, scope = %(scope)s, obtained_at = %(now)s, last_refresh_at = NULL,"
    " next_refresh_at = %(next)s,"
    f" details_json = jsonb_set({_DETAILS_AFTER_TOKENS}, '{{authorized_scopes}}', %(scopes)s::jsonb)::text"
    " WHERE link_uid = %(uid)s"
)
_FAIL = (
    "UPDATE grants g SET status = %(status)s, error_class = %(error_class)s, last_error = %(message)s,"
    " retry_at = %(retry_at)s, attempts = g.attempts + 1,"
    " details_json = CASE WHEN %(lost)s = 1 THEN jsonb_set(g.details_json::jsonb,"
    " '{lost_response_sent_at}', to_jsonb(COALESCE(g.in_flight_since, %(now)s::float8)))::text"
    " ELSE g.details_json END,"
    " lost_response = GREATEST(g.lost_response, %(lost)s),"
    " in_flight_since = NULL, lease_owner = NULL, lease_expires_at = NULL"
    " WHERE g.link_uid = (SELECT uid FROM links WHERE name = %(name)s) AND g.token_version = %(version)s"
    " AND (g.lease_owner = %(owner)s OR g.lease_owner IS NULL)"
)
_RELEASE = (
    "UPDATE grants g SET lost_response = CASE WHEN g.in_flight_since IS NOT NULL THEN 1"
    " ELSE g.lost_response END,"
    f" details_json = CASE WHEN g.in_flight_since IS NOT NULL THEN {_SENT_AT} ELSE g.details_json END,"
    " in_flight_since = NULL, lease_owner = NULL, lease_expires_at = NULL"
    " WHERE g.link_uid = (SELECT uid FROM links WHERE name = %(name)s) AND g.lease_owner = %(owner)s"
    " RETURNING g.link_uid"
)


class PostgresLeases:
    """Leases, scheduling and fenced token writes over the store's connector ``self._db``."""

    if TYPE_CHECKING:  # provided by PostgresGrants / PostgresStore; declared for mypy only
        _db: Connector
        _sealer: sealing.Sealer

        def _seal_token(self, uid: str, field: str, token: Secret | None) -> bytes | None: ...
        def _grant_from_row(self, row: Sequence[Any], *, with_tokens: bool) -> grants.Grant: ...
        def _grant_rows(self, tx: Tx, names: Sequence[str]) -> list[tuple[Any, ...]]: ...
        def _check_writable(self) -> None: ...
        def _remember_links(
            self, rows: dict[str, tuple[Sequence[Any], Sequence[str], Sequence[bytes]]]
        ) -> None: ...

    def _fresh_now(self) -> str:
        """SQL for "now" in a lease check: the caller's value, or the database clock at that moment."""
        if self._db.clock.caller_clock:
            return "%(now)s"
        return "GREATEST(%(now)s, EXTRACT(EPOCH FROM clock_timestamp())::float8)"

    def _write(self, action: str, work: Any) -> Any:
        self._check_writable()
        return self._db.run(work, write=True, action=action)

    # -- first tokens ----------------------------------------------------------------
    def save_authorization(self, name: str, response: TokenResponse, *, clock_now: float) -> grants.Grant:
        """Store first tokens (authorize, device or client-credentials): version +1, status healthy."""

        def work(tx: Tx) -> tuple[Any, ...]:
            uid, spec_json = _uid_and_spec(tx, name)
            spec = json.loads(spec_json)
            row = tx.execute("SELECT refresh_token IS NOT NULL FROM grants WHERE link_uid = %s", (uid,))
            has_stored = bool((row.fetchone() or (False,))[0])
            next_at = next_refresh_time(
                response.received_at,
                response.expires_in,
                has_refresh_token=response.refresh_token is not None or has_stored,
                client_credentials=uses_client_credentials(spec),
            )
            params = self._token_params(uid, response, now=self._db.clock.now(tx.db_now, clock_now))
            params.update(
                uid=uid, next=self._db.clock.to_db(next_at), scopes=json.dumps(list(spec.get("scopes") or ()))
            )
            tx.execute(_AUTHORIZE, params)
            write_due_at(tx, (uid,))
            return self._grant_rows(tx, [name])[0]

        return self._grant_from_row(self._write("store first tokens", work), with_tokens=False)

    # -- scheduling ------------------------------------------------------------------
    def due_links(self, now: float, *, limit: int) -> list[str]:
        """Names of links to refresh or obtain now (by the database clock), most overdue first."""

        def work(tx: Tx) -> list[str]:
            params = {"now": self._db.clock.now(tx.db_now, now), "limit": max(int(limit), 0)}
            return [row[0] for row in tx.execute(_DUE_LINKS, params)]

        result: list[str] = self._db.run(work, write=False, action="find due links")
        return result

    def next_due_at(self) -> float | None:
        """The earliest time any link becomes due, in this process's clock (None: nothing scheduled)."""
        row = self._db.run(
            lambda tx: tx.execute(
                f"SELECT MIN({_DUE_AT}) FROM grants g WHERE g.due_at IS NOT NULL"
            ).fetchone(),
            write=False,
            action="find the next due time",
        )
        return None if row is None or row[0] is None else self._db.clock.from_db(float(row[0]))

    # -- leases ----------------------------------------------------------------------
    def acquire_lease(self, name: str, *, owner: str, ttl: float, now: float) -> grants.Grant | None:
        """Take the refresh lease of a link (tokens decrypted); None while someone else holds it."""
        taken = self._acquire([name], owner=owner, ttl=ttl, now=now, strict=True)
        return taken[0] if taken else None

    def acquire_leases(
        self, names: Sequence[str], *, owner: str, ttl: float, now: float
    ) -> list[grants.Grant]:
        """Take the leases of several links in one statement (SKIP LOCKED); held or unknown ones left out."""
        return self._acquire(list(dict.fromkeys(names)), owner=owner, ttl=ttl, now=now, strict=False)

    def _acquire(
        self, names: list[str], *, owner: str, ttl: float, now: float, strict: bool
    ) -> list[grants.Grant]:
        def work(tx: Tx) -> list[tuple[Any, ...]]:
            at = self._db.clock.now(tx.db_now, now)
            params = {"owner": owner, "expires": at + ttl, "now": at, "names": names}
            rows = tx.execute(_ACQUIRE, params).fetchall()
            if strict and not rows:
                _uid_and_spec(tx, names[0])  # raises for an unknown link
            width = 1 + len(GRANT_COLUMNS)
            write_due_from_rows(tx, [row[width : width + _DUE_WIDTH] for row in rows])
            links = width + _DUE_WIDTH
            self._remember_links(
                {row[0]: (row[links : links + _LINK_WIDTH], row[-2], row[-1]) for row in rows}
            )
            taken = {row[0]: row[:width] for row in rows}
            return [taken[n] for n in names if n in taken]

        rows = self._write("take refresh leases", work)
        return [self._grant_from_row(row, with_tokens=True) for row in rows]

    def mark_in_flight(
        self, name: str, *, owner: str, token_version: int, now: float, ttl: float | None = None
    ) -> None:
        """Record durably that a token request is about to be sent; refused once the lease ended."""
        result = self.mark_in_flight_many([(name, token_version)], owner=owner, now=now, ttl=ttl)
        if result[0] is not None:
            raise result[0]

    def mark_in_flight_many(
        self, items: Sequence[tuple[str, int]], *, owner: str, now: float, ttl: float | None = None
    ) -> list[grants.LeaseLost | None]:
        """:meth:`mark_in_flight` for ``(name, token_version)`` pairs in one durable transaction."""
        sql = _MARK.format(fresh_now=self._fresh_now())

        def work(tx: Tx) -> list[grants.LeaseLost | None]:
            at = self._db.clock.now(tx.db_now, now)
            params = {
                "now": at,
                "status": _REFRESHING,
                "expires": None if ttl is None else at + ttl,
                "names": [name for name, _ in items],
                "versions": [version for _, version in items],
                "owner": owner,
            }
            rows = tx.execute(sql, params).fetchall() if items else []
            marked = {(row[0], row[1]) for row in rows}
            write_due_from_rows(tx, [row[2:] for row in rows])
            return [
                None
                if (name, version) in marked
                else lease_lost(tx, name, owner, version, "mark the refresh in flight")
                for name, version in items
            ]

        result: list[grants.LeaseLost | None] = self._write("mark refreshes in flight", work)
        return result

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
        """Store refreshed tokens (fenced) and release the lease in the same transaction."""
        commit = grants.TokenCommit(name, expected_version, response, next_refresh_at)
        fenced = self.commit_tokens_many([commit], owner=owner, now=now)[0]
        if fenced is not None:
            raise fenced
        grant = self.get_grant(name)  # type: ignore[attr-defined]
        if grant is None:  # pragma: no cover - deleted right after the commit
            raise StateError(f"no link named {name!r} in the store")
        return grant  # type: ignore[no-any-return]

    def commit_tokens_many(
        self, commits: Sequence[grants.TokenCommit], *, owner: str, now: float
    ) -> list[grants.LeaseLost | None]:
        """:meth:`commit_tokens` for several links in one durable transaction (each row fenced)."""

        def work(tx: Tx) -> list[grants.LeaseLost | None]:
            at = self._db.clock.now(tx.db_now, now)
            links = _uids_and_specs(tx, [c.name for c in commits])
            action = "store refreshed tokens"
            out: list[grants.LeaseLost | None] = [
                None if c.name in links else lease_lost(tx, c.name, owner, c.expected_version, action)
                for c in commits
            ]
            # A name given twice is written as its own UPDATEs would be, one after the other,
            # and each fencing error says what its own UPDATE found.
            for wave in grants.rounds_of([c.name for c in commits], known=links):
                columns = self._commit_columns([commits[i] for i in wave], links)
                params = {**columns, "status": _HEALTHY, "now": at, "owner": owner}
                committed = {row[0] for row in tx.execute(_COMMIT, params)}
                for i in wave:
                    c = commits[i]
                    if links[c.name][0] not in committed:
                        out[i] = lease_lost(tx, c.name, owner, c.expected_version, action)
            return out

        result: list[grants.LeaseLost | None] = self._write("store refreshed tokens", work)
        return result

    def _commit_columns(
        self, batch: Sequence[grants.TokenCommit], links: dict[str, tuple[str, str]]
    ) -> dict[str, list[Any]]:
        """The per-row arrays of :data:`_COMMIT` for ``batch`` (each name once)."""
        columns: dict[str, list[Any]] = {
            key: []
            for key in (
                "uids", "versions", "access", "refresh", "token_types", "scopes",
                "expires_at", "next", "expires_in", "due_at",
            )
        }  # fmt: skip
        for c in batch:
            uid, spec_json = links[c.name]
            r = c.response
            expires_at = None if r.expires_in is None else r.received_at + r.expires_in
            next_at = self._db.clock.to_db(c.next_refresh_at)
            columns["uids"].append(uid)
            columns["versions"].append(c.expected_version)
            columns["access"].append(self._seal_token(uid, "access_token", r.access_token))
            columns["refresh"].append(self._seal_token(uid, "refresh_token", r.refresh_token))
            columns["token_types"].append(r.token_type)
            columns["scopes"].append(r.scope)
            columns["expires_at"].append(self._db.clock.to_db(expires_at))
            columns["next"].append(next_at)
            columns["expires_in"].append(r.expires_in)
            columns["due_at"].append(
                due_at(
                    status=_HEALTHY,
                    retry_at=None,
                    next_refresh_at=next_at,
                    in_flight_since=None,
                    has_access_token=r.access_token is not None,
                    client_credentials=spec_json_uses_client_credentials(spec_json),
                )
            )
        return columns

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
        """Record a failed attempt (fenced), count it, and release the lease."""
        record = grants.FailureRecord(
            name, expected_version, status, error_class, message, retry_at, lost_response
        )
        fenced = self.record_failures_many([record], owner=owner, now=now)[0]
        if fenced is not None:
            raise fenced
        grant = self.get_grant(name)  # type: ignore[attr-defined]
        if grant is None:  # pragma: no cover
            raise StateError(f"no link named {name!r} in the store")
        return grant  # type: ignore[no-any-return]

    def record_failures_many(
        self, failures: Sequence[grants.FailureRecord], *, owner: str, now: float
    ) -> list[grants.LeaseLost | None]:
        """:meth:`record_failure` for several links in one durable transaction (each row fenced)."""
        for f in failures:
            if f.status not in _STATUSES:
                raise ValueError(f"unknown grant status {f.status!r}")

        def work(tx: Tx) -> list[grants.LeaseLost | None]:
            at = self._db.clock.now(tx.db_now, now)
            out: list[grants.LeaseLost | None] = []
            recorded: list[str] = []
            params = [
                {
                    "status": str(f.status),
                    "error_class": f.error_class,
                    "message": f.message,
                    "retry_at": self._db.clock.to_db(f.retry_at),
                    "lost": 1 if f.lost_response else 0,
                    "now": at,
                    "name": f.name,
                    "version": f.expected_version,
                    "owner": owner,
                }
                for f in failures
            ]
            for f, matched in zip(failures, _fenced(tx, _FAIL, params), strict=True):
                if matched:
                    recorded.append(f.name)
                    out.append(None)
                else:
                    out.append(lease_lost(tx, f.name, owner, f.expected_version, "record a failed refresh"))
            write_due_at(tx, _uids(tx, recorded))
            return out

        result: list[grants.LeaseLost | None] = self._write("record failed refreshes", work)
        return result

    def release_lease(self, name: str, *, owner: str) -> bool:
        """Give up a lease without writing tokens; False if ``owner`` no longer held it."""

        def work(tx: Tx) -> bool:
            rows = tx.execute(_RELEASE, {"name": name, "owner": owner}).fetchall()
            write_due_at(tx, [r[0] for r in rows])
            return bool(rows)

        released: bool = self._write("release a lease", work)
        return released

    # -- helpers ---------------------------------------------------------------------
    def _token_params(self, uid: str, response: TokenResponse, *, now: float) -> dict[str, Any]:
        expires_at = None if response.expires_in is None else response.received_at + response.expires_in
        return {
            "access": self._seal_token(uid, "access_token", response.access_token),
            "refresh": self._seal_token(uid, "refresh_token", response.refresh_token),
            "token_type": response.token_type,
            "scope": response.scope,
            "expires_at": self._db.clock.to_db(expires_at),
            "status": str(GrantStatus.HEALTHY),
            "now": now,
            "expires_in": response.expires_in,
        }


def _fenced(tx: Tx, sql: str, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Run one fenced UPDATE per row, pipelined (one round trip for the batch); per row: matched."""
    if not rows:
        return []
    cursors = []
    with tx.conn.pipeline() as pipeline:
        for params in rows:
            cur = tx.conn.cursor()
            cur.execute(sql, params)
            cursors.append(cur)
        pipeline.sync()
    out = [cur.rowcount == 1 for cur in cursors]
    for cur in cursors:
        cur.close()
    return out


def _uid_and_spec(tx: Tx, name: str) -> tuple[str, str]:
    row = tx.execute("SELECT uid, spec_json FROM links WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise StateError(f"no link named {name!r} in the store", hint="run `linkctl list` to see links")
    return row[0], row[1]


def _uids_and_specs(tx: Tx, names: Sequence[str]) -> dict[str, tuple[str, str]]:
    if not names:
        return {}
    rows = tx.execute("SELECT name, uid, spec_json FROM links WHERE name = ANY(%s)", (list(names),))
    return {name: (uid, spec_json) for name, uid, spec_json in rows}


def _uid_map(tx: Tx, names: Sequence[str]) -> dict[str, str]:
    if not names:
        return {}
    return dict(tx.execute("SELECT name, uid FROM links WHERE name = ANY(%s)", (list(names),)).fetchall())


def _uids(tx: Tx, names: Sequence[str]) -> list[str]:
    return list(_uid_map(tx, names).values())
