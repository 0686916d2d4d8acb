"""The keeper daemon: a small pool of worker threads that refreshes whatever is due.

:class:`Keeper` is what ``linkctl keeper`` runs (:meth:`Keeper.run_once` for ``--once``,
:meth:`Keeper.run_forever` until a signal); each worker thread has its own store and
lease owner id and refreshes chunks of links with
:func:`~reconciler.keeper.refresh.refresh_batch`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from reconciler.domain.grants import GrantStatus
from reconciler.domain.owners import new_owner
from reconciler.errors import LinkctlError
from reconciler.keeper.refresh import refresh_batch
from reconciler.keeper.report import SKIPPED, KeeperReport, Outcome
from reconciler.keeper.timing import KeeperPolicy, Now, SendPace, Sleep, backoff_delay

if TYPE_CHECKING:
    from reconciler.keeper.config import TokenClientLike
    from reconciler.store.base import Store

__all__ = ["Keeper"]

log = logging.getLogger("linkctl.keeper")

# A store that could not be read (the daemon's loop) or opened (a worker's connection) is
# tried again after a full-jitter backoff growing from this base to this cap (at least 1 s).
STORE_RETRY_BASE = 0.5
STORE_RETRY_CAP = 10.0

_WAITING_OR_BROKEN = (
    GrantStatus.NEEDS_AUTHORIZATION,
    GrantStatus.PENDING_CREDENTIALS,
    GrantStatus.CONFIGURATION_ERROR,
)


class Keeper:
    """Refreshes whatever is due, with a small pool of worker threads (one store each)."""

    def __init__(
        self,
        store: Store,
        client: TokenClientLike,
        *,
        store_factory: Callable[[], Store] | None = None,
        workers: int = 1,
        policy: KeeperPolicy | None = None,
        clock: Now = time.time,
        sleep: Sleep = time.sleep,
        rng: random.Random | None = None,
        observe: Callable[[Outcome], None] | None = None,
    ) -> None:
        """``store`` is used by the calling thread; ``store_factory`` opens one per worker thread.

        ``observe`` sees every outcome as it happens (``serve --keeper`` counts them for /metrics).
        """
        if workers > 1 and store_factory is None:
            raise ValueError("more than one worker needs a store_factory (SQLite connections are per thread)")
        self.store = store
        self.client = client
        self.store_factory = store_factory
        self.workers = max(1, workers)
        self.policy = policy or KeeperPolicy()
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.observe = observe
        self.pace = SendPace()  # sizes the chunks: a slow provider gets fewer links per lease
        self._lock = threading.Lock()

    def _process(self, store: Store, names: list[str], owner: str) -> list[Outcome]:
        """Refresh a chunk of links (:func:`refresh_batch`); one outcome per distinct name."""
        try:
            outcomes = refresh_batch(
                store,
                self.client,
                names,
                owner=owner,
                policy=self.policy,
                clock=self.clock,
                rng=self.rng,
                pace=self.pace,
            )
        except LinkctlError as error:  # e.g. the store was busy: the leases (if any) simply expire
            log.warning("%d links: %s", len(names), error.message)
            outcomes = [Outcome(name, SKIPPED, message=error.message) for name in dict.fromkeys(names)]
        except Exception as error:  # a bug: the chunk is skipped (its leases expire), the keeper goes on
            # Only the type: the message of an arbitrary exception may quote a secret.
            log.error("%d links: internal error %s (a bug in linkctl)", len(names), type(error).__name__)
            message = f"internal error: {type(error).__name__}"
            outcomes = [Outcome(name, SKIPPED, message=message) for name in dict.fromkeys(names)]
        if self.observe is not None:
            try:
                for outcome in outcomes:
                    self.observe(outcome)
            except Exception as error:  # counting for /metrics must not stop the refreshes
                log.error("observing outcomes failed: %s (a bug in linkctl)", type(error).__name__)
        return outcomes

    def _finish(self, report: KeeperReport) -> KeeperReport:
        """Add the links that wait for a human (not attempted by the keeper)."""
        attempted = set(report.failed) | set(report.refreshed) | set(report.obtained)
        # Only these statuses are reported; the store selects them (not every grant of a large store).
        for grant in self.store.list_grants_with_status(_WAITING_OR_BROKEN):
            if grant.link_name in attempted:
                continue
            if grant.status in (GrantStatus.NEEDS_AUTHORIZATION, GrantStatus.PENDING_CREDENTIALS):
                if grant.obtained_at is None:
                    report.waiting_for_authorization.append(grant.link_name)
                else:
                    report.broken[grant.link_name] = grant.last_error or grant.status
            elif grant.status == GrantStatus.CONFIGURATION_ERROR:
                report.broken[grant.link_name] = grant.last_error or grant.status
        return report

    def run_once(self, *, max_rounds: int = 1000) -> KeeperReport:
        """Obtain client-credentials tokens and refresh everything due now, then return.

        The next look at the store happens while the workers still have about a chunk each
        to do, so they wait neither for the due query nor for the slowest chunk of a round.
        """
        report = KeeperReport()
        seen: set[str] = set()
        outstanding = 0  # names handed to the pool whose outcomes have not come back yet
        with _Pool(self) as pool:
            for _ in range(max_rounds):
                keep_busy = self.pace.chunk(self.policy) * self.workers  # about a chunk each
                # Names still queued are due and unleased, so the query returns them again:
                # ask for that many more to find ``batch`` new ones.
                due = self.store.due_links(self.clock(), limit=self.policy.batch + outstanding)
                names = [n for n in dict.fromkeys(due) if n not in seen]
                if not names:
                    break
                seen.update(names)
                pool.submit(names)
                outstanding += len(names)
                done = pool.collect(outstanding - keep_busy)
                for outcome in done:
                    report.add(outcome)
                outstanding -= len(done)
            for outcome in pool.collect(outstanding):
                report.add(outcome)
        return self._finish(report)

    def run_forever(self, stop: threading.Event) -> KeeperReport:
        """Refresh until ``stop`` is set; then take no new work and let in-flight refreshes finish.

        A refresh abandoned by a kill is safe: its lease expires and the next holder
        treats its request as a lost response.
        """
        report = KeeperReport()
        wake = threading.Event()  # set by a worker with room for more, or a work notification (LISTEN)
        unreachable = 0  # consecutive rounds the store could not be read
        with self.store.listen_for_work(wake.set), _Pool(self, on_room=wake.set) as pool:
            while not stop.is_set():
                for outcome in pool.drain():
                    report.add(outcome)
                try:
                    wait = self._round(pool)
                    unreachable = 0
                except LinkctlError as error:  # the store's own reconnects gave up: back off, go on
                    wait = backoff_delay(
                        unreachable,
                        retry_after=None,
                        rng=self.rng,
                        base=STORE_RETRY_BASE,
                        cap=STORE_RETRY_CAP,
                    )
                    unreachable += 1
                    log.warning("the store is unreachable (retrying in %.1f s): %s", wait, error.message)
                    # The whole backoff: a worker finishing a chunk (failed, most likely) or a
                    # notification must not bring the next look, and its warning, sooner.
                    stop.wait(wait)
                    wake.clear()
                    continue
                _wait(stop, wake, wait)
            pool.cancel_pending()
        for outcome in pool.drain():
            report.add(outcome)
        return self._finish(report)

    def _round(self, pool: _Pool) -> float:
        """Hand what is due to the workers; how long to wait before the next look.

        Names are handed over only when no chunk waits for a worker, so each hand-over is
        enough for full chunks (a chunk per worker and one queued behind it). Looking every
        few milliseconds and handing over the handful that became due meanwhile cut chunks
        of one or two links under a backlog, each costing a chunk's three transactions.
        While the workers have work, the pool wakes the daemon (``on_room``) once a worker
        has taken the last queued chunk or has finished one; the wait returned here is only
        the longest it sleeps without that.
        """
        if pool.pending():
            return self.policy.poll_interval
        # A chunk in each worker's hands and one queued behind it, cut with the pace measured
        # now (before the first timed request, small chunks: not a whole batch of them).
        wanted = min(self.policy.batch, self.pace.chunk(self.policy) * self.workers * 2)
        busy = pool.busy()
        due = self.store.due_links(self.clock(), limit=wanted + len(busy))
        names = [n for n in due if n not in busy][:wanted]
        pool.submit(names)
        if names:  # a worker taking or finishing these wakes us
            return self.policy.poll_interval
        next_due = self.store.next_due_at()
        wait = self.policy.poll_interval
        if next_due is not None:
            wait = min(wait, max(next_due - self.clock(), 0.0))
        return wait


WORKER_STORE_FAILED = "the worker could not open its store connection; will retry"


class _HandedBack(list[str]):
    """A chunk queued again by a worker whose store would not open (handed back only once)."""


class _WorkerStore:
    """A worker thread's own store, opened on first use; after a failure, retried with backoff.

    While the backoff lasts :meth:`get` returns ``None`` at once, without a new attempt or
    a log line, so a store that will not open costs one warning per attempt, not one per chunk.
    """

    def __init__(
        self, factory: Callable[[], Store], rng: random.Random, monotonic: Now = time.monotonic
    ) -> None:
        self._factory = factory
        self._rng = rng
        self._monotonic = monotonic
        self._store: Store | None = None
        self._failures = 0  # consecutive failed attempts
        self._retry_at = 0.0  # monotonic time of the next attempt

    def retry_in(self) -> float:
        """Seconds until the next attempt to open the store may be made (0: now)."""
        return max(0.0, self._retry_at - self._monotonic())

    def get(self) -> Store | None:
        """The open store, or ``None`` when it cannot be opened now (logged once per attempt)."""
        if self._store is not None or self._monotonic() < self._retry_at:
            return self._store
        try:
            self._store = self._factory()
        except LinkctlError as error:
            level, reason = logging.WARNING, error.message
        except Exception as error:  # not a traceback per attempt: the type says enough to report it
            level, reason = logging.ERROR, type(error).__name__
        else:
            self._failures = 0
            return self._store
        delay = backoff_delay(
            self._failures, retry_after=None, rng=self._rng, base=STORE_RETRY_BASE, cap=STORE_RETRY_CAP
        )
        self._failures += 1
        self._retry_at = self._monotonic() + delay
        log.log(level, "a keeper worker could not open the store (retrying in %.1f s): %s", delay, reason)
        return None

    def close(self) -> None:
        """Close the store if it was opened."""
        if self._store is not None:
            self._store.close()
            self._store = None


# The shortest time between two looks at the store, woken or not: whatever wakes the daemon
# (a notification, a worker finishing chunks that left their links due), it queries the
# store at most 50 times a second.
MIN_ROUND_GAP = 0.02


def _wait(stop: threading.Event, wake: threading.Event, seconds: float) -> None:
    """Wait until ``stop`` or ``wake`` is set or ``seconds`` passed (at least :data:`MIN_ROUND_GAP`)."""
    stop.wait(MIN_ROUND_GAP)
    deadline = time.monotonic() + seconds - MIN_ROUND_GAP
    while not stop.is_set() and not wake.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # A wake-up (a worker with room, a notification) ends the wait at once; a stop within 0.1 s.
        wake.wait(min(left, 0.1))
    wake.clear()


class _Pool:
    """Worker threads, each with its own store and lease owner id; names in, outcomes out.

    Names are handed to workers in chunks of at most ``policy.chunk`` and at most what the
    keeper's :class:`~reconciler.keeper.timing.SendPace` says can be sent under one lease
    (spread over the workers), each refreshed by :func:`refresh_batch` with a few store
    transactions. With one worker and no store factory the chunks run inline, each sized
    with the pace the one before it measured. A worker whose store will not open hands its
    chunks back to the others while it backs off, as long as another store may be open.
    """

    def __init__(self, keeper: Keeper, *, on_room: Callable[[], object] | None = None) -> None:
        """``on_room`` is called when the daemon may hand over more: see :meth:`_room`."""
        self._keeper = keeper
        self._on_room = on_room
        self._inbox: queue.Queue[list[str] | None] = queue.Queue()
        # One item per chunk: a waiting caller wakes once per chunk, not once per link.
        self._outbox: queue.Queue[list[Outcome]] = queue.Queue()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._inline = keeper.workers == 1 and keeper.store_factory is None
        # Workers whose last attempt to open their store failed, and a condition on which such
        # a worker sits out its backoff while another may take the chunks (:meth:`_hand_back`).
        self._down = 0
        self._changed = threading.Condition(self._lock)
        self._closing = False

    def __enter__(self) -> _Pool:
        if not self._inline:
            for index in range(self._keeper.workers):
                thread = threading.Thread(target=self._work, name=f"keeper-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        """The workers finish what is queued (after an exception: what they started), then stop."""
        if exc[0] is not None:
            self.cancel_pending()
        self._close()
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        factory = self._keeper.store_factory
        assert factory is not None
        owner = new_owner("keeper")
        worker_store = _WorkerStore(factory, self._keeper.rng)
        down = False  # counted in self._down
        try:
            while True:
                names = self._inbox.get()
                if names is None:
                    return
                store = worker_store.get()
                if (store is None) != down:
                    down = store is None
                    self._count_down(+1 if down else -1)
                if down and self._hand_back(names, worker_store):
                    continue
                try:
                    if store is None:
                        outcomes = [Outcome(name, SKIPPED, message=WORKER_STORE_FAILED) for name in names]
                    else:
                        self._room(finished=False)
                        outcomes = self._keeper._process(store, names, owner)
                finally:
                    with self._lock:
                        self._busy.difference_update(names)
                self._outbox.put(outcomes)
                if store is not None:
                    self._room(finished=True)
        finally:
            if not down:
                self._count_down(+1)  # a worker that has stopped takes no chunk: hand none to it
            worker_store.close()

    def _close(self) -> None:
        """Hand nothing back from now on; a worker sitting out its backoff takes its stop at once."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def _count_down(self, change: int) -> None:
        with self._changed:
            self._down += change
            self._changed.notify_all()

    def _hand_back(self, names: list[str], worker_store: _WorkerStore) -> bool:
        """Queue a chunk again for another worker and sit out this one's store backoff.

        Skipping it instead would leave its links for a later round (``keeper --once``: the
        next run) although another worker's store may be open. Nothing is handed back (False:
        the chunk is skipped) when every worker's store failed, so ``--once`` ends, or when the
        chunk was handed back once already: during an outage a chunk would otherwise go from
        worker to worker, each spending a whole failed connection attempt on it.
        """
        with self._changed:
            if self._down >= self._keeper.workers or self._closing or isinstance(names, _HandedBack):
                return False
            self._inbox.put(_HandedBack(names))
            # Until the backoff ends, the pool closes, or every other store has failed too.
            self._changed.wait_for(
                lambda: self._closing or self._down >= self._keeper.workers, timeout=worker_store.retry_in()
            )
            return True

    def _room(self, *, finished: bool) -> None:
        """Tell the daemon it may hand over more: a chunk finished, or the last queued one was taken.

        Not for chunks skipped because the worker's store would not open: those would wake
        the daemon to hand the same names over again at once, while the store backs off.
        """
        if self._on_room is not None and (finished or self._inbox.empty()):
            self._on_room()

    def _chunk_size(self, count: int) -> int:
        workers = 1 if self._inline else self._keeper.workers
        return max(1, min(self._keeper.pace.chunk(self._keeper.policy), -(-count // workers)))

    def submit(self, names: Iterable[str]) -> None:
        """Queue names (or process them inline with one worker and no factory)."""
        with self._lock:
            fresh = [n for n in dict.fromkeys(names) if n not in self._busy]
            self._busy.update(fresh)
        if self._inline:
            try:
                while fresh:
                    size = self._chunk_size(len(fresh))  # with the pace the last chunk measured
                    chunk, fresh = fresh[:size], fresh[size:]
                    try:
                        outcomes = self._keeper._process(self._keeper.store, chunk, new_owner("keeper"))
                        self._outbox.put(outcomes)
                    finally:
                        with self._lock:
                            self._busy.difference_update(chunk)
                    self._room(finished=True)
            finally:
                with self._lock:
                    self._busy.difference_update(fresh)
            return
        size = self._chunk_size(len(fresh))
        for index in range(0, len(fresh), size):
            self._inbox.put(fresh[index : index + size])

    def collect(self, count: int) -> list[Outcome]:
        """Wait for at least ``count`` more outcomes (whole chunks of names submitted earlier)."""
        out: list[Outcome] = []
        while len(out) < count:
            out.extend(self._outbox.get())
        return out

    def drain(self) -> list[Outcome]:
        """Outcomes finished so far."""
        out = []
        while True:
            try:
                out.extend(self._outbox.get_nowait())
            except queue.Empty:
                return out

    def busy(self) -> set[str]:
        """Names queued or being processed."""
        with self._lock:
            return set(self._busy)

    def pending(self) -> bool:
        """Whether queued names wait for a worker."""
        return not self._inbox.empty()

    def cancel_pending(self) -> None:
        """Drop queued names that no worker started (stop taking new work)."""
        self._close()  # first: a chunk handed back meanwhile would be queued after this drain
        while True:
            try:
                names = self._inbox.get_nowait()
            except queue.Empty:
                return
            if names is not None:
                with self._lock:
                    self._busy.difference_update(names)
