"""The status-webhook half of the SQLite store: ``link_notifications``, ``notification_outbox``, targets.

:class:`SQLiteNotifications` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`
(like :mod:`reconciler.store.sqlite_pending`); it relies on ``self._conn``,
``self._sealer``, ``self._immediate()`` and ``self._insert_event()`` of the concrete store.
The targets live in ``meta`` (key ``notify_targets``) as JSON whose URL and key fields are
sealed blobs (base64), so the row is portable between backends.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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

_TARGETS_KEY = "notify_targets"
_LINK_STATES = (
    "SELECT l.name, l.provider, g.status, g.last_error, g.error_class, g.retry_at, g.access_expires_at"
    " FROM links l LEFT JOIN grants g ON g.link_uid = l.uid ORDER BY l.name"
)
# Delivered rows are kept this long (seconds) for inspection, then purged by a later claim.
KEEP_DELIVERED = 7 * 86_400.0


def target_id(fingerprint_key: bytes, url: Secret) -> str:
    """The id of a webhook target: a keyed fingerprint of its URL (16 hex digits)."""
    return url.fingerprint(fingerprint_key, "notify-url")[:16]


def _differing(announced: frozenset[str]) -> tuple[str, tuple[str, ...]]:
    """SQL (and its parameters) of the links whose announced status differs from their grant's."""
    marks = ", ".join("?" * len(announced))
    sql = (
        "SELECT l.name, l.provider, g.status, g.last_error, g.error_class, g.retry_at, g.access_expires_at,"
        " n.status FROM links l JOIN grants g ON g.link_uid = l.uid"
        " LEFT JOIN link_notifications n ON n.link_name = l.name"
        f" WHERE g.status IN ({marks}) AND (n.status IS NULL OR n.status != g.status) ORDER BY l.name"
    )
    return sql, tuple(sorted(announced))


_GONE = (
    "FROM link_notifications"
    " WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.name = link_notifications.link_name)"
)


class SQLiteNotifications(Notifications):
    """Status webhooks over the connection of the store that mixes this in."""

    _conn: sqlite3.Connection
    _sealer: sealing.Sealer

    def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    def _insert_event(self, event: Any, *, default_actor: str, now: float) -> None:
        raise NotImplementedError  # provided by SQLiteStore

    # -- targets ---------------------------------------------------------------------
    def put_notify_targets(self, targets: Sequence[NotifyTargetDecl], *, actor: str, now: float) -> bool:
        """Replace the declared webhook targets (sealed); False (nothing written) when unchanged."""
        key = self._sealer.fingerprint_key
        rows = []
        for target in targets:
            tid = target_id(key, target.url)
            rows.append(
                {
                    "id": tid,
                    "origin": target.origin,
                    # Keyed fingerprints of both values: a rotated key is a change, seen without opening.
                    "fingerprint": target.secret.fingerprint(key, "notify-secret", target.url.reveal()),
                    "url": self._seal_b64(target.url, target_aad(tid, "url")),
                    "secret": self._seal_b64(target.secret, target_aad(tid, "secret")),
                }
            )
        with self._immediate() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (_TARGETS_KEY,)).fetchone()
            before = json.loads(row[0]) if row is not None else []
            if [(t["id"], t["fingerprint"]) for t in before] == [(t["id"], t["fingerprint"]) for t in rows]:
                return False
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_TARGETS_KEY, json.dumps(rows, sort_keys=True)),
            )
            self._insert_event(
                Event(
                    action="notify.targets_updated",
                    link=None,
                    actor=actor,
                    detail={"targets": [t["origin"] for t in rows], "count": len(rows)},
                ),
                default_actor=actor,
                now=now,
            )
        return True

    def notify_targets(self) -> list[NotifyTarget]:
        """The stored webhook targets, URLs and keys opened."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (_TARGETS_KEY,)).fetchone()
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
    def link_states(self) -> list[LinkState]:
        """Every link's status and timing in one read, ordered by name (no token decrypted)."""
        return [LinkState(*row) for row in self._conn.execute(_LINK_STATES)]

    def record_status_changes(
        self,
        *,
        now: float,
        targets: Sequence[str],
        render: Callable[[StatusChange], str],
        announced: frozenset[str],
    ) -> list[StatusChange]:
        """Detect and enqueue, in one write transaction, every change of a link's announced status."""
        sql, params = _differing(announced)
        # A read first: most looks find nothing, and then no write lock is taken at all.
        if (
            self._conn.execute(sql + " LIMIT 1", params).fetchone() is None
            and self._conn.execute(f"SELECT 1 {_GONE} LIMIT 1").fetchone() is None
        ):
            return []
        changes: list[StatusChange] = []
        with self._immediate() as conn:
            for *columns, old in conn.execute(sql, params).fetchall():
                state = LinkState(*columns)
                if old is None:  # first sight: the baseline, told to nobody
                    conn.execute(
                        "INSERT INTO link_notifications (link_name, status, notified_at) VALUES (?, ?, ?)",
                        (state.name, state.status, now),
                    )
                    continue
                assert state.status is not None
                change = StatusChange(link=state.name, old=old, new=state.status, at=now, state=state)
                conn.execute(
                    "UPDATE link_notifications SET status = ?, notified_at = ? WHERE link_name = ?",
                    (state.status, now, state.name),
                )
                body = render(change)
                for target in targets:
                    conn.execute(
                        "INSERT INTO notification_outbox (target, body_json, created_at, next_try_at)"
                        " VALUES (?, ?, ?, ?)",
                        (target, body, now, now),
                    )
                changes.append(change)
            conn.execute(f"DELETE {_GONE}")
        return changes

    # -- the outbox --------------------------------------------------------------------
    def claim_deliveries(self, *, owner: str, now: float, lease_ttl: float, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` undelivered rows that are due and not leased by a live holder."""
        due = "delivered_at IS NULL AND next_try_at <= ? AND (lease_expires IS NULL OR lease_expires <= ?)"
        probe = self._conn.execute(
            f"SELECT 1 FROM notification_outbox WHERE {due} LIMIT 1", (now, now)
        ).fetchone()
        if probe is None:
            return []
        with self._immediate() as conn:
            rows = conn.execute(
                f"SELECT id, target, body_json, attempts, created_at FROM notification_outbox WHERE {due}"
                " ORDER BY id LIMIT ?",
                (now, now, max(int(limit), 0)),
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE notification_outbox SET lease_owner = ?, lease_expires = ? WHERE id = ?",
                    (owner, now + lease_ttl, row[0]),
                )
            conn.execute(
                "DELETE FROM notification_outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?",
                (now - KEEP_DELIVERED,),
            )
        return [Delivery(id=r[0], target=r[1], body=r[2], attempts=r[3], created_at=r[4]) for r in rows]

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
        held = "id = ? AND lease_owner = ? AND delivered_at IS NULL"
        with self._immediate() as conn:
            if give_up:
                cursor = conn.execute(f"DELETE FROM notification_outbox WHERE {held}", (delivery_id, owner))
                action: str | None = "notify.given_up"
            elif error is None:
                cursor = conn.execute(
                    "UPDATE notification_outbox SET delivered_at = ?, attempts = attempts + 1,"
                    f" last_error = NULL, lease_owner = NULL, lease_expires = NULL WHERE {held}",
                    (now, delivery_id, owner),
                )
                action = "notify.delivered"
            else:
                cursor = conn.execute(
                    "UPDATE notification_outbox SET attempts = attempts + 1, next_try_at = ?,"
                    f" last_error = ?, lease_owner = NULL, lease_expires = NULL WHERE {held}",
                    (retry_at if retry_at is not None else now, error, delivery_id, owner),
                )
                action = None
            if cursor.rowcount != 1:
                return False
            if action is not None:
                event = Event(action=action, link=link, actor=actor, detail=dict(detail), at=now)
                self._insert_event(event, default_actor=actor, now=now)
        return True

    def delivery_backlog(self) -> int:
        """How many deliveries are still to make (metrics)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM notification_outbox WHERE delivered_at IS NULL"
        ).fetchone()
        return int(row[0])
