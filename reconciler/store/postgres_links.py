"""The ``links`` and ``secrets`` tables of the PostgreSQL store, and its write transaction.

:class:`PostgresWriteTransaction` is what :meth:`reconciler.store.postgres.PostgresStore.write`
yields (the twin of :class:`reconciler.store.sqlite_links.SQLiteWriteTransaction`). It runs
inside the store's one transaction, which holds the ``meta`` serial row locked
(``SELECT … FOR UPDATE``): applies from any number of machines are serialized there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConflictError, StateError
from reconciler.secrets import Secret
from reconciler.store import base, postgres_grants, sealing

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import ClockFrame, Tx

LINK_COLUMNS = (
    "uid, name, provider, spec_json, spec_hash, secret_fingerprints_json, generation, "
    "source_file, source_line, managed_by, deletion_policy, created_at, updated_at"
)
SELECT_LINKS = f"SELECT {LINK_COLUMNS} FROM links"


def link_from_row(row: tuple[Any, ...], clock: ClockFrame) -> base.StoredLink:
    """A StoredLink from a row selected with :data:`SELECT_LINKS` (moments in this process's clock)."""
    return base.StoredLink(
        uid=row[0],
        name=row[1],
        provider=row[2],
        spec_json=row[3],
        spec_hash=row[4],
        secret_fingerprints=json.loads(row[5]),
        generation=row[6],
        source_file=row[7],
        source_line=row[8],
        managed_by=row[9],
        deletion_policy=row[10],
        created_at=clock.from_db(row[11]) or 0.0,
        updated_at=clock.from_db(row[12]) or 0.0,
    )


def spec_json(name: str, spec: Mapping[str, Any]) -> str:
    """A link spec as JSON; a Secret in it is a caller bug and must not reach the database."""

    def default(value: object) -> object:
        if isinstance(value, Secret):
            raise StateError(
                f"link {name!r}: the spec holds a secret value; secrets belong in LinkWrite.secrets"
                ' and the spec holds {"$secret": field}'
            )
        raise StateError(f"link {name!r}: the spec holds a value of type {type(value).__name__} (not JSON)")

    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=default)


class PostgresWriteTransaction(base.WriteTransaction):
    """The writes of one :meth:`PostgresStore.write` block; unusable after the block ends."""

    def __init__(
        self,
        tx: Tx,
        sealer: sealing.Sealer,
        actor: str,
        *,
        now: float,
        clock: ClockFrame,
        insert_event: Callable[[Tx, base.Event, str, float], None],
    ) -> None:
        """Write through ``tx`` (the store's open transaction); ``now`` is its one timestamp (the DB's)."""
        self._tx = tx
        self._sealer = sealer
        self._actor = actor
        self._now = now
        self._clock = clock
        self._insert_event = insert_event
        self._known: dict[str, tuple[str, int, float]] | None = None  # name -> (uid, generation, created_at)
        self._due_later: list[str] = []  # updated links whose due time is written once, at the end
        self.open = True

    def finish(self) -> None:
        """Write the due times of the updated links (one read for all; called before the commit)."""
        postgres_grants.write_due_at(self._tx, self._due_later)
        self._due_later = []

    def _links(self) -> dict[str, tuple[str, int, float]]:
        """Every link's uid, generation and creation, read once: the serial row lock keeps them ours.

        Knowing them lets :meth:`put_link` only send statements (pipelined: no round trip per link).
        """
        if self._known is None:
            rows = self._tx.execute("SELECT name, uid, generation, created_at FROM links").fetchall()
            self._known = {r[0]: (r[1], r[2], r[3]) for r in rows}
        return self._known

    def _check_open(self) -> None:
        if not self.open:
            raise StateError("this write transaction has already ended")

    def put_link(self, link: base.LinkWrite) -> base.StoredLink:
        """Insert or update a link by name; generation +1 on update."""
        self._check_open()
        tx, now = self._tx, self._now
        spec = dict(link.spec)
        text = spec_json(link.name, spec)
        fingerprints = dict(link.secret_fingerprints)
        fp_json = json.dumps(fingerprints, sort_keys=True, separators=(",", ":"))
        known = self._links()
        row = known.get(link.name)
        values = (
            link.provider,
            text,
            link.spec_hash,
            fp_json,
            link.source_file,
            link.source_line,
            link.managed_by,
            link.deletion_policy,
        )
        if row is None:
            uid, generation, created_at = uuid.uuid4().hex, 1, now
            tx.execute(
                "INSERT INTO links (uid, name, provider, spec_json, spec_hash, secret_fingerprints_json,"
                " source_file, source_line, managed_by, deletion_policy, generation, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (uid, link.name, *values, generation, created_at, now),
            )
            postgres_grants.insert_initial_grant(tx, uid, spec)
            known[link.name] = (uid, generation, created_at)
        else:
            uid, generation, created_at = row[0], row[1] + 1, row[2]
            tx.execute(
                "UPDATE links SET provider = %s, spec_json = %s, spec_hash = %s,"
                " secret_fingerprints_json = %s,"
                " source_file = %s, source_line = %s, managed_by = %s, deletion_policy = %s,"
                " generation = %s, updated_at = %s WHERE uid = %s",
                (*values, generation, now, uid),
            )
            postgres_grants.promote_pending_grant(tx, uid, spec, write_due=False)
            self._due_later.append(uid)
            known[link.name] = (uid, generation, created_at)
        self._write_secrets(uid, link.secrets)
        return base.StoredLink(
            uid=uid,
            name=link.name,
            provider=link.provider,
            spec_json=text,
            spec_hash=link.spec_hash,
            secret_fingerprints=fingerprints,
            generation=generation,
            source_file=link.source_file,
            source_line=link.source_line,
            managed_by=link.managed_by,
            deletion_policy=link.deletion_policy,
            created_at=self._clock.from_db(created_at) or 0.0,
            updated_at=self._clock.from_db(now) or 0.0,
        )

    def _write_secrets(self, uid: str, values: Mapping[str, Secret | None]) -> None:
        removals = [(uid, field) for field, value in values.items() if value is None]
        upserts = [
            (uid, field, self._sealer.seal(value.reveal().encode("utf-8"), sealing.secret_aad(uid, field)))
            for field, value in values.items()
            if value is not None
        ]
        with self._tx.conn.cursor() as cur:
            if removals:
                cur.executemany("DELETE FROM secrets WHERE link_uid = %s AND field = %s", removals)
            if upserts:
                cur.executemany(
                    "INSERT INTO secrets (link_uid, field, ciphertext) VALUES (%s, %s, %s)"
                    " ON CONFLICT (link_uid, field) DO UPDATE SET ciphertext = excluded.ciphertext",
                    upserts,
                )

    def delete_link(self, name: str) -> None:
        """Delete a link with its secrets and grant (foreign keys cascade)."""
        self._check_open()
        if self._tx.execute("DELETE FROM links WHERE name = %s RETURNING uid", (name,)).fetchone() is None:
            raise StateError(f"cannot delete link {name!r}: no such link in the store")
        self._links().pop(name, None)

    def rename_link(self, old: str, new: str) -> None:
        """Rename a link, keeping uid, secrets and grant (generation +1); refused under a held lease."""
        self._check_open()
        if old == new:
            return
        tx = self._tx
        if tx.execute("SELECT 1 FROM links WHERE name = %s", (new,)).fetchone():
            raise StateError(f"cannot rename link {old!r} to {new!r}: a link named {new!r} already exists")
        held = tx.execute(
            "SELECT g.lease_expires_at FROM grants g JOIN links l ON l.uid = g.link_uid"
            " WHERE l.name = %s AND g.lease_owner IS NOT NULL AND g.lease_expires_at > %s",
            (old, self._now),
        ).fetchone()
        if held:
            raise ConflictError(
                f"cannot rename link {old!r} while a token refresh for it is in flight",
                hint="apply again in a few seconds (the refresh lease ends by itself)",
            )
        renamed = tx.execute(
            "UPDATE links SET name = %s, generation = generation + 1, updated_at = %s WHERE name = %s"
            " RETURNING uid, generation, created_at",
            (new, self._now, old),
        ).fetchone()
        if renamed is None:
            raise StateError(f"cannot rename link {old!r}: no such link in the store")
        known = self._links()
        known.pop(old, None)
        known[new] = (renamed[0], renamed[1], renamed[2])

    def add_event(self, event: base.Event) -> None:
        """Append an audit event that commits with the transaction."""
        self._check_open()
        self._insert_event(self._tx, event, self._actor, self._now)

    def set_instance(self, name: str) -> None:
        """Record the Instance (``metadata.name``) the store is applied from."""
        self._check_open()
        self._tx.execute(
            "INSERT INTO meta (key, value) VALUES ('instance', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (name,),
        )
