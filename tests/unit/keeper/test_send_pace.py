"""Chunks sized by the measured request time: a slow provider gets no more links per lease than fit."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable

import pytest

from reconciler import keeper
from reconciler.keeper.daemon import _Pool, _WorkerStore
from reconciler.keeper.report import Outcome
from reconciler.keeper.timing import SendPace, send_deadline
from reconciler.store.base import Store
from tests.support.fakes import FakeClock, RotatingProvider, add_links, link_write

POLICY = keeper.KeeperPolicy(lease_ttl=30, http_timeout=10, chunk=50)  # a 10 s send window


def _due(store: Store, provider: RotatingProvider, clock: FakeClock, names: list[str]) -> None:
    """Links authorized once and now due (60 s tokens, 55 s later)."""
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        first = dataclasses.replace(provider.authorize(n), received_at=clock())
        store.save_authorization(n, first, clock_now=clock())
    clock.advance(55)


def _keeper(store: Store, provider: RotatingProvider, **kwargs: object) -> keeper.Keeper:
    """A keeper with this module's policy and a seeded random source (``kwargs`` override)."""
    options: dict[str, object] = {"policy": POLICY, "rng": random.Random(3), **kwargs}
    return keeper.Keeper(store, provider, **options)  # type: ignore[arg-type]


def test_before_any_request_is_timed_a_chunk_is_small() -> None:
    assert SendPace().chunk(POLICY) == SendPace.FIRST_CHUNK
    assert SendPace().chunk(dataclasses.replace(POLICY, chunk=3)) == 3


def test_a_fast_provider_gets_the_policy_chunk() -> None:
    pace = SendPace()
    pace.record(8, 8 * 0.002)
    assert pace.chunk(POLICY) == 50


@pytest.mark.parametrize(("each", "chunk"), [(0.25, 32), (0.5, 16), (4.0, 2), (9.0, 1), (60.0, 1)])
def test_a_slow_provider_gets_what_fits_in_the_headroom_of_the_send_window(each: float, chunk: int) -> None:
    pace = SendPace()
    pace.record(4, 4 * each)
    assert pace.chunk(POLICY) == chunk
    window = send_deadline(POLICY, POLICY.lease_ttl)
    assert window == 10
    assert chunk == 1 or chunk * each <= SendPace.HEADROOM * window


def test_the_pace_follows_a_slower_provider_at_once_and_a_faster_one_gradually() -> None:
    pace = SendPace()
    pace.record(10, 10 * 0.01)
    pace.record(10, 10 * 0.5)  # one slow chunk: at once
    assert pace.chunk(POLICY) == 16
    pace.record(10, 10 * 0.01)  # one fast chunk: a quarter of the way back
    assert pace.chunk(POLICY) == int(SendPace.HEADROOM * 10 / (0.5 + 0.25 * (0.01 - 0.5)))
    for _ in range(30):
        pace.record(10, 10 * 0.01)
    assert pace.chunk(POLICY) == 50


def test_nothing_sent_a_clock_that_went_back_or_a_non_number_teaches_nothing() -> None:
    pace = SendPace()
    for sent, seconds in [(0, 5.0), (3, -1.0), (3, float("nan")), (3, float("inf"))]:
        pace.record(sent, seconds)
    assert pace.chunk(POLICY) == SendPace.FIRST_CHUNK
    pace.record(2, 0.5)
    pace.record(3, float("inf"))
    assert pace.chunk(POLICY) == 32


def test_a_stopped_clock_is_a_fast_provider() -> None:
    """A fake clock that never moves measures 0 s: the policy's chunk, no division by zero."""
    pace = SendPace()
    pace.record(5, 0.0)
    assert pace.chunk(POLICY) == 50


def test_a_slow_provider_has_every_due_link_refreshed_in_one_run(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    """250 ms a request, 300 links: chunks of 50 would send 40 each (12.5 s > the 10 s window).

    One worker: the fake clock is shared, so two workers' requests would add up as if the
    provider answered one at a time (bench/bench_keeper.py --latency measures real ones).
    """
    names = [f"l{i:03}" for i in range(300)]
    _due(store, provider, clock, names)
    provider.faults.extend([lambda link: clock.advance(0.25)] * len(names))
    k = _keeper(store, provider, clock=clock, sleep=clock.sleep)
    report = k.run_once()
    assert sorted(report.refreshed) == names and not report.skipped and report.ok
    assert provider.refresh_count() == len(names) and not provider.revoked


# -- the pool: chunks cut with the pace when names are handed over ------------------------------
class _Recorder:
    """Stands in for the keeper's chunk refresh: records each chunk, optionally held on an event."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.chunks: list[list[str]] = []
        self.started = threading.Event()
        self._hold = hold
        self._lock = threading.Lock()

    def __call__(self, store: object, names: list[str], owner: str) -> list[Outcome]:
        with self._lock:
            self.chunks.append(list(names))
        self.started.set()
        if self._hold is not None:
            self._hold.wait(10)
        return [Outcome(n, keeper.REFRESHED) for n in names]


class _NoStore:
    def close(self) -> None:
        pass


def _pool_keeper(recorder: _Recorder, workers: int = 2) -> keeper.Keeper:
    k = keeper.Keeper(
        _NoStore(),  # type: ignore[arg-type]
        object(),  # type: ignore[arg-type]
        store_factory=_NoStore,  # type: ignore[arg-type,return-value]
        workers=workers,
        policy=POLICY,
    )
    k._process = recorder  # type: ignore[method-assign]
    return k


def test_a_later_small_or_empty_submit_does_not_change_the_chunks_already_queued() -> None:
    """The daemon submits every 50 ms while names wait: chunks are cut when names are queued."""
    hold = threading.Event()
    recorder = _Recorder(hold)
    k = _pool_keeper(recorder)
    k.pace.record(10, 10 * 0.002)  # a fast provider: the policy's 50
    names = [f"n{i:03}" for i in range(200)]
    with _Pool(k) as pool:
        pool.submit(names)
        assert recorder.started.wait(5)
        pool.submit([])
        pool.submit(names)  # all busy: queues nothing
        pool.submit(["late"])
        hold.set()
        outcomes = pool.collect(201)
    assert sorted(o.name for o in outcomes) == sorted([*names, "late"])
    assert sorted(len(c) for c in recorder.chunks) == [1, 50, 50, 50, 50]


def test_a_batch_is_spread_over_the_workers_and_its_chunks_follow_the_pace() -> None:
    hold = threading.Event()
    recorder = _Recorder(hold)
    k = _pool_keeper(recorder)
    with _Pool(k) as pool:
        k.pace.record(10, 10 * 0.002)
        pool.submit([f"a{i}" for i in range(60)])  # 2 workers: 30 each, not 50 + 10
        _chunks_taken(recorder, 2)
        hold.set()
        pool.collect(60)
        hold.clear()
        k.pace.record(4, 4 * 0.5)  # slower: 16 a chunk
        pool.submit([f"b{i}" for i in range(40)])
        _chunks_taken(recorder, 4)
        hold.set()
        pool.collect(40)
    assert [sorted(len(c) for c in recorder.chunks[i:j]) for i, j in ((0, 2), (2, 5))] == [
        [30, 30],
        [8, 16, 16],
    ]


def _chunks_taken(recorder: _Recorder, count: int) -> None:
    for _ in range(500):
        if len(recorder.chunks) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{len(recorder.chunks)} chunks taken, not {count}")


def test_cancel_pending_drops_the_queued_names_and_keeps_the_started_ones_busy() -> None:
    hold = threading.Event()
    recorder = _Recorder(hold)
    k = _pool_keeper(recorder, workers=1)
    k.pace.record(10, 10 * 0.002)
    with _Pool(k) as pool:
        pool.submit([f"n{i}" for i in range(120)])
        assert recorder.started.wait(5)
        assert pool.pending()
        pool.cancel_pending()
        assert not pool.pending()
        assert pool.busy() == set(recorder.chunks[0])
        hold.set()
        assert len(pool.collect(len(recorder.chunks[0]))) == 50
    assert len(recorder.chunks) == 1 and pool.busy() == set()


def test_an_unexpected_error_in_a_worker_neither_kills_it_nor_hangs_run_once(
    open_store: Callable[[], Store], provider: RotatingProvider, clock: FakeClock
) -> None:
    """A bug around a chunk (here the outcome observer raising once) is logged by type; all goes on."""
    store = open_store()
    names = [f"l{i}" for i in range(6)]
    _due(store, provider, clock, names)
    raised: list[str] = []

    def observe(outcome: Outcome) -> None:
        if not raised:
            raised.append(outcome.name)
            raise RuntimeError("a message that must not be logged")

    policy = dataclasses.replace(POLICY, chunk=3)
    k = _keeper(
        store, provider, store_factory=open_store, workers=2, policy=policy, clock=clock, observe=observe
    )
    k.pace.record(3, 0.0)
    report = k.run_once()
    assert raised and sorted(report.refreshed) == names, report


def test_a_bug_in_a_chunk_refresh_skips_that_chunk_and_logs_only_the_type(
    store: Store,
    provider: RotatingProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import reconciler.keeper.daemon as daemon

    def bug(*args: object, **kwargs: object) -> list[Outcome]:
        raise RuntimeError("a message that must not be logged")

    monkeypatch.setattr(daemon, "refresh_batch", bug)
    k = _keeper(store, provider)
    outcomes = k._process(store, ["a", "b", "a"], "K")
    assert [(o.name, o.result, o.message) for o in outcomes] == [
        ("a", keeper.SKIPPED, "internal error: RuntimeError"),
        ("b", keeper.SKIPPED, "internal error: RuntimeError"),
    ]
    assert "RuntimeError" in caplog.text and "must not be logged" not in caplog.text


def test_a_worker_that_cannot_open_its_store_skips_and_run_once_still_returns(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    _due(store, provider, clock, ["a", "b"])

    def unopenable() -> Store:
        raise OSError("no connection")

    k = _keeper(store, provider, store_factory=unopenable, workers=2, clock=clock)
    report = k.run_once()
    assert sorted(report.skipped) == ["a", "b"] and not report.refreshed


def test_a_worker_whose_store_will_not_open_leaves_its_chunks_to_one_whose_store_did(
    open_store: Callable[[], Store], provider: RotatingProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """One of two workers cannot connect (a connection limit, say): ``--once`` still refreshes all.

    The worker used to take chunks and skip them during its backoff: on the old code it
    skipped all 40 links here while the other worker was still opening its store.
    """
    store = open_store()
    clock = FakeClock()
    names = [f"l{i:02}" for i in range(40)]
    _due(store, provider, clock, names)
    opened: list[bool] = []
    lock = threading.Lock()

    def first_fails() -> Store:
        with lock:
            opened.append(not opened)
            if opened[-1]:
                raise OSError("too many connections")
        return open_store()

    policy = dataclasses.replace(POLICY, chunk=4)  # ten chunks for two workers
    k = _keeper(store, provider, store_factory=first_fails, workers=2, clock=clock, policy=policy)
    with caplog.at_level("WARNING", logger="linkctl.keeper"):
        report = k.run_once()
    assert sorted(report.refreshed) == names and not report.skipped
    # Only the first attempt failed: no chunk waited for the first worker's second attempt.
    assert opened[0] and not any(opened[1:])
    assert sum("could not open the store" in r.getMessage() for r in caplog.records) == 1


def test_during_an_outage_a_chunk_is_handed_back_once_not_from_worker_to_worker(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    """Four workers, every store failing slowly, one due link: two attempts, not one per worker."""
    _due(store, provider, clock, ["a"])
    attempts: list[None] = []

    def slow_to_fail() -> Store:
        attempts.append(None)
        time.sleep(0.05)  # a connect timeout, shortened
        raise OSError("connection timed out")

    k = _keeper(store, provider, store_factory=slow_to_fail, workers=4, clock=clock)
    report = k.run_once()
    assert report.skipped == ["a"] and len(attempts) == 2


def test_nothing_is_handed_back_once_queued_work_is_cancelled(
    store: Store, provider: RotatingProvider
) -> None:
    """A stop drops the queued chunks; a chunk handed back after that would be refreshed anyway."""

    def unopenable() -> Store:
        raise OSError("no connection")

    pool = _Pool(_keeper(store, provider, store_factory=unopenable, workers=2))
    pool.cancel_pending()
    assert not pool._hand_back(["a"], _WorkerStore(unopenable, random.Random(3)))
    assert not pool.pending()


def test_the_daemon_sits_out_its_store_backoff_whatever_wakes_it(
    store: Store, provider: RotatingProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Wake-ups (workers finishing failed chunks, notifications) do not bring the next look sooner."""
    from reconciler.errors import StateError

    looks: list[None] = []

    def unreachable(now: float, *, limit: int) -> list[str]:
        looks.append(None)
        raise StateError("the database is unreachable")

    wakes: list[Callable[[], None]] = []

    def listen(wake: Callable[[], None]) -> contextlib.nullcontext[None]:
        wakes.append(wake)
        return contextlib.nullcontext()

    store.due_links = unreachable  # type: ignore[method-assign]
    store.listen_for_work = listen  # type: ignore[method-assign]
    k = _keeper(store, provider, rng=random.Random(0))
    stop = threading.Event()

    def keep_waking() -> None:
        while not stop.wait(0.005):
            for wake in wakes:
                wake()

    waker = threading.Thread(target=keep_waking)
    waker.start()
    timer = threading.Timer(0.6, stop.set)
    timer.start()
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="linkctl.keeper"):
        k.run_forever(stop)
    took = time.monotonic() - started
    timer.join()
    waker.join()
    assert wakes and len(looks) == 1  # the backoff is at least a second
    assert took < 0.9  # and a stop still ends it at once
    assert sum("the store is unreachable" in r.getMessage() for r in caplog.records) == 1


def test_a_store_that_will_not_open_is_retried_with_backoff_not_at_every_chunk(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    calls: list[float] = []

    def flaky() -> Store:
        calls.append(now[0])
        if len(calls) < 3:
            raise OSError("no connection")
        return store

    worker_store = _WorkerStore(flaky, random.Random(3), monotonic=lambda: now[0])
    with caplog.at_level("WARNING", logger="linkctl.keeper"):
        assert worker_store.get() is None
        for _ in range(50):  # chunks during the backoff: no attempt, no log line
            now[0] += 0.01
            assert worker_store.get() is None
        assert len(calls) == 1
        while len(calls) < 3:  # the next attempts come after at least a second each
            now[0] += 0.1
            got = worker_store.get()
    assert got is store and worker_store.get() is store and len(calls) == 3
    assert calls[1] - calls[0] >= 1.0 and calls[2] - calls[1] >= 1.0
    failures = [r for r in caplog.records if "could not open the store" in r.getMessage()]
    assert len(failures) == 2 and all("retrying in" in r.getMessage() for r in failures)


def test_the_daemon_does_not_log_an_unopenable_store_at_every_round(
    store: Store, provider: RotatingProvider, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    _due(store, provider, clock, ["a", "b", "c"])
    attempts: list[None] = []

    def unopenable() -> Store:
        attempts.append(None)
        raise OSError("no connection")

    # Skipped chunks wake nothing, so a short poll makes the rounds: each hands over a, b and c.
    policy = dataclasses.replace(POLICY, poll_interval=0.02)
    k = _keeper(store, provider, store_factory=unopenable, workers=2, clock=clock, policy=policy)
    rounds: list[None] = []
    due_links = store.due_links

    def counted_due_links(now: float, *, limit: int) -> list[str]:
        rounds.append(None)
        return due_links(now, limit=limit)

    store.due_links = counted_due_links  # type: ignore[method-assign]
    stop = threading.Event()
    timer = threading.Timer(0.8, stop.set)
    timer.start()
    with caplog.at_level("WARNING", logger="linkctl.keeper"):
        report = k.run_forever(stop)
    timer.join()
    assert not report.refreshed
    assert len(rounds) >= 8  # rounds of about 40 ms, each handing the links over again
    assert 1 <= len(attempts) <= 2  # one attempt per worker: the backoff lasts at least a second
    assert sum("could not open the store" in r.getMessage() for r in caplog.records) == len(attempts)


def test_the_daemon_under_a_backlog_hands_over_whole_chunks_not_the_handful_due_meanwhile(
    open_store: Callable[[], Store], provider: RotatingProvider
) -> None:
    """600 due links, 2 workers, 2 ms a request: full chunks of 50 after the first of each worker.

    Looking every 50 ms and cutting whatever had become due meanwhile into chunks spread
    over the workers made chunks of a few links under a backlog, each with a chunk's three
    transactions.
    """
    store = open_store()
    clock = FakeClock()
    names = [f"l{i:03}" for i in range(600)]
    _due(store, provider, clock, names)
    provider.faults.extend([lambda link: time.sleep(0.002)] * len(names))
    k = _keeper(store, provider, clock=clock, store_factory=open_store, workers=2)
    chunks: list[int] = []
    process = k._process

    def recording(store: Store, chunk: list[str], owner: str) -> list[Outcome]:
        chunks.append(len(chunk))
        outcomes = process(store, chunk, owner)
        if provider.refresh_count() >= len(names):
            stop.set()
        return outcomes

    k._process = recording  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        report = k.run_forever(stop)
    finally:
        timer.cancel()
    assert sorted(report.refreshed) == names and provider.refresh_count() == len(names)
    # Small chunks only until a request is timed (8 each, two workers' worth at a time) and a tail.
    assert sum(1 for size in chunks if size < POLICY.chunk) <= 8, chunks
    assert len(chunks) <= len(names) // POLICY.chunk + 8, chunks
