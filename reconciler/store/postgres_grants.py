"""The grant half of the PostgreSQL store: reading grants, sealing tokens, the due time of a row.

:class:`PostgresGrants` is a mixin of :class:`reconciler.store.postgres.PostgresStore` (the
PostgreSQL twin of :mod:`reconciler.store.sqlite_grants`; backends share no code, only the
domain rules). Moments read from a row are handed out in this process's clock
(:class:`~reconciler.store.postgres_conn.ClockFrame`); the row holds the database's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.domain.grants import GrantStatus
from reconciler.domain.links import spec_json_uses_client_credentials, uses_client_credentials
from reconciler.domain.schedule import due_at
from reconciler.secrets import Secret
from reconciler.store import grants, sealing

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx

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
# Columns holding a moment (converted between the database's clock and the caller's).
MOMENT_COLUMNS = frozenset(
    {
        "access_expires_at",
        "obtained_at",
        "last_refresh_at",
        "next_refresh_at",
        "retry_at",
        "lease_expires_at",
        "in_flight_since",
    }
)
SELECT_GRANTS = (
    "SELECT l.name, "
    + ", ".join(f"g.{c}" for c in GRANT_COLUMNS)
    + " FROM grants g JOIN links l ON l.uid = g.link_uid"
)
# What an access-token answer needs (get_access_token): no refresh token, no bookkeeping.
_SELECT_ACCESS = (
    "SELECT g.link_uid, g.access_token, g.token_type, g.scope, g.access_expires_at"
    " FROM grants g JOIN links l ON l.uid = g.link_uid WHERE l.name = %s"
)
_DUE_INPUTS = (
    "SELECT g.link_uid, g.status, g.retry_at, g.next_refresh_at, g.in_flight_since,"
    " g.access_token IS NOT NULL, l.spec_json, g.due_at FROM grants g JOIN links l ON l.uid = g.link_uid"
    " WHERE g.link_uid = ANY(%s)"
)


# The due rule's inputs as a RETURNING list (a fenced UPDATE hands them back: no second read).
DUE_RETURNING = (
    "g.link_uid, g.status, g.retry_at, g.next_refresh_at, g.in_flight_since,"
    " g.access_token IS NOT NULL, l.spec_json, g.due_at"
)
_SET_DUE = (
    "UPDATE grants g SET due_at = v.due_at FROM unnest(%s::text[], %s::float8[]) AS v(uid, due_at)"
    " WHERE g.link_uid = v.uid"
)


def write_due_at(tx: Tx, uids: Sequence[str]) -> None:
    """Store ``grants.due_at`` of these grants from their rows as they are now (caller's transaction)."""
    if not uids:
        return
    write_due_from_rows(tx, tx.execute(_DUE_INPUTS, (list(uids),)).fetchall())


def write_due_from_rows(tx: Tx, rows: Sequence[Sequence[Any]]) -> None:
    """Store ``grants.due_at`` from rows of :data:`DUE_RETURNING` (one statement for all that changed)."""
    changed_uids: list[str] = []
    changed_due: list[float | None] = []
    for uid, status, retry_at, next_refresh_at, in_flight_since, has_access, spec_json, stored in rows:
        at = due_at(
            status=status,
            retry_at=retry_at,
            next_refresh_at=next_refresh_at,
            in_flight_since=in_flight_since,
            has_access_token=bool(has_access),
            client_credentials=spec_json_uses_client_credentials(spec_json),
        )
        if at != stored:
            changed_uids.append(uid)
            changed_due.append(at)
    if changed_uids:
        tx.execute(_SET_DUE, (changed_uids, changed_due))


def initial_grant_status(spec: Mapping[str, Any]) -> GrantStatus:
    """The status of a new link's grant: credentials first, then an admin's consent."""
    return GrantStatus.NEEDS_AUTHORIZATION if spec.get("clientId") else GrantStatus.PENDING_CREDENTIALS


def insert_initial_grant(tx: Tx, uid: str, spec: Mapping[str, Any]) -> None:
    """Create the grant row of a new link (inside the caller's transaction)."""
    status = initial_grant_status(spec)
    first_due = due_at(
        status=status,
        retry_at=None,
        next_refresh_at=None,
        in_flight_since=None,
        has_access_token=False,
        client_credentials=uses_client_credentials(spec),
    )
    tx.execute(
        "INSERT INTO grants (link_uid, status, token_version, due_at) VALUES (%s, %s, 0, %s)",
        (uid, str(status), first_due),
    )


def promote_pending_grant(tx: Tx, uid: str, spec: Mapping[str, Any], *, write_due: bool = True) -> None:
    """On a link update: ``pending_credentials`` becomes ``needs_authorization`` once a clientId exists.

    The due time is written again (the grant type may have changed) unless the caller
    writes it later for many links at once (``write_due=False``).
    """
    if spec.get("clientId"):
        tx.execute(
            "UPDATE grants SET status = %s WHERE link_uid = %s AND status = %s",
            (str(GrantStatus.NEEDS_AUTHORIZATION), uid, str(GrantStatus.PENDING_CREDENTIALS)),
        )
    if write_due:
        write_due_at(tx, (uid,))


class PostgresGrants:
    """Grant reads and token sealing over the store's ``self._db`` (a Connector) and ``self._sealer``."""

    _db: Connector
    _sealer: sealing.Sealer

    def _refresh_offset(self) -> None:
        """Measure the database clock again when the last reading is old (cheap, at most every 2 s)."""
        if self._db.clock.stale():
            self._db.run(lambda tx: None, write=False, action="read the database clock")

    def get_grant(self, name: str, *, with_tokens: bool = False) -> grants.Grant | None:
        """The grant of a link; tokens are decrypted only when asked for."""
        self._refresh_offset()
        row = self._db.query(SELECT_GRANTS + " WHERE l.name = %s", (name,), action="read a grant")
        return None if row is None else self._grant_from_row(row, with_tokens=with_tokens)

    def get_access_token(self, name: str) -> grants.AccessToken | None:
        """The stored access token of a link (one narrow row, one decryption); None: no grant."""
        self._refresh_offset()
        row = self._db.query(_SELECT_ACCESS, (name,), action="read an access token")
        if row is None:
            return None
        uid, blob, token_type, scope, expires_at = row
        return grants.AccessToken(
            name,
            self._open_token(uid, "access_token", blob),
            token_type,
            scope,
            self._db.clock.from_db(expires_at),
        )

    def list_grants(self) -> list[grants.Grant]:
        """All grants without tokens, ordered by link name."""
        self._refresh_offset()
        rows = self._db.query(SELECT_GRANTS + " ORDER BY l.name", action="list grants", all_rows=True)
        return [self._grant_from_row(row, with_tokens=False) for row in rows]

    def _grant_rows(self, tx: Tx, names: Sequence[str]) -> list[tuple[Any, ...]]:
        """Grant rows of these links in the given order (inside ``tx``)."""
        if not names:
            return []
        rows = tx.execute(SELECT_GRANTS + " WHERE l.name = ANY(%s)", (list(names),)).fetchall()
        order = {name: i for i, name in enumerate(names)}
        return sorted(rows, key=lambda r: order[r[0]])

    def _seal_token(self, uid: str, field: str, token: Secret | None) -> bytes | None:
        """Ciphertext for a token column (``None`` stays NULL)."""
        if token is None:
            return None
        return self._sealer.seal(token.reveal().encode("utf-8"), sealing.grant_aad(uid, field))

    def _open_token(self, uid: str, field: str, blob: bytes | None) -> Secret | None:
        if blob is None:
            return None
        return Secret(self._sealer.open(bytes(blob), sealing.grant_aad(uid, field)).decode("utf-8"))

    def _grant_from_row(self, row: Sequence[Any], *, with_tokens: bool) -> grants.Grant:
        name, *values = row
        col = dict(zip(GRANT_COLUMNS, values, strict=True))
        for key in MOMENT_COLUMNS:
            col[key] = self._db.clock.from_db(col[key])
        uid = col["link_uid"]
        access = refresh = None
        if with_tokens:
            access = self._open_token(uid, "access_token", col["access_token"])
            refresh = self._open_token(uid, "refresh_token", col["refresh_token"])
        details = json.loads(col["details_json"] or "{}")
        sent = details.get("lost_response_sent_at")
        if isinstance(sent, int | float):
            details["lost_response_sent_at"] = self._db.clock.from_db(float(sent))
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
            details=details,
        )


def lease_lost(tx: Tx, name: str, owner: str, version: int, action: str) -> grants.LeaseLost:
    """The fencing error of a write to ``name`` that matched no row, saying who holds it now."""
    row = tx.execute(
        "SELECT g.token_version, g.lease_owner FROM grants g JOIN links l ON l.uid = g.link_uid"
        " WHERE l.name = %s",
        (name,),
    ).fetchone()
    return grants.fenced_out(
        name, action, version=version, found=None if row is None else (row[0], row[1]), owner=owner
    )
