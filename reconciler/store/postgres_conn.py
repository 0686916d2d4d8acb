"""Connections of the PostgreSQL store: one pool per process, the database clock, retries.

Everything the other ``postgres_*`` modules need to run one operation against the server
(the URL itself is read by :mod:`reconciler.store.postgres_url`):

* :class:`Connector` runs one operation (a function of a connection) in one transaction
  on a pooled connection, measuring the database clock at its start. A connection lost
  before the commit is sent rolls the transaction back on the server, so the operation is
  run again on a new connection, with backoff, for up to :data:`RECONNECT_SECONDS`. A
  connection lost while the commit is in flight leaves the outcome in doubt: the
  transaction's id (``pg_current_xact_id()``, taken at its start) is then looked up with
  ``pg_xact_status`` on a new connection — committed: the operation's result stands;
  aborted: it is run again (every write is fenced, so a rerun is the same decision taken
  again); unknown within the window: :class:`CommitOutcomeUnknown`, naming the transaction.
  Nothing is ever applied twice and nothing is dropped without an error.

One clock: the store judges every lease, due time, lock age and expiry by the database's
``clock_timestamp()``. Times that callers pass in or read back are in their own process
clock; :class:`ClockFrame` converts between the two with the offset measured at the start
of each operation (a client whose clock is minutes off still writes and reads correct
moments). Tests that drive a fake clock use ``caller_clock=True``: then the caller's
``now`` is the clock and no conversion happens.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from reconciler.errors import StateError
from reconciler.store.postgres_url import CONNECT_TIMEOUT, PgURL, first_line

_T = TypeVar("_T")

RECONNECT_SECONDS = 15.0  # how long one operation keeps trying to reach the server
# Every transaction of the store is a few statements with no wait in between: a session idle
# inside one this long belongs to a paused process (see _configure).
IDLE_IN_TRANSACTION_TIMEOUT = "5s"
OFFSET_STEP = 0.025  # seconds: clock offsets are tracked to this (far below any token lifetime)
# Conflicts a rerun resolves (the transaction was rolled back as a whole).
_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
# cannot_connect_now, admin_shutdown, crash_shutdown: the server goes away and comes back.
_RESTARTING_STATES = frozenset({"57P03", "57P01", "57P02"})
_RESTARTING_PHRASES = ("refused", "shutting down", "starting up", "recovery mode", "closed the connection")
_NOW_SQL = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"
_NOW_XID_SQL = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8, pg_current_xact_id()::text"


_REPEAT_HINT = "check that the server is running and reachable; the operation can be repeated"


def _pauses(deadline: float) -> Iterator[bool]:
    """Sleep between tries, doubling from 0.05 s up to 1 s; exhausted once a pause would pass ``deadline``."""
    delay = 0.05
    while time.monotonic() + delay <= deadline:
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        yield True


class CommitOutcomeUnknown(StateError):
    """The connection was lost while a commit was in flight and its outcome could not be learned."""


class ClockFrame:
    """Converts moments between the caller's clock and the database's (see the module docstring)."""

    def __init__(self, *, caller_clock: bool) -> None:
        self.caller_clock = caller_clock
        self._offset = 0.0  # database clock minus this process's clock
        self._measured = float("-inf")  # time.monotonic() of the last measurement

    def measured(self, db_now: float, local_before: float, local_after: float) -> None:
        """Record a reading of the database clock taken between two local readings.

        The offset moves only when it changed by more than :data:`OFFSET_STEP` (and is 0
        within it): a reading is no better than its round trip, and a stable offset
        converts a moment there and back to exactly itself (an exported state re-imports equal).
        """
        if self.caller_clock:
            return
        offset = db_now - (local_before + local_after) / 2
        if abs(offset - self._offset) > OFFSET_STEP:
            self._offset = 0.0 if abs(offset) <= OFFSET_STEP else offset
        self._measured = time.monotonic()

    def stale(self, max_age: float = 2.0) -> bool:
        """Whether the offset should be measured again before converting read times."""
        return not self.caller_clock and time.monotonic() - self._measured > max_age

    def now(self, db_now: float, caller_now: float | None) -> float:
        """The present moment of an operation, in the database's frame."""
        if self.caller_clock:
            return caller_now if caller_now is not None else time.time()
        return db_now

    def to_db(self, moment: float | None) -> float | None:
        """A caller's moment in the database's frame (None stays None)."""
        if moment is None or self.caller_clock:
            return moment
        return moment + self._offset

    def from_db(self, moment: float | None) -> float | None:
        """A stored moment in this process's clock (None stays None)."""
        if moment is None or self.caller_clock:
            return moment
        return moment - self._offset


@dataclasses.dataclass
class Tx:
    """One operation's transaction: its connection, the database time at its start, its id."""

    conn: psycopg.Connection[Any]
    db_now: float
    xid: str | None

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Run one statement in this transaction."""
        return self.conn.execute(sql, params)


_POOLS: dict[str, tuple[ConnectionPool, int]] = {}  # conninfo -> (pool, stores using it)
_POOLS_LOCK = threading.Lock()


def acquire_pool(url: PgURL) -> ConnectionPool:
    """This process's pool for a connection string, shared by the stores open on it (created on first use)."""
    with _POOLS_LOCK:
        entry = _POOLS.get(url.conninfo)
        if entry is not None and not entry[0].closed:
            _POOLS[url.conninfo] = (entry[0], entry[1] + 1)
            return entry[0]
        _probe(url)
        pool = ConnectionPool(
            url.conninfo,
            min_size=1,
            max_size=url.pool_size,
            kwargs={"autocommit": False},
            configure=_configure,
            timeout=CONNECT_TIMEOUT * 2,
            name="linkctl",
            open=False,
        )
        pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        _POOLS[url.conninfo] = (pool, 1)
        return pool


def release_pool(url: PgURL) -> None:
    """A store stopped using its pool; the last one closes it (its connections end)."""
    with _POOLS_LOCK:
        entry = _POOLS.get(url.conninfo)
        if entry is None:
            return
        pool, users = entry
        if users > 1:
            _POOLS[url.conninfo] = (pool, users - 1)
            return
        del _POOLS[url.conninfo]
    pool.close(timeout=1.0)


def close_pools() -> None:
    """Close every pool of this process (at exit)."""
    with _POOLS_LOCK:
        pools = [pool for pool, _ in _POOLS.values()]
        _POOLS.clear()
    for pool in pools:
        pool.close(timeout=1.0)


atexit.register(close_pools)


def _server_restarting(exc: psycopg.OperationalError) -> bool:
    """A refusal that ends by itself: the server is starting, shutting down or restarting."""
    # cannot_connect_now (57P03); at connect time psycopg often has no SQLSTATE, only the
    # server's FATAL text ("the database system is shutting down / is starting up"). A backend
    # forked just before a fast shutdown hangs up mid-handshake: "server closed the connection
    # unexpectedly" (a misconfigured address that answers like this costs one bounded wait).
    text = str(exc)
    return exc.sqlstate in _RESTARTING_STATES or any(phrase in text for phrase in _RESTARTING_PHRASES)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Every pooled session: a client paused inside a transaction (SIGSTOP, GC) loses it, and its locks.

    Without this a frozen keeper's row locks would hide its links from every other keeper
    (``SKIP LOCKED``) for as long as it stays frozen, not just until its leases expire.
    """
    conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")
    conn.commit()


def _probe(url: PgURL) -> None:
    """One direct connection first, so that a wrong host, database or password gets libpq's reason.

    A server that is restarting is waited for (with backoff, up to :data:`RECONNECT_SECONDS`).
    """
    pauses = _pauses(time.monotonic() + RECONNECT_SECONDS)
    while True:
        try:
            psycopg.connect(url.conninfo, autocommit=True).close()
            return
        except psycopg.OperationalError as exc:
            if not _server_restarting(exc) or not next(pauses, False):
                raise StateError(
                    f"cannot connect to the PostgreSQL store {url.shown}: {first_line(exc)}",
                    hint="check the host, port, database, user and password of --state / LINKCTL_STATE"
                    " (and sslmode), and that the server is running",
                ) from None


class Connector:
    """Runs store operations on pooled connections, one transaction each (see the module docstring)."""

    def __init__(self, url: PgURL, *, caller_clock: bool) -> None:
        self.url = url
        self.pool = acquire_pool(url)
        self.clock = ClockFrame(caller_clock=caller_clock)
        self._released = False

        self._pinned: psycopg.Connection[Any] | None = None

    def close(self) -> None:
        """Stop using the pool (idempotent); a private schema (see :meth:`pin_private_schema`) vanishes."""
        if self._pinned is not None:
            self._pinned.close()  # never committed: the private schema is rolled back with it
            self._pinned = None
        if not self._released:
            self._released = True
            release_pool(self.url)

    def pin_private_schema(self, migrations: Sequence[str]) -> None:
        """From now on run every operation in one never-committed transaction on a private schema.

        For read-only commands on a database without linkctl's tables: they read an empty
        store made by the migrations in a schema no other session can see, and nothing
        is written (the transaction is rolled back when the store closes).
        """
        conn = psycopg.connect(self.url.conninfo, autocommit=False)
        try:
            name = f"linkctl_readonly_{uuid.uuid4().hex[:12]}"
            conn.execute(f"CREATE SCHEMA {name}")
            conn.execute(f"SET LOCAL search_path = {name}")
            for sql in migrations:
                conn.execute(sql.encode())
        except psycopg.Error as exc:
            conn.close()
            raise _as_state_error(exc, self.url, "read an empty store") from None
        self._pinned = conn

    def run(self, work: Callable[[Tx], _T], *, write: bool, action: str) -> _T:
        """Run ``work`` in one transaction (commit once, retried on a lost connection; see above)."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        pauses = _pauses(deadline)
        while True:
            outcome = self._attempt(work, write=write, action=action, deadline=deadline)
            if outcome is not _AGAIN:
                return outcome  # type: ignore[return-value]
            if not next(pauses, False):
                raise StateError(
                    f"lost the connection to the PostgreSQL store {self.url.shown} and could not"
                    f" reconnect within {RECONNECT_SECONDS:g} s ({action}; nothing was changed)",
                    hint=_REPEAT_HINT,
                )

    def _attempt(self, work: Callable[[Tx], _T], *, write: bool, action: str, deadline: float) -> object:
        if self._pinned is not None:
            return self._on_pinned(work, action)
        conn, tx = self._begin(deadline, action, write=write)
        committing = False
        try:
            try:
                result = work(tx)
                committing = True
                conn.commit()
                return result
            except psycopg.OperationalError as exc:
                if not conn.broken:
                    _rollback(conn)
                    if isinstance(exc, _RETRYABLE):
                        return _AGAIN
                    raise _as_state_error(exc, self.url, action) from None
                self.pool.check()  # other idle connections died with this one (a restart)
                if not committing or tx.xid is None:
                    return _AGAIN
                return self._resolve(tx.xid, result, action=action, deadline=deadline)
            except psycopg.Error as exc:
                _rollback(conn)
                raise _as_state_error(exc, self.url, action) from None
            except BaseException:
                _rollback(conn)
                raise
        finally:
            self.pool.putconn(conn)

    def query(self, sql: str, params: Any = None, *, action: str, all_rows: bool = False) -> Any:
        """Run one read-only statement in one round trip: its first row (None when none), or all rows.

        The statement is its own transaction (the connection in autocommit for it): no
        ``BEGIN``, no clock reading, no ``COMMIT`` — a third of :meth:`run`'s round trips for
        the per-link reads of the keeper and the token API. One statement sees one snapshot,
        so nothing is lost; reads that need several statements to agree use :meth:`run`.
        A lost connection is retried with backoff like :meth:`run` (a read is safe to repeat).
        """
        if self._pinned is not None:
            return self._on_pinned(lambda tx: _fetch(tx.execute(sql, params), all_rows), action)
        deadline = time.monotonic() + RECONNECT_SECONDS
        pauses = _pauses(deadline)
        while True:
            conn = self._getconn(deadline)
            if conn is not None:
                try:
                    conn.autocommit = True
                    return _fetch(conn.execute(sql, params), all_rows)
                except psycopg.OperationalError as exc:
                    if not conn.broken and not isinstance(exc, _RETRYABLE):
                        raise _as_state_error(exc, self.url, action) from None
                    self.pool.check()  # other idle connections died with this one (a restart)
                except psycopg.Error as exc:
                    raise _as_state_error(exc, self.url, action) from None
                finally:
                    try:
                        conn.autocommit = False
                    except psycopg.Error:  # never back in the pool in autocommit: run() needs transactions
                        conn.close()
                    self.pool.putconn(conn)
            if not next(pauses, False):
                raise self._unreachable(action)

    def once(self, work: Callable[[Tx], _T], *, action: str, timeout: float = 2.0) -> _T:
        """Run a read once, within ``timeout`` s, without retrying (readiness probes must answer fast)."""
        if self._pinned is not None:
            return self._on_pinned(work, action)
        try:
            conn = self.pool.getconn(timeout=timeout)
        except PoolTimeout:
            raise StateError(f"the PostgreSQL store {self.url.shown} is not reachable ({action})") from None
        try:
            row = conn.execute(_NOW_SQL).fetchone()
            assert row is not None
            result = work(Tx(conn, float(row[0]), None))
            conn.commit()
            return result
        except psycopg.Error as exc:
            _rollback(conn)
            raise _as_state_error(exc, self.url, action) from None
        finally:
            self.pool.putconn(conn)

    def _on_pinned(self, work: Callable[[Tx], _T], action: str) -> _T:
        conn = self._pinned
        assert conn is not None
        row = conn.execute(_NOW_SQL).fetchone()
        assert row is not None
        try:
            with conn.transaction():  # a savepoint: a failed operation leaves the schema usable
                return work(Tx(conn, float(row[0]), None))
        except psycopg.Error as exc:
            raise _as_state_error(exc, self.url, action) from None

    @contextlib.contextmanager
    def transaction(self, *, action: str) -> Iterator[Tx]:
        """One write transaction around a caller's block (apply): committed once or an error, never rerun.

        The block cannot be run again for the caller, so a connection lost before the commit
        is an error saying nothing changed, and a lost commit answer is resolved by the
        transaction's id: committed returns normally, aborted or unknown raise.
        """
        deadline = time.monotonic() + RECONNECT_SECONDS
        conn, tx = self._begin(deadline, action, write=True)
        committing = False
        xid = tx.xid or ""
        try:
            try:
                yield tx
                committing = True
                conn.commit()
            except psycopg.OperationalError as exc:
                if not conn.broken:
                    _rollback(conn)
                    raise _as_state_error(exc, self.url, action) from None
                self.pool.check()
                if committing and self._resolve(xid, None, action=action, deadline=deadline) is None:
                    return  # committed after all
                raise StateError(
                    f"lost the connection to the PostgreSQL store {self.url.shown} during {action};"
                    " the transaction was rolled back, nothing was changed",
                    hint="run the command again",
                ) from None
            except psycopg.Error as exc:
                _rollback(conn)
                raise _as_state_error(exc, self.url, action) from None
            except BaseException:
                _rollback(conn)
                raise
        finally:
            self.pool.putconn(conn)

    def _begin(self, deadline: float, action: str, *, write: bool) -> tuple[psycopg.Connection[Any], Tx]:
        """A pooled connection with its transaction started (clock read), skipping dead connections."""
        pauses = _pauses(deadline)
        while True:
            conn = self._getconn(deadline)
            if conn is not None:
                try:
                    before = time.time()
                    row = conn.execute(_NOW_XID_SQL if write else _NOW_SQL).fetchone()
                    assert row is not None
                    self.clock.measured(float(row[0]), before, time.time())
                    return conn, Tx(conn, float(row[0]), str(row[1]) if write else None)
                except psycopg.OperationalError as exc:
                    broken = conn.broken
                    if not broken:
                        _rollback(conn)
                    self.pool.putconn(conn)
                    if not broken:
                        raise _as_state_error(exc, self.url, action) from None
                    self.pool.check()
                    continue  # the next connection may be alive already
            if not next(pauses, False):
                raise self._unreachable(action)

    def _getconn(self, deadline: float) -> psycopg.Connection[Any] | None:
        """A pooled connection, waited for until ``deadline`` (at most one connect timeout); or None."""
        try:
            return self.pool.getconn(timeout=max(min(deadline - time.monotonic(), CONNECT_TIMEOUT), 0.1))
        except PoolTimeout:
            return None

    def _unreachable(self, action: str) -> StateError:
        return StateError(
            f"cannot reach the PostgreSQL store {self.url.shown} within {RECONNECT_SECONDS:g} s"
            f" ({action}; nothing was changed)",
            hint=_REPEAT_HINT,
        )

    def _resolve(self, xid: str, result: object, *, action: str, deadline: float) -> object:
        """The commit of ``xid`` was sent and its answer lost: learn whether it happened."""
        pauses = _pauses(deadline)
        while True:
            try:
                with psycopg.connect(self.url.conninfo, autocommit=True) as probe:
                    row = probe.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
                status = None if row is None else row[0]
            except psycopg.OperationalError:
                status = "unreachable"
            if status == "committed":
                return result
            if status == "aborted":
                return _AGAIN
            # In progress (the server has not seen the loss yet) or unreachable: ask again.
            if not next(pauses, False):
                break
        raise CommitOutcomeUnknown(
            f"lost the connection to the PostgreSQL store {self.url.shown} while committing ({action});"
            f" whether transaction {xid} committed is unknown",
            hint="nothing is applied twice: a refresh left in flight is reported as a lost response by"
            " the next holder of its lease; run the command again once the server is reachable",
        )


_AGAIN = object()


def _fetch(cursor: psycopg.Cursor[Any], all_rows: bool) -> Any:
    return cursor.fetchall() if all_rows else cursor.fetchone()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


def _as_state_error(exc: psycopg.Error, url: PgURL, action: str) -> StateError:
    """A server error met during an operation, as the user sees it (no SQL, no parameters)."""
    reason = first_line(exc)
    hint = "check the server's log; the transaction was rolled back, nothing was changed"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        hint = "grant the linkctl role the privileges on its tables (see docs/postgresql.md)"
    elif isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        hint = "the URL names a read-only server (a replica?): point linkctl at the primary"
    elif isinstance(exc, psycopg.errors.DiskFull):
        hint = "free space on the database server (the transaction rolled back)"
    return StateError(f"the PostgreSQL store {url.shown} failed ({action}): {reason}", hint=hint)
