"""The embedded SQLite store: one file, zero set-up, the default backend.

:class:`SQLiteStore` implements :class:`reconciler.store.base.Store`; it is created
by :func:`reconciler.store.open_store` for ``sqlite:///…`` URLs and used
by apply, the keeper, the CLI and the server through that interface only.

What it guarantees (the invariants in docs/testing.md):

* atomic applies — every write runs in ``BEGIN IMMEDIATE`` … ``COMMIT`` with WAL and
  ``synchronous=FULL``, so after a crash the file holds the old or the new state;
* a plan computed against serial N is refused (``StalePlan``) when the store moved;
* secrets and tokens are sealed (AES-256-GCM, see :mod:`reconciler.store.sealing`);
  the file and its directory are private to the user (0600 / 0700).

The parts, by concern: opening the file (URL rules, WAL, refusing foreign or newer
files) in :mod:`~reconciler.store.sqlite_open`, the migrations in
:mod:`~reconciler.store.schema`, link rows and the write transaction in
:mod:`~reconciler.store.sqlite_links`, and the mixins for the apply lock
(:mod:`~reconciler.store.sqlite_lock`), grants (:mod:`~reconciler.store.sqlite_grants`)
and leases (:mod:`~reconciler.store.sqlite_leases`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import StalePlan, StateError, StoreNotReady
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import (
    base,
    sealing,
    sqlite_grants,
    sqlite_health,
    sqlite_leases,
    sqlite_notifications,
    sqlite_pending,
    sqlite_transfer,
)
from reconciler.store.read_ahead import ReadAhead
from reconciler.store.schema import latest_version, load_migrations, split_statements
from reconciler.store.sqlite_api_keys import SQLiteApiKeys
from reconciler.store.sqlite_links import SELECT_LINKS, SQLiteWriteTransaction, link_from_row
from reconciler.store.sqlite_lock import SQLiteApplyLock
from reconciler.store.sqlite_open import (
    Notice,
    connect,
    create_private_file,
    hint_for,
    read_meta,
    ready_as_is,
    refuse_newer_schema,
    refuse_unless_store,
    sqlite_path,
    store_failure,
    warn_if_shared,
)
from reconciler.store.sqlite_sessions import SQLiteSessions

# Importable from here as before this module was split.
__all__ = ["SQLiteStore", "load_migrations", "split_statements", "sqlite_path", "store_failure"]


class SQLiteStore(
    SQLiteApplyLock,
    sqlite_leases.SQLiteLeases,
    sqlite_grants.SQLiteGrants,
    sqlite_pending.SQLitePendingAuthorizations,
    SQLiteApiKeys,
    SQLiteSessions,
    sqlite_notifications.SQLiteNotifications,
    sqlite_health.SQLiteHealth,
    sqlite_transfer.SQLiteTransfer,
    base.Store,
):
    """A state store in one SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(
        self,
        url: str,
        conn: sqlite3.Connection,
        sealer: sealing.Sealer,
        *,
        notice: Notice,
    ) -> None:
        """Wrap an open, migrated, key-checked connection; use :meth:`open` to get one."""
        self.url = url
        self._conn = conn
        self._sealer = sealer
        self._notice = notice
        self._closed = False
        self._read_only_path: Path | None = None
        self._read_ahead = ReadAhead()

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(
        cls, settings: Settings, *, notice: Notice | None = None, create: bool = True, read_only: bool = False
    ) -> SQLiteStore:
        """Open (creating if needed) the store file of ``settings.state_url``.

        Order matters: the key is parsed and checked against an existing store before
        anything is written to it, so a wrong or missing key leaves the file untouched.
        With ``create=False`` a store that would need any write first (file, key, schema
        migration, key check) raises ``StoreNotReady`` instead.
        """
        say: Notice = notice or base.stderr_notice
        path = sqlite_path(settings.state_url)
        key, key_source = sealing.read_key(
            state_key=settings.state_key.reveal() if settings.state_key else None,
            key_file=settings.state_key_file,
        )
        existed = path.exists()
        if read_only:
            if existed:
                refuse_unless_store(path)
            try:
                return cls.open(settings, notice=say, create=False)
            except StoreNotReady:
                return cls._open_copy(settings, path, key, key_source, say)
        if not create and (key is None or not existed or not ready_as_is(path)):
            raise StoreNotReady(f"the store {path}, its key or its schema is not ready yet")
        if existed:
            refuse_unless_store(path)
        if key is not None and settings.state_key is None:
            warn_if_shared(settings.state_key_file, "the state key file", say)
        if existed:
            warn_if_shared(path, "the store file", say)
        if existed and not path.is_file():
            raise StateError(f"the state path {path} exists and is not a file")
        if not existed:
            create_private_file(path)
        conn = connect(path)
        try:
            known = latest_version()
            version, key_check = read_meta(conn)
            if not create and (version != known or key_check is None):  # changed since the probe
                raise StoreNotReady(f"the store {path} needs a schema migration or key check first")
            refuse_newer_schema(path, version, known)
            if key_check is not None and key is None:
                # Another process's first open may have created the key file and keyed the
                # store since we looked: the key check is written only after the key file.
                key, key_source = sealing.read_key(
                    state_key=settings.state_key.reveal() if settings.state_key else None,
                    key_file=settings.state_key_file,
                )
            if key_check is not None and key is None:
                raise StateError(
                    f"the store {path} is encrypted with a state key but none was found;"
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
                sealing.verify_key_check(sealer, key_check, store=str(path), key_source=key_source)
            store = cls(settings.state_url, conn, sealer, notice=say)
            # Fast path: an up-to-date, keyed store is opened without taking the write lock,
            # so readers (`linkctl token`, the keeper) never queue behind a long apply.
            if version < known:
                store._migrate(path)
            if key_check is None:
                store._ensure_key_check(path=path, key_source=key_source)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _open_copy(
        cls, settings: Settings, path: Path, key: bytes | None, key_source: str, say: Notice
    ) -> SQLiteStore:
        """A private in-memory copy of the store (empty if absent), migrated there, refusing writes."""
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            if path.is_file():
                try:
                    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
                    try:
                        source.backup(conn)
                    finally:
                        source.close()
                except sqlite3.DatabaseError as exc:
                    raise StateError(
                        f"cannot read the store {path}: {exc}", hint=hint_for(str(exc), path)
                    ) from None
            conn.execute("PRAGMA foreign_keys = ON")
            known = latest_version()
            version, key_check = read_meta(conn)
            refuse_newer_schema(path, version, known)
            if key_check is not None and key is None:
                raise StateError(
                    f"the store {path} is encrypted with a state key but none was found;"
                    f" looked at {key_source}",
                    hint="set LINKCTL_STATE_KEY or LINKCTL_STATE_KEY_FILE to the key this store was created"
                    " with (restore it from your backup); linkctl never re-keys a store silently",
                )
            if key is not None and settings.state_key is None:
                warn_if_shared(settings.state_key_file, "the state key file", say)
            if path.is_file():
                warn_if_shared(path, "the store file", say)
            # No key yet means nothing sealed yet: a throwaway key reads the same (empty) state.
            sealer = sealing.Sealer(key if key is not None else os.urandom(sealing.KEY_BYTES))
            if key_check is not None:
                sealing.verify_key_check(sealer, key_check, store=str(path), key_source=key_source)
            store = cls(settings.state_url, conn, sealer, notice=say)
            if version < known:
                store._migrate(path)
        except BaseException:
            conn.close()
            raise
        store._read_only_path = path
        return store

    def _migrate(self, path: Path) -> None:
        for migration in load_migrations():
            with self._immediate() as conn:
                # Re-read inside the write lock: a concurrent opener may have migrated.
                version, _ = read_meta(conn)
                if version >= migration.version:
                    continue
                if version != migration.version - 1:  # pragma: no cover - guarded by load_migrations
                    raise StateError(
                        f"the store {path} is at schema {version}; cannot apply {migration.name}"
                    )
                try:
                    for statement in split_statements(migration.sql):
                        conn.execute(statement)
                except sqlite3.Error as exc:
                    raise StateError(f"migration {migration.name} of the store {path} failed: {exc}") from exc
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (migration.version,),
                )

    def _ensure_key_check(self, *, path: Path, key_source: str) -> None:
        with self._immediate() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
            if row is not None:  # written by a concurrent opener meanwhile: it must match too
                sealing.verify_key_check(self._sealer, row[0], store=str(path), key_source=key_source)
                return
            blob = self._sealer.seal(sealing.KEY_CHECK_PLAINTEXT, sealing.KEY_CHECK_AAD)
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?)", (blob,))

    # -- transactions --------------------------------------------------------------
    @contextlib.contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """Run the block in ``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` on any exception."""
        self._check_open()
        if self._read_only_path is not None:
            raise StateError(
                f"the store {self._read_only_path} was opened read-only (it is absent or needs a migration)",
                hint="this command only reads; run `linkctl apply` to create or migrate the store",
            )
        conn = self._conn
        _begin_immediate(conn, self.url)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def write(
        self, *, expected_serial: int | None, actor: str
    ) -> contextlib.AbstractContextManager[base.WriteTransaction]:
        """One atomic transaction; serial +1 on commit; ``StalePlan`` if the serial moved."""
        return self._write(expected_serial=expected_serial, actor=actor)

    @contextlib.contextmanager
    def _write(self, *, expected_serial: int | None, actor: str) -> Iterator[base.WriteTransaction]:
        self._read_ahead.clear()  # this store's own apply must be seen by its next reads
        with self._immediate() as conn:
            serial = _serial(conn)
            if expected_serial is not None and serial != expected_serial:
                raise StalePlan(
                    f"the plan was computed against state serial {expected_serial}"
                    f" but the store is at {serial}",
                    hint="run `linkctl plan` again",
                )
            tx = SQLiteWriteTransaction(conn, self._sealer, actor, insert_event=self._insert_event)
            try:
                yield tx
            finally:
                tx.open = False
            conn.execute("UPDATE meta SET value = ? WHERE key = 'serial'", (serial + 1,))

    # -- declared state ------------------------------------------------------------
    def state_serial(self) -> int:
        """The serial that every successful apply increments."""
        self._check_open()
        return _serial(self._conn)

    def instance_name(self) -> str | None:
        """The Instance the store was last applied from (None before the first such apply)."""
        self._check_open()
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        return None if row is None else str(row[0])

    def list_links(self) -> list[base.StoredLink]:
        """All links, ordered by name."""
        self._check_open()
        return [link_from_row(row) for row in self._conn.execute(SELECT_LINKS + " ORDER BY name")]

    def get_link(self, name: str) -> base.StoredLink | None:
        """One link by name."""
        self._check_open()
        row = self._read_ahead.take_link(name)
        if row is None:
            row = self._conn.execute(SELECT_LINKS + " WHERE name = ?", (name,)).fetchone()
        return None if row is None else link_from_row(row)

    def read_secret(self, name: str, field: str) -> Secret | None:
        """Decrypt one stored secret of a link (``None`` if the link or secret is absent)."""
        self._check_open()
        known, row = self._read_ahead.sealed_secret(name, field)
        if not known:
            row = self._conn.execute(
                "SELECT l.uid, s.ciphertext FROM links l JOIN secrets s ON s.link_uid = l.uid"
                " WHERE l.name = ? AND s.field = ?",
                (name, field),
            ).fetchone()
        if row is None:
            return None
        try:
            plaintext = self._sealer.open(row[1], sealing.secret_aad(row[0], field))
        except sealing.SealError as exc:
            raise StateError(
                f"the stored secret {field!r} of link {name!r} cannot be decrypted: {exc.message}",
                hint="the row was altered or copied from elsewhere; apply the link again to re-store it",
            ) from None
        return Secret(plaintext.decode("utf-8"))

    def fingerprint_key(self) -> bytes:
        """Key for :meth:`Secret.fingerprint`, derived from the state key (HKDF)."""
        return self._sealer.fingerprint_key

    # -- audit ---------------------------------------------------------------------
    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        """Cached discovery metadata of an issuer and when it was fetched."""
        self._check_open()
        row = self._conn.execute(
            "SELECT metadata_json, fetched_at FROM provider_metadata WHERE issuer = ?", (issuer,)
        ).fetchone()
        return None if row is None else (json.loads(row[0]), float(row[1]))

    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        """Cache an issuer's discovery metadata (replacing an older copy)."""
        with self._immediate():
            self._conn.execute(
                "INSERT INTO provider_metadata (issuer, metadata_json, fetched_at) VALUES (?, ?, ?)"
                " ON CONFLICT (issuer) DO UPDATE SET metadata_json = excluded.metadata_json,"
                " fetched_at = excluded.fetched_at",
                (issuer, json.dumps(dict(metadata), sort_keys=True), fetched_at),
            )

    def add_event(self, event: base.Event) -> None:
        """Append an audit event in its own transaction."""
        with self._immediate():
            self._insert_event(event, default_actor=event.actor, now=time.time())

    def _insert_event(self, event: base.Event, *, default_actor: str, now: float) -> None:
        self._conn.execute(
            "INSERT INTO events (at, actor, action, link, detail_json) VALUES (?, ?, ?, ?, ?)",
            (
                event.at if event.at is not None else now,
                event.actor or default_actor,
                event.action,
                event.link,
                base.event_json(event.detail),
            ),
        )

    def list_events(self, *, link: str | None = None, limit: int = 100) -> list[base.Event]:
        """Newest events first (optionally of one link)."""
        self._check_open()
        sql = "SELECT id, at, actor, action, link, detail_json FROM events"
        params: tuple[Any, ...] = ()
        if link is not None:
            sql += " WHERE link = ?"
            params = (link,)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._conn.execute(sql, (*params, max(int(limit), 0))).fetchall()
        return [
            base.Event(action=r[3], link=r[4], actor=r[2], detail=json.loads(r[5]), at=r[1], id=r[0])
            for r in rows
        ]

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"the store {self.url} is closed")


def _serial(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'serial'").fetchone()
    return int(row[0]) if row else 0


def _begin_immediate(conn: sqlite3.Connection, url: str) -> None:
    if conn.in_transaction:
        raise StateError("a store transaction is already open on this connection (nested write)")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StateError(
            f"cannot start a write transaction on {url}: {exc}",
            hint="another process held the store busy for too long; try again",
        ) from None
