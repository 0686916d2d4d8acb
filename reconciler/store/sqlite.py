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

Grant queries live in the :class:`~reconciler.store.sqlite_grants.SQLiteGrants` mixin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import getpass
import json
import os
import re
import socket
import sqlite3
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from reconciler.errors import ConflictError, LockTimeout, StalePlan, StateError, StoreNotReady
from reconciler.secrets import REDACTED, Secret
from reconciler.settings import Settings
from reconciler.store import base, sealing, sqlite_grants, sqlite_leases, sqlite_pending

Notice = Callable[[str], None]

BUSY_TIMEOUT_MS = 30_000
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LINK_COLUMNS = (
    "uid, name, provider, spec_json, spec_hash, secret_fingerprints_json, generation, "
    "source_file, source_line, managed_by, deletion_policy, created_at, updated_at"
)
_SELECT_LINKS = f"SELECT {_LINK_COLUMNS} FROM links"
_SELECT_LOCKS = "SELECT id, operation, host, pid, since, user FROM locks"
_LOCK_POLL_MIN = 0.02
_LOCK_POLL_MAX = 0.5


@dataclasses.dataclass(frozen=True)
class Migration:
    """One ``migrations/NNNN_name.sql`` file."""

    version: int
    name: str
    sql: str


@functools.cache
def load_migrations() -> tuple[Migration, ...]:
    """The packaged migrations in version order; versions must be 1, 2, 3, … without gaps (read once)."""
    found: list[Migration] = []
    for entry in resources.files("reconciler.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):  # pragma: no cover - a packaging bug
        raise StateError(f"the packaged store migrations are not numbered 1..N: {versions}")
    return tuple(found)


def split_statements(sql: str) -> list[str]:
    """Split a migration script into statements (``sqlite3.complete_statement`` aware of triggers)."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statement = sql[start : index + 1].strip()
            if _strip_comments(statement):
                statements.append(statement)
            start = index + 1
    if _strip_comments(sql[start:]):
        raise StateError("a store migration ends with an incomplete SQL statement")
    return statements


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--")).strip(" \n;")


def sqlite_path(url: str) -> Path:
    """The absolute file path of a SQLite state URL (SQLAlchemy's convention).

    ``sqlite:///state.db`` is relative to the working directory, ``sqlite:////abs/state.db``
    is absolute. A relative URL whose file is absent while the same path from ``/`` exists
    is refused: that is a URL written for linkctl's older reading (three slashes meant absolute).
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or "#" in url:
        raise StateError(
            f"not a SQLite state URL: {url!r}",
            hint=f"use {URL_FORMS} (after the scheme, three slashes, then the path)",
        )
    rest = url[len(prefix) :]
    path = Path(rest) if rest.startswith("/") else Path.cwd() / rest
    if path.name in ("", ".", "..") or url.endswith("/"):
        raise StateError(
            f"the SQLite state URL {url!r} names a directory, not a file",
            hint=f"use {URL_FORMS}",
        )
    if not rest.startswith("/") and not path.exists() and Path("/" + rest).exists():
        raise StateError(
            f"the state URL {url!r} names {path} (relative to the working directory), which does"
            f" not exist, while /{rest} does",
            hint=f"for the absolute path write sqlite:////{rest} (four slashes); for a new store here,"
            " create the directory or give the absolute path",
        )
    return path


URL_FORMS = "sqlite:////absolute/path/state.db or sqlite:///path/relative/to/cwd.db"


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (containers)
        return str(os.getuid())


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return True  # not a real pid: never treat as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _event_json(detail: Mapping[str, Any]) -> str:
    """Audit detail as JSON; a Secret that slipped in is written as ``***``, never its value."""

    def default(value: object) -> object:
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        raise StateError(f"an audit event detail holds a value of type {type(value).__name__} (not JSON)")

    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), default=default)


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


def _warn_if_shared(path: Path, what: str, say: Notice) -> None:
    """Refuse a file holding secrets that another user controls; warn when others can read it.

    Owned by someone other than this user (or root), or writable by group or others, it can
    have been planted or replaced (a key that seals our secrets for them, a store that redirects
    a token endpoint): refused. Only readable by others: a warning, as before.
    """
    try:
        info = path.stat()
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (os.geteuid(), 0):
        raise StateError(
            f"{what} {path} is owned by another user (uid {info.st_uid}, this is uid {os.geteuid()})",
            hint=f"linkctl trusts only files of this user or root: `chown {os.geteuid()} {path}` if yours",
        )
    if mode & 0o022:
        raise StateError(
            f"{what} {path} is writable by other users (mode {mode:04o}), so it may have been replaced",
            hint=f"check its content, then run `chmod 600 {path}`",
        )
    if mode & 0o077:
        say(f"{what} {path} is accessible by other users (mode {mode:04o}); run `chmod 600 {path}`")


def _link_from_row(row: tuple[Any, ...]) -> base.StoredLink:
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
        created_at=row[11],
        updated_at=row[12],
    )


def _lock_from_row(row: tuple[Any, ...]) -> base.LockInfo:
    return base.LockInfo(id=row[0], operation=row[1], host=row[2], pid=row[3], since=row[4], user=row[5])


class _SQLiteWriteTransaction(base.WriteTransaction):
    """The writes of one :meth:`SQLiteStore.write` block; unusable after the block ends."""

    def __init__(self, store: SQLiteStore, actor: str) -> None:
        self._store = store
        self._conn = store._conn
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
            uid = uuid.uuid4().hex
            generation = 1
            created_at = now
            conn.execute(
                f"INSERT INTO links ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        sealer = self._store._sealer
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
        self._store._insert_event(event, default_actor=self._actor, now=self._now)

    def set_instance(self, name: str) -> None:
        """Record the Instance (``metadata.name``) the store is applied from."""
        self._check_open()
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('instance', ?)", (name,))


class SQLiteStore(
    sqlite_leases.SQLiteLeases,
    sqlite_grants.SQLiteGrants,
    sqlite_pending.SQLitePendingAuthorizations,
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
        say: Notice = notice or _stderr_notice
        path = sqlite_path(settings.state_url)
        key, key_source = sealing.read_key(
            state_key=settings.state_key.reveal() if settings.state_key else None,
            key_file=settings.state_key_file,
        )
        existed = path.exists()
        if read_only:
            if existed:
                _refuse_unless_store(path)
            try:
                return cls.open(settings, notice=say, create=False)
            except StoreNotReady:
                return cls._open_copy(settings, path, key, key_source, say)
        if not create and (key is None or not existed or not _ready_as_is(path)):
            raise StoreNotReady(f"the store {path}, its key or its schema is not ready yet")
        if existed:
            _refuse_unless_store(path)
        if key is not None and settings.state_key is None:
            _warn_if_shared(settings.state_key_file, "the state key file", say)
        if existed:
            _warn_if_shared(path, "the store file", say)
        if existed and not path.is_file():
            raise StateError(f"the state path {path} exists and is not a file")
        if not existed:
            _create_private_file(path)
        conn = _connect(path)
        try:
            known = len(load_migrations())
            version, key_check = _read_meta(conn)
            if not create and (version != known or key_check is None):  # changed since the probe
                raise StoreNotReady(f"the store {path} needs a schema migration or key check first")
            _refuse_newer_schema(path, version, known)
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
                _verify_key(sealer, key_check, path=path, key_source=key_source)
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
                        f"cannot read the store {path}: {exc}", hint=_hint_for(str(exc), path)
                    ) from None
            conn.execute("PRAGMA foreign_keys = ON")
            known = len(load_migrations())
            version, key_check = _read_meta(conn)
            _refuse_newer_schema(path, version, known)
            if key_check is not None and key is None:
                raise StateError(
                    f"the store {path} is encrypted with a state key but none was found;"
                    f" looked at {key_source}",
                    hint="set LINKCTL_STATE_KEY or LINKCTL_STATE_KEY_FILE to the key this store was created"
                    " with (restore it from your backup); linkctl never re-keys a store silently",
                )
            if key is not None and settings.state_key is None:
                _warn_if_shared(settings.state_key_file, "the state key file", say)
            if path.is_file():
                _warn_if_shared(path, "the store file", say)
            # No key yet means nothing sealed yet: a throwaway key reads the same (empty) state.
            sealer = sealing.Sealer(key if key is not None else os.urandom(sealing.KEY_BYTES))
            if key_check is not None:
                _verify_key(sealer, key_check, path=path, key_source=key_source)
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
                version, _ = _read_meta(conn)
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
                _verify_key(self._sealer, row[0], path=path, key_source=key_source)
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
        with self._immediate() as conn:
            serial = _serial(conn)
            if expected_serial is not None and serial != expected_serial:
                raise StalePlan(
                    f"the plan was computed against state serial {expected_serial}"
                    f" but the store is at {serial}",
                    hint="run `linkctl plan` again",
                )
            tx = _SQLiteWriteTransaction(self, actor)
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
        return [_link_from_row(row) for row in self._conn.execute(_SELECT_LINKS + " ORDER BY name")]

    def get_link(self, name: str) -> base.StoredLink | None:
        """One link by name."""
        self._check_open()
        row = self._conn.execute(_SELECT_LINKS + " WHERE name = ?", (name,)).fetchone()
        return None if row is None else _link_from_row(row)

    def read_secret(self, name: str, field: str) -> Secret | None:
        """Decrypt one stored secret of a link (``None`` if the link or secret is absent)."""
        self._check_open()
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

    # -- the apply lock ------------------------------------------------------------
    def acquire_lock(self, *, operation: str, timeout: float) -> base.LockInfo:
        """Wait up to ``timeout`` s for the apply lock; ``LockTimeout`` names the holder."""
        self._check_open()
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = _LOCK_POLL_MIN
        while True:
            mine, holder, stale = self._try_lock(operation)
            if stale is not None:
                self._notice(
                    f"removed a stale apply lock {stale.id} from pid {stale.pid} on {stale.host}"
                    f" ({stale.operation}, since {_iso(stale.since)}): that process no longer exists"
                )
            if mine is not None:
                return mine
            assert holder is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(
                    f"the apply lock is held by pid {holder.pid} on host {holder.host}"
                    f" (user {holder.user}, operation {holder.operation!r}, since {_iso(holder.since)});"
                    f" gave up after {timeout:g} s",
                    hint="wait for it to finish; if that process is gone,"
                    f" run `linkctl state unlock {holder.id}`",
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _LOCK_POLL_MAX)

    def _try_lock(
        self, operation: str
    ) -> tuple[base.LockInfo | None, base.LockInfo | None, base.LockInfo | None]:
        """One attempt: ``(mine, holder, removed_stale)``; exactly one of mine/holder is set."""
        host = socket.gethostname()
        with self._immediate() as conn:
            row = conn.execute(f"{_SELECT_LOCKS} LIMIT 1").fetchone()
            stale = None
            if row is not None:
                holder = _lock_from_row(row)
                # Only a lock of this host can be judged by pid; other hosts need `state unlock`.
                if holder.host != host or _pid_alive(holder.pid):
                    return None, holder, None
                conn.execute("DELETE FROM locks WHERE id = ?", (holder.id,))
                stale = holder
            mine = base.LockInfo(
                id=uuid.uuid4().hex,
                operation=operation,
                host=host,
                pid=os.getpid(),
                since=time.time(),
                user=_current_user(),
            )
            conn.execute(
                "INSERT INTO locks (id, operation, host, pid, since, user) VALUES (?, ?, ?, ?, ?, ?)",
                (mine.id, mine.operation, mine.host, mine.pid, mine.since, mine.user),
            )
        return mine, None, stale

    def release_lock(self, lock_id: str) -> None:
        """Release a lock this process holds (a notice if someone removed it meanwhile)."""
        self._check_open()
        with self._immediate() as conn:
            removed = conn.execute("DELETE FROM locks WHERE id = ?", (lock_id,)).rowcount
        if not removed:
            self._notice(f"the apply lock {lock_id} was already gone when released (force-unlocked?)")

    def force_unlock(self, lock_id: str) -> base.LockInfo:
        """Remove a lock by id (``linkctl state unlock ID``)."""
        self._check_open()
        with self._immediate() as conn:
            row = conn.execute(f"{_SELECT_LOCKS} WHERE id = ?", (lock_id,)).fetchone()
            if row is None:
                current = conn.execute("SELECT id FROM locks LIMIT 1").fetchone()
                held = f"the current lock is {current[0]}" if current else "no lock is held"
                raise StateError(f"no apply lock with id {lock_id!r} ({held})")
            conn.execute("DELETE FROM locks WHERE id = ?", (lock_id,))
        return _lock_from_row(row)

    def current_lock(self) -> base.LockInfo | None:
        """The lock holder, if any."""
        self._check_open()
        row = self._conn.execute(f"{_SELECT_LOCKS} LIMIT 1").fetchone()
        return None if row is None else _lock_from_row(row)

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
                _event_json(event.detail),
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


# -- helpers ---------------------------------------------------------------------------
def _stderr_notice(message: str) -> None:
    print(f"linkctl: {message}", file=sys.stderr)


def _create_private_file(path: Path) -> None:
    """Create an empty store file with mode 0600 (parents 0700); fine if it appears meanwhile."""
    try:
        sealing.make_private_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(
            f"cannot create the store file {path}: {exc.strerror}",
            hint=f"make {path.parent} writable by this user, or pick another place (--state, LINKCTL_STATE)",
        ) from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _refuse_unless_store(path: Path) -> None:
    """Refuse a file that is not a linkctl store (corrupted, truncated, another program's database).

    Looked at read-only, before anything writes to it: linkctl never adds its tables to
    another database nor switches it to WAL.
    """
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return  # a directory is refused later; an empty file is a store being created
    except OSError:
        return
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"cannot open the store {path}: {exc}", hint=_hint_for(str(exc), path)) from None
    try:
        tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return  # a store another process is creating (WAL on, no tables yet)
        has_version = (
            "meta" in tables and probe.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone()
        )
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc):
            has_version = False
        else:
            raise StateError(f"cannot read the store {path}: {exc}", hint=_hint_for(str(exc), path)) from None
    except sqlite3.DatabaseError as exc:
        raise StateError(f"cannot read the store {path}: {exc}", hint=_hint_for(str(exc), path)) from None
    finally:
        probe.close()
    if not has_version:
        shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        raise StateError(
            f"{path} is a SQLite database but not a linkctl store (tables: {shown}; no linkctl metadata)",
            hint="point --state / LINKCTL_STATE at a linkctl store or at a new file;"
            " linkctl never adds its tables to another database, and nothing was changed",
        )


def store_failure(error: sqlite3.DatabaseError, url: str) -> StateError:
    """A SQLite failure met while using the store, as the error the user sees (file and what to do)."""
    try:
        path = sqlite_path(url)
    except StateError:
        return StateError(f"the store {url} failed: {error}", hint="check LINKCTL_STATE / --state")
    return StateError(f"the store {path} failed: {error}", hint=_hint_for(str(error), path))


def _hint_for(reason: str, path: Path) -> str:
    """What to do about a SQLite failure on the store file, by its reason."""
    reason = reason.lower()
    if "full" in reason:
        return (
            f"free space on the file system holding {path} (nothing was written: the transaction rolled back)"
        )
    if "readonly" in reason or "read-only" in reason or "unable to open" in reason or "permission" in reason:
        return f"make {path} and its directory {path.parent} writable (and readable) by this user"
    if "not a database" in reason or "malformed" in reason or "corrupt" in reason:
        return (
            f"{path} is damaged: restore it from your backup (or move it aside to start empty and"
            " apply again; authorizations would be lost)"
        )
    return "check LINKCTL_STATE / --state and the file's permissions"


def _ready_as_is(path: Path) -> bool:
    """True if opening ``path`` would write nothing: WAL already on, schema current, key check there.

    Looked at through a read-only connection, because the normal one switches the file
    to WAL journaling, which is a write to a file that may not even be a store.
    """
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except (sqlite3.Error, ValueError):
        return False
    try:
        mode = probe.execute("PRAGMA journal_mode").fetchone()[0]
        version, key_check = _read_meta(probe)
    except (sqlite3.Error, StateError):
        return False
    finally:
        probe.close()
    return str(mode).lower() == "wal" and version == len(load_migrations()) and key_check is not None


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the store {path}: {exc}", hint=_hint_for(str(exc), path)) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = _switch_to_wal(conn)
        if str(mode).lower() != "wal":
            raise StateError(f"the store {path} cannot use WAL journaling (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StateError(f"cannot open the store {path}: {exc}", hint=_hint_for(str(exc), path)) from None
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Turn WAL on, retrying with bounded backoff while concurrent first opens hold the file.

    Switching the journal mode of a brand-new file can fail with "database is locked"
    without SQLite calling the busy handler, so ``busy_timeout`` alone does not cover
    several processes creating the same store at once.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _refuse_newer_schema(path: Path, version: int, known: int) -> None:
    """Refuse a store whose schema is newer than the migrations this linkctl knows."""
    if version > known:
        raise StateError(
            f"the store {path} has schema version {version}, newer than this linkctl understands ({known})",
            hint="upgrade linkctl; an older version must not write to a newer store",
        )


def _read_meta(conn: sqlite3.Connection) -> tuple[int, bytes | None]:
    """``(schema_version, key_check)`` of a store; ``(0, None)`` for a new file."""
    try:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return 0, None
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('schema_version', 'key_check')"))
    except sqlite3.DatabaseError as exc:
        raise StateError(f"cannot read the store: {exc}", hint="is it a linkctl SQLite state file?") from None
    return int(rows.get("schema_version") or 0), rows.get("key_check")


def _verify_key(sealer: sealing.Sealer, key_check: bytes, *, path: Path, key_source: str) -> None:
    try:
        value = sealer.open(key_check, sealing.KEY_CHECK_AAD)
    except sealing.SealError:
        value = b""
    if value != sealing.KEY_CHECK_PLAINTEXT:
        raise StateError(
            f"the state key does not match this store ({path}; key from {key_source})",
            hint="use the key this store was created with (LINKCTL_STATE_KEY or LINKCTL_STATE_KEY_FILE);"
            " linkctl never re-keys a store, so nothing was changed",
        )


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
