"""Moving a whole state between backends: what is carried, and the store methods that do it.

Backend-neutral (like :mod:`reconciler.store.schema`): the tables that move, in the order
that satisfies their foreign keys, the columns that are dropped or reset on the way, and
:class:`StateTransfer`, the two store methods each backend implements over its own SQL
(:mod:`reconciler.store.sqlite_transfer`, :mod:`reconciler.store.postgres_transfer`).
:mod:`reconciler.services.state_transfer` writes and reads the file.

Rows move as stored: sealed values (secrets, tokens, verifiers, CSRF secrets) stay sealed
under the same state key (their associated data binds them to the link uid, which is
kept), token versions and the serial are kept. Dropped: the apply lock and every lease
(a grant's ``lease_owner``/``lease_expires_at``, the outbox's lease); a refresh that was
in flight becomes a lost response, exactly as when the next holder takes its lease.
``grants.due_at`` is derived data: the importing backend computes it again.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# Tables in an order that satisfies their foreign keys (parents first).
TABLES: tuple[str, ...] = (
    "links",
    "secrets",
    "grants",
    "events",
    "provider_metadata",
    "pending_authorizations",
    "api_keys",
    "sessions",
    "link_notifications",
    "notification_outbox",
)
# Columns holding sealed bytes (written to a file as base64).
BINARY_COLUMNS: Mapping[str, frozenset[str]] = {
    "secrets": frozenset({"ciphertext"}),
    "grants": frozenset({"access_token", "refresh_token"}),
    "pending_authorizations": frozenset({"code_verifier"}),
    "sessions": frozenset({"csrf_secret"}),
}
# Columns never carried: leases end with the store they were taken in; due_at is recomputed.
DROPPED_COLUMNS: Mapping[str, frozenset[str]] = {
    "grants": frozenset({"lease_owner", "lease_expires_at", "due_at"}),
    "notification_outbox": frozenset({"lease_owner", "lease_expires"}),
}
# Tables with an integer id the target must continue after.
IDENTITY_TABLES = ("events", "notification_outbox")


@dataclasses.dataclass(frozen=True)
class StateHeader:
    """What a state says about itself besides its rows."""

    schema_version: int
    serial: int
    instance: str | None
    key_check: bytes  # the sealed key check: the importing store must open it with its key
    backend: str
    meta: Mapping[str, str] = dataclasses.field(default_factory=dict)  # other ``meta`` rows (see OWN_META)


# ``meta`` rows the header names itself; every other meta row (e.g. the declared webhook
# targets, sealed) moves as it is.
OWN_META = frozenset({"schema_version", "serial", "instance", "key_check"})


def other_meta(rows: Mapping[str, object]) -> dict[str, str]:
    """The meta rows that move in ``StateHeader.meta`` (values as text)."""
    return {k: str(v) for k, v in rows.items() if k not in OWN_META and v is not None}


def carried(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as it moves: dropped columns removed, an in-flight refresh turned into a lost response."""
    out = {k: v for k, v in row.items() if k not in DROPPED_COLUMNS.get(table, frozenset())}
    if table == "grants" and out.get("in_flight_since") is not None:
        details = json.loads(out.get("details_json") or "{}")
        details["lost_response_sent_at"] = out["in_flight_since"]
        out["details_json"] = json.dumps(details, sort_keys=True, separators=(",", ":"))
        out["lost_response"] = 1
        out["in_flight_since"] = None
    return out


class StateTransfer(abc.ABC):
    """Export and import of a whole state (every backend implements both)."""

    @abc.abstractmethod
    def export_header(self) -> StateHeader:
        """The serial, instance, schema version and key check of this store."""

    @abc.abstractmethod
    def export_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every carried row as ``(table, row)``, tables in :data:`TABLES` order (see :func:`carried`)."""

    @abc.abstractmethod
    def import_state(self, header: StateHeader, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Write a whole state into this empty store in one transaction; returns the rows written.

        Refuses a store that holds any link or a serial above 0, and a header whose key
        check does not open with this store's key.
        """
