"""The apply lock of the SQLite store (``locks`` table): acquire with backoff, release, force-unlock.

:class:`SQLiteApplyLock` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`. A
lock left by a process that no longer exists on this host is removed (with a notice);
a lock of another host is only ever removed by ``linkctl state unlock``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import iso_time
from reconciler.domain.owners import pid_alive
from reconciler.errors import LockTimeout, StateError
from reconciler.store import base

_SELECT_LOCKS = "SELECT id, operation, host, pid, since, user FROM locks"
_LOCK_POLL_MIN = 0.02
_LOCK_POLL_MAX = 0.5


def _current_user() -> str:
    import getpass  # only apply takes the lock: not loaded by readers

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (containers)
        return str(os.getuid())


def _lock_from_row(row: tuple[Any, ...]) -> base.LockInfo:
    return base.LockInfo(id=row[0], operation=row[1], host=row[2], pid=row[3], since=row[4], user=row[5])


class SQLiteApplyLock:
    """The apply lock over the store's ``self._conn``, ``self._immediate()`` and ``self._notice``."""

    if TYPE_CHECKING:  # provided by SQLiteStore; declared for mypy only
        _conn: sqlite3.Connection
        _notice: Callable[[str], None]

        def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def _check_open(self) -> None: ...

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
                    f" ({stale.operation}, since {iso_time(stale.since)}): that process no longer exists"
                )
            if mine is not None:
                return mine
            assert holder is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(
                    f"the apply lock is held by pid {holder.pid} on host {holder.host}"
                    f" (user {holder.user}, operation {holder.operation!r}, since {iso_time(holder.since)});"
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
        import socket
        import uuid

        host = socket.gethostname()
        with self._immediate() as conn:
            row = conn.execute(f"{_SELECT_LOCKS} LIMIT 1").fetchone()
            stale = None
            if row is not None:
                holder = _lock_from_row(row)
                # Only a lock of this host can be judged by pid; other hosts need `state unlock`.
                if holder.host != host or pid_alive(holder.pid):
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
