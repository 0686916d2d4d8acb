"""The ``links`` and ``secrets`` tables of the SQLite store: columns, rows, and the write transaction.

:class:`SQLiteWriteTransaction` is what :meth:`reconciler.store.sqlite.SQLiteStore.write`
yields: it runs inside the store's ``BEGIN IMMEDIATE`` transaction and seals every
secret it writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from reconciler.domain.records import record_builder
from reconciler.errors import ConflictError, StateError
from reconciler.secrets import Secret
from reconciler.store import base, sealing, sqlite_grants
from reconciler.store.sqlite_grants import IN_CHUNK

LINK_COLUMNS = (
    "uid, name, provider, spec_json, spec_hash, secret_fingerprints_json, generation, "
    "source_file, source_line, managed_by, deletion_policy, created_at, updated_at"
)
SELECT_LINKS = f"SELECT {LINK_COLUMNS} FROM links"


class EventInserter(Protocol):
    """Writes one audit row inside the current transaction (the store's ``_insert_event``)."""

    def __call__(self, event: base.Event, *, default_actor: str, now: float) -> None: ...


_build_link = record_builder(base.StoredLink)  # the columns are the fields, in order


def link_from_row(row: tuple[Any, ...]) -> base.StoredLink:
    """A StoredLink from a row selected with :data:`SELECT_LINKS`."""
    return _build_link((*row[:5], base.loads_stored_json(row[5]), *row[6:]))


def _spec_json(name: str, spec: Mapping[str, Any]) -> str:
    """A link spec as JSON; a Secret in it is a caller bug and must not reach the file."""

    def default(value: object) -> object:
        if isinstance(value, Secret):
            raise StateError(
                f"link {name!r}: the spec holds a secret value; secrets belong in LinkWrite.secrets"
                ' and the spec holds {"$secret": field}'
            )
        raise StateError(f"link {name!r}: the spec holds a value of type {type(value).__name__} (not JSON)")

    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=default)


class SQLiteWriteTransaction(base.WriteTransaction):
    """The writes of one :meth:`SQLiteStore.write` block; unusable after the block ends."""

    def __init__(
        self, conn: sqlite3.Connection, sealer: sealing.Sealer, actor: str, *, insert_event: EventInserter
    ) -> None:
        """Write through ``conn`` inside the store's open transaction; ``insert_event`` writes audit rows."""
        self._conn = conn
        self._sealer = sealer
        self._insert_event = insert_event
        self._actor = actor
        self._now = time.time()  # one timestamp for the whole apply
        self.open = True

    def _check_open(self) -> None:
        if not self.open:
            raise StateError("this write transaction has already ended")

    def put_link(self, link: base.LinkWrite) -> base.StoredLink:
        """Insert or update a link by name; generation +1 on update."""
        self._check_open()
        conn = self._conn
        now = self._now
        spec = dict(link.spec)
        spec_json = _spec_json(link.name, spec)
        fingerprints = dict(link.secret_fingerprints)
        fp_json = json.dumps(fingerprints, sort_keys=True, separators=(",", ":"))
        row = conn.execute(
            "SELECT uid, generation, created_at FROM links WHERE name = ?", (link.name,)
        ).fetchone()
        if row is None:
            import uuid  # only a new link needs one

            uid = uuid.uuid4().hex
            generation = 1
            created_at = now
            conn.execute(
                f"INSERT INTO links ({LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    uid,
                    link.name,
                    link.provider,
                    spec_json,
                    link.spec_hash,
                    fp_json,
                    generation,
                    link.source_file,
                    link.source_line,
                    link.managed_by,
                    link.deletion_policy,
                    created_at,
                    now,
                ),
            )
            sqlite_grants.insert_initial_grant(conn, uid, spec)
        else:
            uid, generation, created_at = row[0], row[1] + 1, row[2]
            conn.execute(
                "UPDATE links SET provider = ?, spec_json = ?, spec_hash = ?, secret_fingerprints_json = ?,"
                " generation = ?, source_file = ?, source_line = ?, managed_by = ?, deletion_policy = ?,"
                " updated_at = ? WHERE uid = ?",
                (
                    link.provider,
                    spec_json,
                    link.spec_hash,
                    fp_json,
                    generation,
                    link.source_file,
                    link.source_line,
                    link.managed_by,
                    link.deletion_policy,
                    now,
                    uid,
                ),
            )
            sqlite_grants.promote_pending_grant(conn, uid, spec)
        self._write_secrets(uid, link.secrets)
        return base.StoredLink(
            uid=uid,
            name=link.name,
            provider=link.provider,
            spec_json=spec_json,
            spec_hash=link.spec_hash,
            secret_fingerprints=fingerprints,
            generation=generation,
            source_file=link.source_file,
            source_line=link.source_line,
            managed_by=link.managed_by,
            deletion_policy=link.deletion_policy,
            created_at=created_at,
            updated_at=now,
        )

    def _write_secrets(self, uid: str, values: Mapping[str, Secret | None]) -> None:
        # Fields absent from the mapping are left as they are; None removes one.
        sealer = self._sealer
        upserts = []
        removals = []
        for field, value in values.items():
            if value is None:
                removals.append((uid, field))
            else:
                blob = sealer.seal(value.reveal().encode("utf-8"), sealing.secret_aad(uid, field))
                upserts.append((uid, field, blob))
        if removals:
            self._conn.executemany("DELETE FROM secrets WHERE link_uid = ? AND field = ?", removals)
        if upserts:
            self._conn.executemany(
                "INSERT INTO secrets (link_uid, field, ciphertext) VALUES (?, ?, ?)"
                " ON CONFLICT (link_uid, field) DO UPDATE SET ciphertext = excluded.ciphertext",
                upserts,
            )

    def delete_link(self, name: str) -> None:
        """Delete a link with its secrets and grant (foreign keys cascade)."""
        self._check_open()
        cursor = self._conn.execute("DELETE FROM links WHERE name = ?", (name,))
        if cursor.rowcount != 1:
            raise StateError(f"cannot delete link {name!r}: no such link in the store")

    def rename_link(self, old: str, new: str) -> None:
        """Rename a link, keeping uid, secrets and grant (generation +1)."""
        self._check_open()
        if old == new:
            return
        if self._conn.execute("SELECT 1 FROM links WHERE name = ?", (new,)).fetchone():
            raise StateError(f"cannot rename link {old!r} to {new!r}: a link named {new!r} already exists")
        # Token writes find their link by name: renaming under an in-flight refresh would make
        # that refresh unable to commit a rotated refresh token (invariant 4). Refuse instead;
        # the lease ends within seconds and a retry succeeds.
        held = self._conn.execute(
            "SELECT g.lease_expires_at FROM grants g JOIN links l ON l.uid = g.link_uid"
            " WHERE l.name = ? AND g.lease_owner IS NOT NULL AND g.lease_expires_at > ?",
            (old, time.time()),
        ).fetchone()
        if held:
            raise ConflictError(
                f"cannot rename link {old!r} while a token refresh for it is in flight",
                hint="apply again in a few seconds (the refresh lease ends by itself)",
            )
        cursor = self._conn.execute(
            "UPDATE links SET name = ?, generation = generation + 1, updated_at = ? WHERE name = ?",
            (new, self._now, old),
        )
        if cursor.rowcount != 1:
            raise StateError(f"cannot rename link {old!r}: no such link in the store")

    def add_event(self, event: base.Event) -> None:
        """Append an audit event that commits with the transaction."""
        self._check_open()
        self._insert_event(event, default_actor=self._actor, now=self._now)

    def set_instance(self, name: str) -> None:
        """Record the Instance (``metadata.name``) the store is applied from."""
        self._check_open()
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('instance', ?)", (name,))


def links_with_secrets(
    conn: sqlite3.Connection, names: Sequence[str]
) -> dict[str, tuple[tuple[Any, ...], dict[str, bytes]]]:
    """The link rows of ``names`` and their sealed secrets, two statements a chunk (for the read-ahead)."""
    out: dict[str, tuple[tuple[Any, ...], dict[str, bytes]]] = {}
    for start in range(0, len(names), IN_CHUNK):
        chunk = tuple(names[start : start + IN_CHUNK])
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(f"{SELECT_LINKS} WHERE name IN ({marks})", chunk):
            out[row[1]] = (tuple(row), {})
        sealed = conn.execute(
            "SELECT l.name, s.field, s.ciphertext FROM links l JOIN secrets s ON s.link_uid = l.uid"
            f" WHERE l.name IN ({marks})",
            chunk,
        )
        for name, field, blob in sealed:
            out[name][1][field] = blob
    return out
