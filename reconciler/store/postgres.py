"""The PostgreSQL store: one state shared by keepers, appliers and servers on many machines.

:class:`PostgresStore` implements :class:`reconciler.store.base.Store`; it is created by
:func:`reconciler.store.open_store` for ``postgresql://…`` URLs. The same logical schema
as SQLite, from the numbered files in ``migrations/postgresql/`` (one transaction, under an
advisory transaction lock, so concurrent openers migrate once); a database with a newer
schema than this linkctl knows is refused, and so is a database holding other tables.

What it guarantees:

* atomic applies — :meth:`write` is one transaction holding the ``meta`` serial row
  locked, so applies on any number of machines are serialized and a stale plan is refused;
* secrets and tokens sealed exactly as on SQLite (:mod:`reconciler.store.sealing`, the
  same state key and associated data: blobs move between backends unchanged);
* one clock — the database's (:mod:`reconciler.store.postgres_conn`);
* a lost connection is retried for new operations, and a lost commit answer resolved by
  the transaction id: committed once or an error saying so.

The parts: connections, clock and retries in :mod:`~reconciler.store.postgres_conn`, link
rows and the write transaction in :mod:`~reconciler.store.postgres_links`, and mixins for
the apply lock (:mod:`~reconciler.store.postgres_lock`), grants
(:mod:`~reconciler.store.postgres_grants`), leases (:mod:`~reconciler.store.postgres_leases`)
and pending authorizations (:mod:`~reconciler.store.postgres_pending`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from reconciler.errors import StalePlan, StateError, StoreNotReady
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import base, sealing
from reconciler.store.postgres_api_keys import PostgresApiKeys, PostgresSessions
from reconciler.store.postgres_conn import Connector, Tx
from reconciler.store.postgres_grants import PostgresGrants
from reconciler.store.postgres_health import PostgresHealth
from reconciler.store.postgres_leases import PostgresLeases
from reconciler.store.postgres_links import SELECT_LINKS, PostgresWriteTransaction, link_from_row
from reconciler.store.postgres_lock import LOCK_KEY, PostgresApplyLock
from reconciler.store.postgres_notifications import PostgresNotifications
from reconciler.store.postgres_notify import PostgresNotify
from reconciler.store.postgres_pending import PostgresPendingAuthorizations
from reconciler.store.postgres_transfer import PostgresTransfer
from reconciler.store.postgres_url import parse_url
from reconciler.store.read_ahead import ReadAhead
from reconciler.store.schema import load_migrations

Notice = Callable[[str], None]
DIALECT = "postgresql"
MIGRATION_LOCK_TIMEOUT = "10s"  # a migration waits this long for tables in use, then says so


def read_meta(tx: Tx) -> tuple[int, bytes | None]:
    """``(schema_version, key_check)`` of the database; ``(0, None)`` for one without linkctl's tables.

    A database (schema) holding other tables and no linkctl ``meta`` is refused: linkctl
    never adds its tables next to another program's.
    """
    row = tx.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not (row and row[0]):
        others = [
            r[0]
            for r in tx.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1 LIMIT 6"
            )
        ]
        if others:
            shown = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            raise StateError(
                f"the database holds tables but no linkctl store (tables: {shown})",
                hint="point --state / LINKCTL_STATE at an empty database (or schema, via"
                " options=-csearch_path=…) for linkctl; nothing was changed",
            )
        return 0, None
    rows = dict(
        tx.execute("SELECT key, value FROM meta WHERE key IN ('schema_version', 'key_check')").fetchall()
    )
    if "schema_version" not in rows:
        raise StateError(
            "the database has a table named meta but it is not a linkctl store (no schema version)",
            hint="point --state / LINKCTL_STATE at a database for linkctl; nothing was changed",
        )
    check = rows.get("key_check")
    return int(rows["schema_version"]), None if check is None else base64.b64decode(check)


class PostgresStore(
    PostgresApplyLock,
    PostgresNotify,
    PostgresLeases,
    PostgresGrants,
    PostgresPendingAuthorizations,
    PostgresApiKeys,
    PostgresSessions,
    PostgresNotifications,
    PostgresHealth,
    PostgresTransfer,
    base.Store,
):
    """A state store in a PostgreSQL database (a pool of connections shared in the process)."""

    def __init__(self, db: Connector, sealer: sealing.Sealer, *, notice: Notice, read_only: bool) -> None:
        """Wrap a connector to a migrated, key-checked database; use :meth:`open` to get one."""
        self.url = db.url.shown
        self._db = db
        self._sealer = sealer
        self._notice = notice
        self._read_only = read_only
        self._closed = False
        self._lock_conns = {}
        self._read_ahead = ReadAhead()

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        notice: Notice | None = None,
        create: bool = True,
        read_only: bool = False,
        caller_clock: bool = False,
    ) -> PostgresStore:
        """Open the database of ``settings.state_url``, migrating and keying it when allowed.

        Order as on SQLite: the key is found and checked against the store before anything
        is written. ``create=False`` raises ``StoreNotReady`` for a store that needs a write
        first; ``read_only=True`` refuses writes and does not migrate (an empty or older
        database is refused with the command to run). ``caller_clock`` (tests with a fake
        clock) takes each call's ``now`` as the clock instead of the database's.
        """
        say: Notice = notice or base.stderr_notice
        url = parse_url(settings.state_url)
        key, key_source = sealing.read_key(
            state_key=settings.state_key.reveal() if settings.state_key else None,
            key_file=settings.state_key_file,
        )
        db = Connector(url, caller_clock=caller_clock)
        try:
            return cls._open_with(db, settings, say, key, key_source, create=create, read_only=read_only)
        except BaseException:
            db.close()
            raise

    @classmethod
    def _open_with(
        cls,
        db: Connector,
        settings: Settings,
        say: Notice,
        key: bytes | None,
        key_source: str,
        *,
        create: bool,
        read_only: bool,
    ) -> PostgresStore:
        url = db.url
        version, key_check = db.run(read_meta, write=False, action="read the schema version")
        known = len(load_migrations(DIALECT))
        if version > known:
            raise StateError(
                f"the store {url.shown} has schema version {version}, newer than this linkctl"
                f" understands ({known})",
                hint="upgrade linkctl; an older version must not write to a newer store",
            )
        ready = key is not None and version == known and key_check is not None
        if read_only and version == 0:
            # Nothing stored yet: read an empty store (as on SQLite) that nobody else sees.
            db.pin_private_schema([m.sql for m in load_migrations(DIALECT)])
            return cls(db, sealing.Sealer(key or os.urandom(sealing.KEY_BYTES)), notice=say, read_only=True)
        if read_only and not ready and (version < known or key_check is None):
            raise StateError(
                f"the store {url.shown} is at schema version {version} (this linkctl uses {known}) or has"
                " no key check yet; a read-only command does not migrate it",
                hint="run `linkctl state migrate` (or `linkctl apply`) first",
            )
        if not create and not ready:
            raise StoreNotReady(f"the store {url.shown}, its key or its schema is not ready yet")
        if key_check is not None and key is None:
            raise StateError(
                f"the store {url.shown} is encrypted with a state key but none was found;"
                f" looked at {key_source}",
                hint="set LINKCTL_STATE_KEY or LINKCTL_STATE_KEY_FILE to the key this store was created"
                " with (restore it from your backup); linkctl never re-keys a store silently",
            )
        if key is None:
            try:
                key, created = sealing.create_key_file(settings.state_key_file)
            except OSError as exc:
                raise StateError(
                    f"cannot create the state key file {settings.state_key_file}: {exc.strerror}",
                    hint=f"make {settings.state_key_file.parent} writable by this user, or set"
                    " LINKCTL_STATE_KEY_FILE to a writable place (or LINKCTL_STATE_KEY)",
                ) from None
            key_source = f"the key file {settings.state_key_file}"
            if created:
                say(
                    f"created state encryption key at {settings.state_key_file}; back it up:"
                    " without it stored secrets cannot be read"
                )
        sealer = sealing.Sealer(key)
        if key_check is not None:
            sealing.verify_key_check(sealer, key_check, store=url.shown, key_source=key_source)
        store = cls(db, sealer, notice=say, read_only=read_only)
        if version < known or key_check is None:
            store._migrate_and_key(key_source)
        return store

    def _migrate_and_key(self, key_source: str) -> tuple[int, int]:
        """Run pending migrations and write the key check, in one transaction; ``(from, to)``."""
        migrations = load_migrations(DIALECT)

        def work(tx: Tx) -> tuple[int, int]:
            tx.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")
            tx.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_KEY[0],))
            version, key_check = read_meta(tx)  # again, under the lock: another opener may have migrated
            start = version
            for migration in migrations[version:]:
                try:
                    tx.conn.execute(migration.sql.encode())  # several statements: the simple protocol
                except Exception as exc:
                    raise StateError(
                        f"migration {migration.name} of the store {self.url} failed: {exc}",
                        hint="nothing was changed (the migration runs in one transaction)",
                    ) from exc
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(migration.version),),
                )
                version = migration.version
            if key_check is None:
                blob = self._sealer.seal(sealing.KEY_CHECK_PLAINTEXT, sealing.KEY_CHECK_AAD)
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_check', %s)",
                    (base64.b64encode(blob).decode(),),
                )
            else:
                sealing.verify_key_check(self._sealer, key_check, store=self.url, key_source=key_source)
            return start, version

        try:
            start, end = self._db.run(work, write=True, action="migrate the schema")
        except StateError as exc:
            if "lock timeout" in exc.message or "canceling statement due to lock timeout" in exc.message:
                raise StateError(
                    f"cannot migrate the store {self.url}: its tables stayed in use for"
                    f" {MIGRATION_LOCK_TIMEOUT}",
                    hint="run `linkctl state migrate` when no long operation is running",
                ) from None
            raise
        if 0 < start < end:  # a new store is created silently, as on SQLite
            self._notice(f"migrated the store {self.url} from schema version {start} to {end}")
        return start, end

    def schema_version(self) -> int:
        """The schema version the database is at."""
        version, _ = self._db.run(read_meta, write=False, action="read the schema version")
        return version

    # -- transactions --------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"the store {self.url} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise StateError(
                f"the store {self.url} was opened read-only",
                hint="this command only reads; run `linkctl apply` to change the store",
            )

    def write(
        self, *, expected_serial: int | None, actor: str
    ) -> contextlib.AbstractContextManager[base.WriteTransaction]:
        """One atomic transaction; serial +1 on commit; ``StalePlan`` if the serial moved."""
        return self._write_block(expected_serial=expected_serial, actor=actor)

    @contextlib.contextmanager
    def _write_block(self, *, expected_serial: int | None, actor: str) -> Iterator[base.WriteTransaction]:
        self._check_writable()
        if getattr(self, "_writing", False):
            raise StateError("a store transaction is already open on this store (nested write)")
        self._writing = True
        self._read_ahead.clear()  # this store's own apply must be seen by its next reads
        try:
            with self._db.transaction(action="apply") as tx:
                row = tx.execute("SELECT value FROM meta WHERE key = 'serial' FOR UPDATE").fetchone()
                serial = int(row[0]) if row else 0
                if expected_serial is not None and serial != expected_serial:
                    raise StalePlan(
                        f"the plan was computed against state serial {expected_serial}"
                        f" but the store is at {serial}",
                        hint="run `linkctl plan` again",
                    )
                now = self._db.clock.now(tx.db_now, None)
                wtx = PostgresWriteTransaction(
                    tx, self._sealer, actor, now=now, clock=self._db.clock, insert_event=self._insert_event
                )
                try:
                    with tx.conn.pipeline():  # apply's statements go out without a round trip each
                        yield wtx
                        wtx.finish()
                finally:
                    wtx.open = False
                tx.execute("UPDATE meta SET value = %s WHERE key = 'serial'", (str(serial + 1),))
        finally:
            self._writing = False

    # -- declared state ------------------------------------------------------------
    def _read(self, action: str, work: Callable[[Tx], Any]) -> Any:
        self._check_open()
        return self._db.run(work, write=False, action=action)

    def _query(self, action: str, sql: str, params: Any = None, *, all_rows: bool = False) -> Any:
        """One read-only statement in one round trip (:meth:`Connector.query`)."""
        self._check_open()
        return self._db.query(sql, params, action=action, all_rows=all_rows)

    def state_serial(self) -> int:
        """The serial that every successful apply increments."""
        row = self._query("read the serial", "SELECT value FROM meta WHERE key = 'serial'")
        return int(row[0]) if row else 0

    def instance_name(self) -> str | None:
        """The Instance the store was last applied from (None before the first such apply)."""
        row = self._query("read the instance", "SELECT value FROM meta WHERE key = 'instance'")
        return None if row is None else str(row[0])

    def list_links(self) -> list[base.StoredLink]:
        """All links, ordered by name."""
        self._refresh_offset()
        rows = self._query("list links", SELECT_LINKS + " ORDER BY name", all_rows=True)
        return [link_from_row(row, self._db.clock) for row in rows]

    def _remember_links(self, rows: dict[str, tuple[Sequence[Any], Sequence[str], Sequence[bytes]]]) -> None:
        """Keep the links just leased, with their sealed secrets (:mod:`reconciler.store.read_ahead`)."""
        self._read_ahead.remember(
            {
                name: (link, dict(zip(fields, blobs, strict=True)))
                for name, (link, fields, blobs) in rows.items()
            }
        )

    def get_link(self, name: str) -> base.StoredLink | None:
        """One link by name."""
        self._refresh_offset()
        ahead = self._read_ahead.take_link(name)
        if ahead is not None:
            return link_from_row(ahead, self._db.clock)
        row = self._query("read a link", SELECT_LINKS + " WHERE name = %s", (name,))
        return None if row is None else link_from_row(row, self._db.clock)

    def read_secret(self, name: str, field: str) -> Secret | None:
        """Decrypt one stored secret of a link (``None`` if the link or secret is absent)."""
        known, row = self._read_ahead.sealed_secret(name, field)
        if not known:
            row = self._query(
                "read a secret",
                "SELECT l.uid, s.ciphertext FROM links l JOIN secrets s ON s.link_uid = l.uid"
                " WHERE l.name = %s AND s.field = %s",
                (name, field),
            )
        if row is None:
            return None
        try:
            plaintext = self._sealer.open(bytes(row[1]), sealing.secret_aad(row[0], field))
        except sealing.SealError as exc:
            raise StateError(
                f"the stored secret {field!r} of link {name!r} cannot be decrypted: {exc.message}",
                hint="the row was altered or copied from elsewhere; apply the link again to re-store it",
            ) from None
        return Secret(plaintext.decode("utf-8"))

    def fingerprint_key(self) -> bytes:
        """Key for :meth:`Secret.fingerprint`, derived from the state key (HKDF)."""
        return self._sealer.fingerprint_key

    # -- discovery cache and audit ---------------------------------------------------
    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        """Cached discovery metadata of an issuer and when it was fetched."""
        row = self._query(
            "read cached metadata",
            "SELECT metadata_json, fetched_at FROM provider_metadata WHERE issuer = %s",
            (issuer,),
        )
        return None if row is None else (json.loads(row[0]), float(row[1]))

    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        """Cache an issuer's discovery metadata (replacing an older copy)."""
        self._check_writable()
        self._db.run(
            lambda tx: tx.execute(
                "INSERT INTO provider_metadata (issuer, metadata_json, fetched_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (issuer) DO UPDATE SET metadata_json = excluded.metadata_json,"
                " fetched_at = excluded.fetched_at",
                (issuer, json.dumps(dict(metadata), sort_keys=True), fetched_at),
            ),
            write=True,
            action="cache provider metadata",
        )

    def add_event(self, event: base.Event) -> None:
        """Append an audit event in its own transaction."""
        self._check_writable()
        self._db.run(
            lambda tx: self._insert_event(tx, event, event.actor, self._db.clock.now(tx.db_now, None)),
            write=True,
            action="record an audit event",
        )

    def _insert_event(self, tx: Tx, event: base.Event, default_actor: str, now: float) -> None:
        tx.execute(
            "INSERT INTO events (at, actor, action, link, detail_json) VALUES (%s, %s, %s, %s, %s)",
            (
                self._db.clock.to_db(event.at) if event.at is not None else now,
                event.actor or default_actor,
                event.action,
                event.link,
                base.event_json(event.detail),
            ),
        )

    def list_events(self, *, link: str | None = None, limit: int = 100) -> list[base.Event]:
        """Newest events first (optionally of one link)."""
        sql = "SELECT id, at, actor, action, link, detail_json FROM events"
        params: tuple[Any, ...] = ()
        if link is not None:
            sql += " WHERE link = %s"
            params = (link,)
        sql += " ORDER BY id DESC LIMIT %s"
        self._refresh_offset()
        rows = self._read("list events", lambda tx: tx.execute(sql, (*params, max(int(limit), 0))).fetchall())
        return [
            base.Event(
                action=r[3],
                link=r[4],
                actor=r[2],
                detail=json.loads(r[5]),
                at=self._db.clock.from_db(r[1]),
                id=r[0],
            )
            for r in rows
        ]

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Release this store (idempotent); the process's pool stays for other stores of the URL."""
        if not self._closed:
            self._closed = True
            for conn in self._lock_conns.values():
                conn.close()
            self._lock_conns.clear()
            self._db.close()
