"""The apply lock of the PostgreSQL store: a ``locks`` row guarded by a session advisory lock.

:class:`PostgresApplyLock` is a mixin of :class:`reconciler.store.postgres.PostgresStore`.
The holder keeps a connection of its own (outside the pool) holding
``pg_advisory_lock`` for as long as it holds the lock, and writes the ``locks`` row that
names it (host, pid, user, operation, since: the database clock). A holder that dies on
any machine loses its session, so the server releases the advisory lock by itself and
the next applier removes the left-over row (with a notice) — no pid check across hosts.
``linkctl state unlock ID`` removes a row and ends the session still holding the advisory
lock (a hung holder), where the role may do so.

Needs a session-pooled or direct connection: PgBouncer in transaction mode cannot keep a
session advisory lock (docs/postgresql.md).
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from reconciler.domain.clock import iso_time
from reconciler.errors import LockTimeout, StateError
from reconciler.store import base

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx

# The advisory lock's key pair: "link" as an int4, then 1 for the apply lock.
LOCK_KEY = (0x6C696E6B, 1)
_SELECT_LOCKS = 'SELECT id, operation, host, pid, since, "user" FROM locks'
# The holder and how long it has held the lock, by the database clock.
_SELECT_HOLDER = (
    'SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 - since, id, operation, host, pid, since, "user"'
    " FROM locks LIMIT 1"
)
_POLL_MIN = 0.02
_POLL_MAX = 0.5


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


class PostgresApplyLock:
    """The apply lock over the store's connector ``self._db`` and ``self._notice``."""

    if TYPE_CHECKING:
        _db: Connector
        _notice: Callable[[str], None]

        def _check_open(self) -> None: ...
        def _check_writable(self) -> None: ...

    _lock_conns: dict[str, psycopg.Connection[Any]]

    def _lock_from_row(self, row: tuple[Any, ...]) -> base.LockInfo:
        since = self._db.clock.from_db(row[4]) or 0.0
        return base.LockInfo(id=row[0], operation=row[1], host=row[2], pid=row[3], since=since, user=row[5])

    def acquire_lock(self, *, operation: str, timeout: float) -> base.LockInfo:
        """Wait up to ``timeout`` s for the apply lock; ``LockTimeout`` names the holder."""
        self._check_writable()
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = _POLL_MIN
        conn = self._lock_connection()
        try:
            while True:
                row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()
                if row is not None and row[0]:
                    info = self._write_lock_row(conn, operation)
                    self._lock_conns[info.id] = conn
                    return info
                holder = self._db.run(
                    lambda tx: tx.execute(_SELECT_HOLDER).fetchone(),
                    write=False,
                    action="read the apply lock",
                )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(holder, timeout)
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, _POLL_MAX)
        except BaseException:
            if conn not in self._lock_conns.values():
                conn.close()
            raise

    def _timeout(self, holder: tuple[Any, ...] | None, timeout: float) -> LockTimeout:
        if holder is None:  # the holder took the advisory lock and is writing its row right now
            return LockTimeout(
                "the apply lock is held by another process that is just taking it;"
                f" gave up after {timeout:g} s",
                hint="try again in a moment",
            )
        age, *fields = holder
        info = self._lock_from_row(tuple(fields))
        return LockTimeout(
            f"the apply lock is held by pid {info.pid} on host {info.host}"
            f" (user {info.user}, operation {info.operation!r}, since {iso_time(info.since)},"
            f" {max(age, 0):.0f} s ago by the database clock); gave up after {timeout:g} s",
            hint=f"wait for it to finish; if that process is gone, run `linkctl state unlock {info.id}`",
        )

    def _lock_connection(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._db.url.conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StateError(
                f"cannot connect to the PostgreSQL store {self._db.url.shown} to take the apply lock:"
                f" {(str(exc).strip().splitlines() or ['?'])[0]}",
                hint="check that the server is running and reachable",
            ) from None

    def _write_lock_row(self, conn: psycopg.Connection[Any], operation: str) -> base.LockInfo:
        """With the advisory lock held: drop a row its dead holder left, write ours."""
        lock_id = uuid.uuid4().hex
        with conn.transaction():
            stale = conn.execute(f"{_SELECT_LOCKS} LIMIT 1").fetchone()
            conn.execute("DELETE FROM locks")
            row = conn.execute(
                'INSERT INTO locks (id, operation, host, pid, since, "user")'
                " VALUES (%s, %s, %s, %s, EXTRACT(EPOCH FROM clock_timestamp())::float8, %s)"
                ' RETURNING id, operation, host, pid, since, "user"',
                (lock_id, operation, socket.gethostname(), os.getpid(), _current_user()),
            ).fetchone()
        if stale is not None:
            old = self._lock_from_row(tuple(stale))
            self._notice(
                f"removed a stale apply lock {old.id} from pid {old.pid} on {old.host}"
                f" ({old.operation}, since {iso_time(old.since)}): its database session has ended"
            )
        assert row is not None
        return self._lock_from_row(tuple(row))

    def release_lock(self, lock_id: str) -> None:
        """Release a lock this process holds (a notice if someone removed it meanwhile)."""
        self._check_open()
        conn = self._lock_conns.pop(lock_id, None)
        removed = self._db.run(
            lambda tx: tx.execute("DELETE FROM locks WHERE id = %s", (lock_id,)).rowcount,
            write=True,
            action="release the apply lock",
        )
        if conn is not None:
            conn.close()  # ends the session: the advisory lock goes with it
        if not removed:
            self._notice(f"the apply lock {lock_id} was already gone when released (force-unlocked?)")

    def force_unlock(self, lock_id: str) -> base.LockInfo:
        """Remove a lock by id (``linkctl state unlock ID``) and end a session still holding it."""
        self._check_writable()

        def work(tx: Tx) -> tuple[Any, ...]:
            row = tx.execute(f"{_SELECT_LOCKS} WHERE id = %s", (lock_id,)).fetchone()
            if row is None:
                current = tx.execute("SELECT id FROM locks LIMIT 1").fetchone()
                held = f"the current lock is {current[0]}" if current else "no lock is held"
                raise StateError(f"no apply lock with id {lock_id!r} ({held})")
            tx.execute("DELETE FROM locks WHERE id = %s", (lock_id,))
            return tuple(row)

        row = self._db.run(work, write=True, action="remove the apply lock")
        self._end_holder_session()
        return self._lock_from_row(row)

    def _end_holder_session(self) -> None:
        """End the database session still holding the advisory lock (a hung holder), if allowed."""
        try:
            self._db.run(
                lambda tx: tx.execute(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
                    " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.objsubid = 2"
                    " AND l.granted AND l.database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database()) AND l.pid <> pg_backend_pid()",
                    LOCK_KEY,
                ).fetchall(),
                write=False,
                action="end the session holding the apply lock",
            )
        except StateError as exc:  # e.g. a role without pg_signal_backend
            self._notice(f"could not end the session holding the advisory lock: {exc.message}")

    def current_lock(self) -> base.LockInfo | None:
        """The lock holder, if any."""
        self._check_open()
        row = self._db.run(
            lambda tx: tx.execute(f"{_SELECT_LOCKS} LIMIT 1").fetchone(),
            write=False,
            action="read the apply lock",
        )
        return None if row is None else self._lock_from_row(tuple(row))
