"""The keeper against a fake rotating provider and the real SQLite store."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable

import pytest

from reconciler import keeper
from reconciler.domain.clock import iso_time
from reconciler.domain.grants import GrantStatus
from reconciler.domain.tokens import ClientConfig, TokenResponse
from reconciler.errors import GrantError, ProviderConfigError, TransientProviderError
from reconciler.secrets import Secret
from reconciler.store import grants
from reconciler.store.base import Store
from tests.support.fakes import FakeClock, RotatingProvider, add_links, fail_before, link_write, lose_response


def _authorize(store: Store, provider: RotatingProvider, clock: FakeClock, name: str) -> None:
    first = dataclasses.replace(provider.authorize(name), received_at=clock())
    store.save_authorization(name, first, clock_now=clock())


def _keeper(store: Store, provider: RotatingProvider, clock: FakeClock, **kw: object) -> keeper.Keeper:
    return keeper.Keeper(store, provider, clock=clock, sleep=clock.sleep, rng=random.Random(5), **kw)  # type: ignore[arg-type]


def test_five_rotations_each_with_the_newest_refresh_token(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("a"))
    _authorize(store, provider, clock, "a")
    k = _keeper(store, provider, clock)
    assert k.run_once().refreshed == []  # not due yet
    for n in range(1, 7):
        clock.advance(55)  # 60 s tokens: due after 45-51 s
        report = k.run_once()
        assert report.refreshed == ["a"] and report.ok
        assert provider.refresh_count("a") == n
    assert "a" not in provider.revoked
    g = store.get_grant("a", with_tokens=True)
    assert g is not None and g.refresh_token is not None
    assert g.refresh_token.reveal() == provider.valid["a"]  # the stored RT is the live one


def test_client_credentials_obtained_without_a_human(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("cc", grant="client_credentials"), link_write("human"))
    report = _keeper(store, provider, clock).run_once()
    assert report.obtained == ["cc"] and report.waiting_for_authorization == ["human"] and report.ok
    g = store.get_grant("cc")
    assert g is not None and g.status == GrantStatus.HEALTHY and g.next_refresh_at is not None


def test_transient_error_backs_off_honouring_retry_after(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("a"))
    _authorize(store, provider, clock, "a")
    clock.advance(55)
    provider.faults.append(fail_before(TransientProviderError("HTTP 503", retry_after=120)))
    k = _keeper(store, provider, clock)
    report = k.run_once()
    assert list(report.failed) == ["a"] and not report.ok
    g = store.get_grant("a")
    assert g is not None and g.status == GrantStatus.TRANSIENT_ERROR and g.attempts == 1
    assert g.retry_at is not None and g.retry_at >= clock() + 120
    assert store.due_links(clock() + 119, limit=5) == []
    clock.advance(g.retry_at - clock())
    assert k.run_once().refreshed == ["a"]
    g = store.get_grant("a")
    assert g is not None and g.status == GrantStatus.HEALTHY and g.attempts == 0 and g.last_error is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (GrantError("HTTP 400 invalid_grant"), GrantStatus.NEEDS_AUTHORIZATION),
        (ProviderConfigError("HTTP 401 invalid_client"), GrantStatus.CONFIGURATION_ERROR),
    ],
)
def test_permanent_errors_park_the_link_without_a_retry_loop(
    store: Store, provider: RotatingProvider, clock: FakeClock, error: Exception, status: str
) -> None:
    add_links(store, link_write("a"))
    _authorize(store, provider, clock, "a")
    clock.advance(55)
    provider.faults.append(fail_before(error))  # type: ignore[arg-type]
    k = _keeper(store, provider, clock)
    assert list(k.run_once().failed) == ["a"]
    g = store.get_grant("a")
    assert g is not None and g.status == status and g.retry_at is None
    for _ in range(5):
        clock.advance(3600)
        report = k.run_once()
        assert report.failed == {} and "a" in report.broken and not report.ok
    assert provider.refresh_count("a") == 1


def test_lost_response_then_invalid_grant_says_why(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("a"))
    _authorize(store, provider, clock, "a")
    clock.advance(55)
    sent_at = clock()
    provider.faults.append(lose_response())  # the provider rotates, the answer never arrives
    k = _keeper(store, provider, clock)
    report = k.run_once()
    assert "may have consumed the refresh token" in report.failed["a"]
    g = store.get_grant("a")
    assert g is not None and g.lost_response and g.status == GrantStatus.TRANSIENT_ERROR
    assert g.retry_at is not None
    clock.advance(g.retry_at - clock())
    report = k.run_once()
    g = store.get_grant("a")
    assert g is not None and g.status == GrantStatus.NEEDS_AUTHORIZATION
    assert g.last_error is not None
    assert f"probably consumed by a lost response (sent at {iso_time(sent_at)})" in g.last_error


def test_crash_after_sending_is_treated_as_lost_response(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("a"))
    _authorize(store, provider, clock, "a")
    clock.advance(55)
    # A keeper marked the refresh in flight, the provider rotated, and the keeper died.
    g = store.acquire_lease("a", owner="dead", ttl=30, now=clock())
    assert g is not None
    sent_at = clock()
    store.mark_in_flight("a", owner="dead", token_version=g.token_version, now=sent_at)
    assert g.refresh_token is not None
    provider.refresh(keeper.client_config(store, store.get_link("a")), g.refresh_token)  # type: ignore[arg-type]
    clock.advance(31)
    _keeper(store, provider, clock).run_once()
    g = store.get_grant("a")
    assert g is not None and g.status == GrantStatus.NEEDS_AUTHORIZATION and g.last_error is not None
    assert f"lost response (sent at {iso_time(sent_at)})" in g.last_error


def test_a_stale_keeper_cannot_overwrite_what_a_newer_one_committed(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("a"), link_write("b", grant="client_credentials"))
    _authorize(store, provider, clock, "a")
    clock.advance(55)
    policy = keeper.KeeperPolicy(lease_ttl=30, http_timeout=10)
    slow = store.acquire_lease("b", owner="slow", ttl=30, now=clock())
    assert slow is not None
    store.mark_in_flight("b", owner="slow", token_version=slow.token_version, now=clock())
    clock.advance(31)
    outcome = keeper.refresh_link(
        store, provider, "b", owner="fast", policy=policy, clock=clock, rng=random.Random(1)
    )
    assert outcome.result == keeper.OBTAINED
    newer = store.get_grant("b", with_tokens=True)
    late = provider.client_credentials(keeper.client_config(store, store.get_link("b")))  # type: ignore[arg-type]
    with pytest.raises(grants.LeaseLost):
        store.commit_tokens(
            "b",
            owner="slow",
            expected_version=slow.token_version,
            response=late,
            now=clock(),
            next_refresh_at=None,
        )
    kept = store.get_grant("b", with_tokens=True)
    assert kept is not None and newer is not None and kept.access_token == newer.access_token


def test_worker_threads_refresh_each_link_exactly_once(
    open_store: Callable[[], Store], provider: RotatingProvider, clock: FakeClock
) -> None:
    store = open_store()
    names = [f"l{i:02d}" for i in range(30)]
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        _authorize(store, provider, clock, n)
    clock.advance(55)
    k = keeper.Keeper(store, provider, store_factory=open_store, workers=4, clock=clock, rng=random.Random(1))
    report = k.run_once()
    assert sorted(report.refreshed) == names and report.ok
    assert provider.refresh_count() == 30 and not provider.revoked


def test_two_keepers_racing_never_double_refresh(
    open_store: Callable[[], Store], provider: RotatingProvider, clock: FakeClock
) -> None:
    store = open_store()
    names = [f"l{i:02d}" for i in range(20)]
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        _authorize(store, provider, clock, n)
    for _ in range(5):
        clock.advance(55)

        def run(seed: int) -> None:
            k = keeper.Keeper(
                open_store(),
                provider,
                store_factory=open_store,
                workers=3,
                clock=clock,
                rng=random.Random(seed),
            )
            k.run_once()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not provider.revoked, "a refresh token was replayed"
    assert provider.refresh_count() == 100


def test_run_forever_stops_on_the_event(open_store: Callable[[], Store], provider: RotatingProvider) -> None:
    import time

    store = open_store()
    add_links(store, link_write("cc", grant="client_credentials"))
    stop = threading.Event()
    result: list[keeper.KeeperReport] = []

    def run() -> None:
        k = keeper.Keeper(
            open_store(),
            provider,
            store_factory=open_store,
            workers=2,
            policy=keeper.KeeperPolicy(poll_interval=0.05),
        )
        result.append(k.run_forever(stop))

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not provider.calls:
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and result[0].obtained == ["cc"]


def test_a_failure_that_changes_the_status_is_audited_once(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("a"))
    _authorize(store, provider, clock, "a")
    k = _keeper(store, provider, clock)
    for _ in range(2):  # the second 503 leaves the status as it was: no second event
        provider.faults.append(fail_before(TransientProviderError("HTTP 503", status_code=503)))
        clock.advance(3600)
        assert k.run_once().failed
    provider.faults.append(fail_before(GrantError("HTTP 400 invalid_grant", oauth_error="invalid_grant")))
    clock.advance(3600)
    assert k.run_once().failed
    changes = [e for e in store.list_events(link="a") if e.action == "grant.status_changed"]
    assert [(e.detail["old_status"], e.detail["new_status"]) for e in reversed(changes)] == [
        (GrantStatus.HEALTHY, GrantStatus.TRANSIENT_ERROR),
        (GrantStatus.TRANSIENT_ERROR, GrantStatus.NEEDS_AUTHORIZATION),
    ]
    assert changes[0].detail["oauth_error"] == "invalid_grant" and changes[0].detail["error_class"]
    assert all("" not in e.detail and "HTTP" not in str(e.detail) for e in changes)  # no message text


def test_run_once_looks_for_more_due_links_while_the_workers_are_still_busy(
    open_store: Callable[[], Store], provider: RotatingProvider, clock: FakeClock
) -> None:
    # The workers should never wait for the due query (or for the slowest chunk of a round):
    # run_once asks the store again while about a chunk per worker is still being refreshed.
    store = open_store()
    names = [f"l{i:02d}" for i in range(8)]
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        _authorize(store, provider, clock, n)
    clock.advance(55)
    limits: list[int] = []
    refreshed_before_second_look: list[int] = []
    second_look = threading.Event()
    due_links = store.due_links

    def watched_due_links(now: float, *, limit: int) -> list[str]:
        limits.append(limit)
        if len(limits) == 2:
            refreshed_before_second_look.append(provider.refresh_count())
            second_look.set()
        return due_links(now, limit=limit)

    store.due_links = watched_due_links  # type: ignore[method-assign]

    class HeldProvider:
        """Holds every refresh until run_once has looked at the store a second time."""

        def refresh(self, config: ClientConfig, refresh_token: Secret) -> TokenResponse:
            second_look.wait(5)
            return provider.refresh(config, refresh_token)

        def __getattr__(self, name: str) -> object:
            return getattr(provider, name)

    k = keeper.Keeper(
        store,
        HeldProvider(),  # type: ignore[arg-type]
        store_factory=open_store,
        workers=2,
        policy=keeper.KeeperPolicy(batch=4, chunk=2),
        clock=clock,
        rng=random.Random(1),
    )
    report = k.run_once()
    assert refreshed_before_second_look == [0]  # nothing had come back yet
    assert limits[1] == 4 + 4  # the 4 names still queued come back from the query: 4 more asked for
    assert sorted(report.refreshed) == names and report.ok
    assert provider.refresh_count() == 8 and not provider.revoked


def test_the_pool_hands_back_a_chunk_of_outcomes_at_once(
    open_store: Callable[[], Store], provider: RotatingProvider, clock: FakeClock
) -> None:
    # A waiting run_once wakes once per chunk, not once per link (each wake-up takes the GIL
    # from the workers): outcomes come back as whole chunks.
    from reconciler.keeper.daemon import _Pool

    store = open_store()
    names = [f"l{i}" for i in range(6)]
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        _authorize(store, provider, clock, n)
    clock.advance(55)
    k = keeper.Keeper(
        store,
        provider,  # type: ignore[arg-type]  # the fake has no with_endpoints (not used here)
        store_factory=open_store,
        workers=1,
        policy=keeper.KeeperPolicy(chunk=3),
        clock=clock,
        rng=random.Random(1),
    )
    with _Pool(k) as pool:
        pool.submit(names)
        first = pool.collect(1)
        rest = pool.collect(6 - len(first))
    assert len(first) == 3 and len(rest) == 3
    assert sorted(o.name for o in first + rest) == names
