"""Export and import of a whole SQLite state (:class:`reconciler.store.transfer.StateTransfer`).

:class:`SQLiteTransfer` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`; it relies
on ``self._conn``, ``self._sealer`` and ``self._immediate()`` of the concrete store. Rows
move as stored (sealed values stay sealed); the import runs in one ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from reconciler.errors import StateError
from reconciler.store import sealing
from reconciler.store.schema import load_migrations
from reconciler.store.sqlite_grants import write_due_at
from reconciler.store.transfer import TABLES, StateHeader, StateTransfer, carried, other_meta


class SQLiteTransfer(StateTransfer):
    """Whole-state export and import over the store's connection."""

    _conn: sqlite3.Connection
    _sealer: sealing.Sealer

    def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")]

    def export_header(self) -> StateHeader:
        """The serial, instance, schema version and key check of this store."""
        meta = dict(self._conn.execute("SELECT key, value FROM meta"))
        return StateHeader(
            schema_version=int(meta.get("schema_version") or 0),
            serial=int(meta.get("serial") or 0),
            instance=None if meta.get("instance") is None else str(meta["instance"]),
            key_check=bytes(meta["key_check"]),
            backend="sqlite",
            meta=other_meta(meta),
        )

    def export_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every carried row as ``(table, row)``, in one read transaction (a consistent snapshot)."""
        self._conn.execute("BEGIN")
        try:
            for table in TABLES:
                columns = self._columns(table)
                for values in self._conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                    yield table, carried(table, dict(zip(columns, values, strict=True)))
        finally:
            self._conn.execute("COMMIT")

    def import_state(self, header: StateHeader, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Write a whole state into this empty store in one transaction; returns the rows written."""
        _check_key(self._sealer, header)
        known = len(load_migrations())
        if header.schema_version > known:
            raise StateError(
                f"the state was exported at schema version {header.schema_version}, newer than this"
                f" linkctl understands ({known})",
                hint="import it with the linkctl version that exported it (or a newer one)",
            )
        with self._immediate() as conn:
            links = conn.execute("SELECT count(*) FROM links").fetchone()[0]
            serial = int(conn.execute("SELECT value FROM meta WHERE key = 'serial'").fetchone()[0])
            if links or serial:
                raise StateError(
                    f"the target store is not empty ({links} link(s), serial {serial})",
                    hint="import into a new store (a new file or an empty database); nothing was changed",
                )
            columns = {table: set(self._columns(table)) for table in TABLES}
            for table, row in rows:
                unknown = sorted(set(row) - columns[table])
                if unknown:
                    raise StateError(f"the target store's table {table} has no column {unknown[0]!r}")
                names = list(row)
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [row[n] for n in names],
                )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'serial'", (header.serial,))
            extra = dict(header.meta)
            if header.instance is not None:
                extra["instance"] = header.instance
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(extra.items()))
            write_due_at(conn, [r[0] for r in conn.execute("SELECT link_uid FROM grants")])
        return len(rows)


def _check_key(sealer: sealing.Sealer, header: StateHeader) -> None:
    """The state must have been sealed with this store's key: its key check opens."""
    try:
        ok = sealer.open(header.key_check, sealing.KEY_CHECK_AAD) == sealing.KEY_CHECK_PLAINTEXT
    except sealing.SealError:
        ok = False
    if not ok:
        raise StateError(
            "the exported state was sealed with another state key than this store's",
            hint="import with the key of the exporting store (LINKCTL_STATE_KEY or LINKCTL_STATE_KEY_FILE);"
            " linkctl never re-keys, nothing was changed",
        )
