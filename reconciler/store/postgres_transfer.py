"""Export and import of a whole PostgreSQL state (:class:`reconciler.store.transfer.StateTransfer`).

:class:`PostgresTransfer` is a mixin of :class:`reconciler.store.postgres.PostgresStore`.
The export reads one ``REPEATABLE READ`` snapshot; moments are handed out in this
process's clock and written back in the database's (:class:`~reconciler.store.postgres_conn.ClockFrame`),
so a state moves between a SQLite file and a server whose clock differs. The import is
one transaction; identity columns continue after the imported ids.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from reconciler.errors import StateError
from reconciler.store import sealing
from reconciler.store.postgres_grants import write_due_at
from reconciler.store.schema import load_migrations
from reconciler.store.transfer import (
    IDENTITY_TABLES,
    TABLES,
    StateHeader,
    StateTransfer,
    carried,
    other_meta,
)

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx

_COLUMNS = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = ANY(%s) ORDER BY ordinal_position"
)


class PostgresTransfer(StateTransfer):
    """Whole-state export and import over the store's connector ``self._db``."""

    _db: Connector
    _sealer: sealing.Sealer

    if TYPE_CHECKING:

        def _check_writable(self) -> None: ...

    def _columns(self, tx: Tx) -> dict[str, list[tuple[str, bool]]]:
        """Per table: ``(column, holds a moment)`` in order."""
        out: dict[str, list[tuple[str, bool]]] = {t: [] for t in TABLES}
        for table, column, data_type in tx.execute(_COLUMNS, (list(TABLES),)):
            out[table].append((column, data_type == "double precision"))
        return out

    def export_header(self) -> StateHeader:
        """The serial, instance, schema version and key check of this store."""
        rows = self._db.run(
            lambda tx: tx.execute("SELECT key, value FROM meta").fetchall(), write=False, action="read meta"
        )
        meta = dict(rows)
        return StateHeader(
            schema_version=int(meta.get("schema_version") or 0),
            serial=int(meta.get("serial") or 0),
            instance=meta.get("instance"),
            key_check=base64.b64decode(meta["key_check"]),
            backend="postgresql",
            meta=other_meta(meta),
        )

    def export_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every carried row as ``(table, row)``, from one ``REPEATABLE READ`` snapshot.

        A connection of its own (not the pool's): the snapshot's isolation level must be set
        before its first query, and keepers may go on writing meanwhile.
        """
        clock = self._db.clock
        self._db.run(lambda tx: None, write=False, action="read the database clock")  # fresh offset
        try:
            conn = psycopg.connect(self._db.url.conninfo, autocommit=False)
        except psycopg.OperationalError as exc:
            raise StateError(f"cannot connect to the PostgreSQL store {self._db.url.shown}: {exc}") from None
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                columns: dict[str, list[tuple[str, bool]]] = {t: [] for t in TABLES}
                for table, column, data_type in conn.execute(_COLUMNS, (list(TABLES),)):
                    columns[table].append((column, data_type == "double precision"))
                for table in TABLES:
                    cols = columns[table]
                    for values in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                        row = {
                            name: (clock.from_db(value) if moment else value)
                            for (name, moment), value in zip(cols, values, strict=True)
                        }
                        yield table, carried(table, row)
        except psycopg.Error as exc:
            raise StateError(f"exporting the PostgreSQL store {self._db.url.shown} failed: {exc}") from None
        finally:
            conn.close()

    def import_state(self, header: StateHeader, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Write a whole state into this empty store in one transaction; returns the rows written."""
        self._check_writable()
        try:
            ok = self._sealer.open(header.key_check, sealing.KEY_CHECK_AAD) == sealing.KEY_CHECK_PLAINTEXT
        except sealing.SealError:
            ok = False
        if not ok:
            raise StateError(
                "the exported state was sealed with another state key than this store's",
                hint="import with the key of the exporting store (LINKCTL_STATE_KEY or"
                " LINKCTL_STATE_KEY_FILE); linkctl never re-keys, nothing was changed",
            )
        known = len(load_migrations("postgresql"))
        if header.schema_version > known:
            raise StateError(
                f"the state was exported at schema version {header.schema_version}, newer than this"
                f" linkctl understands ({known})",
                hint="import it with the linkctl version that exported it (or a newer one)",
            )

        def work(tx: Tx) -> int:
            tx.execute("LOCK TABLE links IN EXCLUSIVE MODE")
            links = tx.execute("SELECT count(*) FROM links").fetchone()
            serial = tx.execute("SELECT value FROM meta WHERE key = 'serial' FOR UPDATE").fetchone()
            n_links, n_serial = int(links[0] if links else 0), int(serial[0] if serial else 0)
            if n_links or n_serial:
                raise StateError(
                    f"the target store is not empty ({n_links} link(s), serial {n_serial})",
                    hint="import into a new store (a new file or an empty database); nothing was changed",
                )
            columns = {t: dict(cols) for t, cols in self._columns(tx).items()}
            clock = self._db.clock
            by_table: dict[str, list[Mapping[str, Any]]] = {}
            for table, row in rows:
                unknown = sorted(set(row) - set(columns[table]))
                if unknown:
                    raise StateError(f"the target store's table {table} has no column {unknown[0]!r}")
                by_table.setdefault(table, []).append(row)
            with tx.conn.cursor() as cur:
                for table in TABLES:
                    for row in by_table.get(table, []):
                        names = list(row)
                        values = [clock.to_db(row[n]) if columns[table][n] else row[n] for n in names]
                        cur.execute(
                            f"INSERT INTO {table} ({', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)})"
                            f" VALUES ({', '.join(['%s'] * len(names))})",
                            values,
                        )
            for table in IDENTITY_TABLES:
                tx.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
            tx.execute("UPDATE meta SET value = %s WHERE key = 'serial'", (str(header.serial),))
            extra = dict(header.meta)
            if header.instance is not None:
                extra["instance"] = header.instance
            for key, value in extra.items():
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            write_due_at(tx, [r[0] for r in tx.execute("SELECT link_uid FROM grants").fetchall()])
            return len(rows)

        written: int = self._db.run(work, write=True, action="import a state")
        return written
