"""Wake-ups of idle keepers on PostgreSQL: ``NOTIFY`` when work may be due sooner, ``LISTEN`` in keepers.

:class:`PostgresNotify` is a mixin of :class:`reconciler.store.postgres.PostgresStore`; it
implements the two wake-up methods of :class:`reconciler.store.base.Store`:

* :meth:`~PostgresNotify.announce_work` sends ``pg_notify('linkctl_work', '')`` in a
  transaction of its own. It is called after a new authorization is stored (here, around
  ``save_authorization``) and by ``linkctl token`` after it refreshed a link
  (:func:`reconciler.keeper.fresh.fresh_token`): both move a link's due time, possibly to
  before the moment an idle keeper planned to look again.
* :meth:`~PostgresNotify.listen_for_work` runs a thread with its own connection (never a
  pooled one: ``LISTEN`` belongs to a session) that calls ``wake`` on every notification.

Polling stays the source of truth (the keeper looks at the store at least every
``--poll-interval``); a notification only ends a wait early. So every failure here is
harmless: a lost ``NOTIFY`` or a dropped ``LISTEN`` connection only delays work. The
listener reconnects with capped, jittered backoff and calls ``wake`` once it listens again
(anything announced meanwhile was missed), and it checks its connection every
:data:`HEALTH_CHECK_SECONDS`, so a silently dead socket is noticed too. ``LISTEN`` does not
work through PgBouncer in transaction mode: there the keeper simply polls
(docs/postgresql.md).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psycopg

from reconciler.errors import StateError
from reconciler.store import base

if TYPE_CHECKING:
    from reconciler.domain.tokens import TokenResponse
    from reconciler.store.grants import Grant
    from reconciler.store.postgres_conn import Connector

__all__ = ["CHANNEL", "PostgresNotify", "WorkListener"]

log = logging.getLogger("linkctl.store")

CHANNEL = "linkctl_work"
HEALTH_CHECK_SECONDS = 15.0
RECONNECT_BASE = 0.5
RECONNECT_CAP = 30.0


class PostgresNotify(base.Store):
    """NOTIFY on writes that make work due sooner; LISTEN for the keeper (see the module docstring)."""

    _db: Connector

    def announce_work(self) -> None:
        """``pg_notify`` on the work channel; a failure is logged and ignored (polling catches up)."""
        try:
            self._db.run(
                lambda tx: tx.execute("SELECT pg_notify(%s, '')", (CHANNEL,)),
                write=False,
                action="announce work to idle keepers",
            )
        except StateError as error:
            log.info("could not wake idle keepers (they will poll): %s", error.message)

    def save_authorization(self, name: str, response: TokenResponse, *, clock_now: float) -> Grant:
        """Store first tokens (the backend's own write), then wake idle keepers: the link is scheduled."""
        grant = super().save_authorization(name, response, clock_now=clock_now)  # type: ignore[safe-super]
        self.announce_work()
        return grant

    def listen_for_work(self, wake: Callable[[], None]) -> contextlib.AbstractContextManager[object]:
        """Run a :class:`WorkListener` on this store's server for the ``with`` block."""
        return _listening(WorkListener(self._db.url.conninfo, wake))


@contextlib.contextmanager
def _listening(listener: WorkListener) -> Iterator[object]:
    listener.start()
    try:
        yield listener
    finally:
        listener.close()


class WorkListener(threading.Thread):
    """A thread holding one ``LISTEN linkctl_work`` session; calls ``wake`` for each notification."""

    def __init__(
        self,
        conninfo: str,
        wake: Callable[[], None],
        *,
        rng: random.Random | None = None,
        poll: float = 1.0,
    ) -> None:
        """``poll``: how often the thread looks at its stop flag between notifications."""
        super().__init__(name="linkctl-listen", daemon=True)
        self._conninfo = conninfo
        self._wake = wake
        self._rng = rng or random.Random()
        self._poll = poll
        self._closing = threading.Event()
        self.listening = threading.Event()  # set while a LISTEN session is up (tests read it)
        self.connections = 0  # sessions opened so far (a reconnect adds one)

    def close(self, timeout: float = 3.0) -> None:
        """Stop listening and end the session."""
        self._closing.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        """Listen; on any connection failure wait (capped, jittered backoff) and listen again."""
        failures = 0
        while not self._closing.is_set():
            try:
                self._listen()
                failures = 0
            except psycopg.Error as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                log.info("work notifications interrupted (polling goes on): %s", reason)
            finally:
                self.listening.clear()
            if self._closing.is_set():
                return
            ceiling = min(RECONNECT_CAP, RECONNECT_BASE * 2 ** min(failures, 10))
            failures += 1
            self._closing.wait(self._rng.uniform(RECONNECT_BASE / 2, ceiling))

    def _listen(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            self.listening.set()
            self._wake()  # whatever was announced while nobody listened is looked at now
            checked = time.monotonic()
            while not self._closing.is_set():
                for _ in conn.notifies(timeout=self._poll):
                    self._wake()
                    if self._closing.is_set():
                        return
                if time.monotonic() - checked > HEALTH_CHECK_SECONDS:
                    conn.execute("SELECT 1")  # a dead socket raises here instead of staying silent
                    checked = time.monotonic()
