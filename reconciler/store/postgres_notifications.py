"""The status-webhook half of the PostgreSQL store: ``link_notifications``, the outbox, targets.

:class:`PostgresNotifications` is a mixin of :class:`reconciler.store.postgres.PostgresStore`,
the twin of :mod:`reconciler.store.sqlite_notifications` for processes on many machines:

* change detection runs under a transaction advisory lock, so of any number of keepers
  and servers looking at once exactly one enqueues each change (SQLite's write lock does
  this there);
* outbox rows are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease judged by the
  database clock; only the lease holder finishes a row;
* the targets live in ``meta`` (key ``notify_targets``) as on SQLite, URL and key sealed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.domain.notify import NotifyTargetDecl
from reconciler.errors import StateError
from reconciler.secrets import Secret
from reconciler.store import sealing
from reconciler.store.base import Event
from reconciler.store.notifications import (
    Delivery,
    LinkState,
    Notifications,
    NotifyTarget,
    StatusChange,
    target_aad,
)

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx

_TARGETS_KEY = "notify_targets"
_CHANGES_LOCK = (0x6C696E6B, 2)  # serializes change detection (the apply lock is (…, 1))
_LINK_STATES = (
    "SELECT l.name, l.provider, g.status, g.last_error, g.error_class, g.retry_at, g.access_expires_at"
    " FROM links l LEFT JOIN grants g ON g.link_uid = l.uid ORDER BY l.name"
)
_DIFFERING = (
    "SELECT l.name, l.provider, g.status, g.last_error, g.error_class, g.retry_at, g.access_expires_at,"
    " n.status FROM links l JOIN grants g ON g.link_uid = l.uid"
    " LEFT JOIN link_notifications n ON n.link_name = l.name"
    " WHERE g.status = ANY(%s) AND (n.status IS NULL OR n.status <> g.status) ORDER BY l.name"
)
_GONE = "FROM link_notifications n WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.name = n.link_name)"
_DUE = (
    "delivered_at IS NULL AND next_try_at <= %(now)s AND (lease_expires IS NULL OR lease_expires <= %(now)s)"
)
KEEP_DELIVERED = 7 * 86_400.0  # delivered rows kept this long (seconds), as on SQLite


def target_id(fingerprint_key: bytes, url: Secret) -> str:
    """The id of a webhook target: a keyed fingerprint of its URL (16 hex digits, as on SQLite)."""
    return url.fingerprint(fingerprint_key, "notify-url")[:16]


class PostgresNotifications(Notifications):
    """Status webhooks over the store's connector ``self._db``."""

    _db: Connector
    _sealer: sealing.Sealer

    if TYPE_CHECKING:

        def _check_writable(self) -> None: ...
        def _insert_event(self, tx: Tx, event: Event, default_actor: str, now: float) -> None: ...

    # -- targets ---------------------------------------------------------------------
    def put_notify_targets(self, targets: Sequence[NotifyTargetDecl], *, actor: str, now: float) -> bool:
        """Replace the declared webhook targets (sealed); False (nothing written) when unchanged."""
        self._check_writable()
        key = self._sealer.fingerprint_key
        rows = []
        for target in targets:
            tid = target_id(key, target.url)
            rows.append(
                {
                    "id": tid,
                    "origin": target.origin,
                    "fingerprint": target.secret.fingerprint(key, "notify-secret", target.url.reveal()),
                    "url": self._seal_b64(target.url, target_aad(tid, "url")),
                    "secret": self._seal_b64(target.secret, target_aad(tid, "secret")),
                }
            )

        def work(tx: Tx) -> bool:
            row = tx.execute("SELECT value FROM meta WHERE key = %s FOR UPDATE", (_TARGETS_KEY,)).fetchone()
            before = json.loads(row[0]) if row is not None else []
            if [(t["id"], t["fingerprint"]) for t in before] == [(t["id"], t["fingerprint"]) for t in rows]:
                return False
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_TARGETS_KEY, json.dumps(rows, sort_keys=True)),
            )
            event = Event(
                action="notify.targets_updated",
                link=None,
                actor=actor,
                detail={"targets": [t["origin"] for t in rows], "count": len(rows)},
            )
            self._insert_event(tx, event, actor, self._db.clock.now(tx.db_now, now))
            return True

        changed: bool = self._db.run(work, write=True, action="store webhook targets")
        return changed

    def notify_targets(self) -> list[NotifyTarget]:
        """The stored webhook targets, URLs and keys opened."""
        row = self._db.run(
            lambda tx: tx.execute("SELECT value FROM meta WHERE key = %s", (_TARGETS_KEY,)).fetchone(),
            write=False,
            action="read webhook targets",
        )
        if row is None:
            return []
        return [
            NotifyTarget(
                id=t["id"],
                origin=t["origin"],
                url=self._open_b64(t["url"], target_aad(t["id"], "url")),
                secret=self._open_b64(t["secret"], target_aad(t["id"], "secret")),
            )
            for t in json.loads(row[0])
        ]

    def _seal_b64(self, value: Secret, aad: bytes) -> str:
        return base64.b64encode(self._sealer.seal(value.reveal().encode("utf-8"), aad)).decode("ascii")

    def _open_b64(self, blob: str, aad: bytes) -> Secret:
        try:
            return Secret(self._sealer.open(base64.b64decode(blob), aad).decode("utf-8"))
        except (sealing.SealError, ValueError) as exc:
            raise StateError(
                f"a stored webhook target cannot be decrypted: {exc}",
                hint="the row was altered or copied from another store; `linkctl apply` stores it again",
            ) from None

    # -- statuses ----------------------------------------------------------------------
    def _state(self, row: Sequence[Any]) -> LinkState:
        clock = self._db.clock
        name, provider, status, last_error, error_class, retry_at, expires = row
        return LinkState(
            name, provider, status, last_error, error_class, clock.from_db(retry_at), clock.from_db(expires)
        )

    def link_states(self) -> list[LinkState]:
        """Every link's status and timing in one read, ordered by name (no token decrypted)."""
        rows = self._db.run(
            lambda tx: tx.execute(_LINK_STATES).fetchall(), write=False, action="read link states"
        )
        return [self._state(row) for row in rows]

    def record_status_changes(
        self,
        *,
        now: float,
        targets: Sequence[str],
        render: Callable[[StatusChange], str],
        announced: frozenset[str],
    ) -> list[StatusChange]:
        """Detect and enqueue, in one write transaction, every change of a link's announced status."""
        statuses = sorted(announced)

        def look(tx: Tx) -> bool:
            return bool(
                tx.execute(_DIFFERING + " LIMIT 1", (statuses,)).fetchone()
                or tx.execute(f"SELECT 1 {_GONE} LIMIT 1").fetchone()
            )

        # A read first: most looks find nothing, and then no lock is taken at all.
        if not self._db.run(look, write=False, action="look for status changes"):
            return []
        self._check_writable()

        def work(tx: Tx) -> list[StatusChange]:
            tx.execute("SELECT pg_advisory_xact_lock(%s, %s)", _CHANGES_LOCK)
            at = self._db.clock.now(tx.db_now, now)
            changes: list[StatusChange] = []
            for *columns, old in tx.execute(_DIFFERING, (statuses,)).fetchall():
                state = self._state(columns)
                if old is None:  # first sight: the baseline, told to nobody
                    tx.execute(
                        "INSERT INTO link_notifications (link_name, status, notified_at) VALUES (%s, %s, %s)",
                        (state.name, state.status, at),
                    )
                    continue
                assert state.status is not None
                change = StatusChange(link=state.name, old=old, new=state.status, at=now, state=state)
                tx.execute(
                    "UPDATE link_notifications SET status = %s, notified_at = %s WHERE link_name = %s",
                    (state.status, at, state.name),
                )
                body = render(change)
                for target in targets:
                    tx.execute(
                        "INSERT INTO notification_outbox (target, body_json, created_at, next_try_at)"
                        " VALUES (%s, %s, %s, %s)",
                        (target, body, at, at),
                    )
                changes.append(change)
            tx.execute(
                "DELETE FROM link_notifications n"
                " WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.name = n.link_name)"
            )
            return changes

        result: list[StatusChange] = self._db.run(work, write=True, action="enqueue status changes")
        return result

    # -- the outbox --------------------------------------------------------------------
    def claim_deliveries(self, *, owner: str, now: float, lease_ttl: float, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` due rows not leased by a live holder (by the database clock; SKIP LOCKED)."""

        def probe(tx: Tx) -> bool:
            at = self._db.clock.now(tx.db_now, now)
            return (
                tx.execute(f"SELECT 1 FROM notification_outbox WHERE {_DUE} LIMIT 1", {"now": at}).fetchone()
                is not None
            )

        if not self._db.run(probe, write=False, action="look for deliveries"):
            return []
        self._check_writable()

        def work(tx: Tx) -> list[tuple[Any, ...]]:
            at = self._db.clock.now(tx.db_now, now)
            rows = tx.execute(
                "UPDATE notification_outbox SET lease_owner = %(owner)s, lease_expires = %(expires)s"
                f" WHERE id IN (SELECT id FROM notification_outbox WHERE {_DUE} ORDER BY id LIMIT %(limit)s"
                " FOR UPDATE SKIP LOCKED) RETURNING id, target, body_json, attempts, created_at",
                {"owner": owner, "expires": at + lease_ttl, "now": at, "limit": max(int(limit), 0)},
            ).fetchall()
            tx.execute(
                "DELETE FROM notification_outbox WHERE delivered_at IS NOT NULL AND delivered_at < %s",
                (at - KEEP_DELIVERED,),
            )
            return sorted(tuple(r) for r in rows)

        rows = self._db.run(work, write=True, action="claim deliveries")
        clock = self._db.clock
        return [
            Delivery(id=r[0], target=r[1], body=r[2], attempts=r[3], created_at=clock.from_db(r[4]) or 0.0)
            for r in rows
        ]

    def finish_delivery(
        self,
        delivery_id: int,
        *,
        owner: str,
        now: float,
        actor: str,
        link: str | None,
        detail: Mapping[str, Any],
        error: str | None = None,
        retry_at: float | None = None,
        give_up: bool = False,
    ) -> bool:
        """End a leased delivery: delivered (no ``error``), retried at ``retry_at``, or given up."""
        self._check_writable()
        held = "id = %(id)s AND lease_owner = %(owner)s AND delivered_at IS NULL"
        clock = self._db.clock

        def work(tx: Tx) -> bool:
            at = clock.now(tx.db_now, now)
            params = {"id": delivery_id, "owner": owner, "now": at, "error": error}
            action: str | None = None
            if give_up:
                count = tx.execute(f"DELETE FROM notification_outbox WHERE {held}", params).rowcount
                action = "notify.given_up"
            elif error is None:
                count = tx.execute(
                    "UPDATE notification_outbox SET delivered_at = %(now)s, attempts = attempts + 1,"
                    f" last_error = NULL, lease_owner = NULL, lease_expires = NULL WHERE {held}",
                    params,
                ).rowcount
                action = "notify.delivered"
            else:
                params["retry"] = clock.to_db(retry_at) if retry_at is not None else at
                count = tx.execute(
                    "UPDATE notification_outbox SET attempts = attempts + 1, next_try_at = %(retry)s,"
                    f" last_error = %(error)s, lease_owner = NULL, lease_expires = NULL WHERE {held}",
                    params,
                ).rowcount
            if count != 1:
                return False
            if action is not None:
                self._insert_event(
                    tx, Event(action=action, link=link, actor=actor, detail=dict(detail)), actor, at
                )
            return True

        finished: bool = self._db.run(work, write=True, action="finish a delivery")
        return finished

    def delivery_backlog(self) -> int:
        """How many deliveries are still to make (metrics)."""
        row = self._db.run(
            lambda tx: tx.execute(
                "SELECT count(*) FROM notification_outbox WHERE delivered_at IS NULL"
            ).fetchone(),
            write=False,
            action="count deliveries",
        )
        return int(row[0]) if row else 0
