"""The batch lease API (one transaction per call) and the keeper's batched refresh.

Per link, a batch keeps the single-link guarantees: fencing on token_version + lease
owner (a fenced-out link does not fail the others), the rotated refresh token durable
before the lease is released, and a crash between the batch mark and the batch commit
read as a lost response for every link of the batch.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from collections.abc import Callable
from typing import cast

import pytest

from reconciler import keeper
from reconciler.domain.grants import GrantStatus
from reconciler.store import grants
from reconciler.store.base import Store
from reconciler.store.grants import FailureRecord, LeaseLost, TokenCommit
from tests.support.fakes import FakeClock, RotatingProvider, add_links, link_write, lose_response, response
from tests.support.stores import PerLinkBatches

NAMES = ["a", "b", "c"]


def _authorize_all(store: Store, clock: FakeClock, names: list[str] = NAMES) -> None:
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        store.save_authorization(n, response(f"at-{n}", f"rt-{n}", at=clock()), clock_now=clock())


def _commits(leased: list[grants.Grant], clock: FakeClock, tag: str = "2") -> list[TokenCommit]:
    return [
        TokenCommit(
            g.link_name,
            g.token_version,
            response(f"at-{g.link_name}-{tag}", f"rt-{g.link_name}-{tag}", at=clock()),
            clock() + 50,
        )
        for g in leased
    ]


def test_acquire_leases_takes_free_ones_and_skips_held_and_unknown(store: Store, clock: FakeClock) -> None:
    _authorize_all(store, clock)
    assert store.acquire_lease("b", owner="other", ttl=30, now=clock()) is not None
    leased = store.acquire_leases(["a", "b", "nope", "c", "a"], owner="K", ttl=30, now=clock())
    assert [g.link_name for g in leased] == ["a", "c"]
    assert all(g.refresh_token is not None and g.lease_owner == "K" for g in leased)
    assert leased[0].refresh_token is not None and leased[0].refresh_token.reveal() == "rt-a"


def test_batch_commit_stores_rotated_tokens_and_releases_in_one_transaction(
    store: Store, clock: FakeClock
) -> None:
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="K", ttl=30, now=clock())
    assert (
        store.mark_in_flight_many(
            [(g.link_name, g.token_version) for g in leased], owner="K", now=clock(), ttl=30
        )
        == [None] * 3
    )
    assert store.commit_tokens_many(_commits(leased, clock), owner="K", now=clock()) == [None] * 3
    for n in NAMES:
        g = store.get_grant(n, with_tokens=True)
        assert g is not None and g.refresh_token is not None and g.refresh_token.reveal() == f"rt-{n}-2"
        assert g.token_version == 2 and g.lease_owner is None and g.in_flight_since is None
        assert g.status == GrantStatus.HEALTHY


def test_rotated_refresh_token_is_durable_before_any_lease_is_released(
    open_store: Callable[[], Store], clock: FakeClock
) -> None:
    """While the batch commit runs, another connection sees neither new tokens nor a free lease;
    the moment the lease is free, the new refresh token is already committed."""
    store = open_store()
    other = open_store()
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="K", ttl=30, now=clock())
    store.mark_in_flight_many(
        [(g.link_name, g.token_version) for g in leased], owner="K", now=clock(), ttl=30
    )
    seen: list[tuple[str | None, str]] = []
    original = store._token_columns  # type: ignore[attr-defined]

    def spy(uid: str, resp: object) -> object:
        # Inside the batch transaction (tokens being sealed): another connection still sees
        # the old refresh token AND the lease held; both change together at COMMIT.
        g = other.get_grant("a", with_tokens=True)
        assert g is not None and g.refresh_token is not None
        seen.append((g.lease_owner, g.refresh_token.reveal()))
        return original(uid, resp)

    store._token_columns = spy  # type: ignore[attr-defined]
    store.commit_tokens_many(_commits(leased, clock), owner="K", now=clock())
    assert seen and all(
        owner == "K" and rt.startswith("rt-a") and not rt.endswith("-2") for owner, rt in seen
    )
    g = other.get_grant("a", with_tokens=True)
    assert g is not None and g.lease_owner is None
    assert g.refresh_token is not None and g.refresh_token.reveal() == "rt-a-2"


@pytest.fixture(params=["store batches", "base-class defaults"])
def batches(request: pytest.FixtureRequest, store: Store) -> Store:
    """The store, or the store with the per-link default batch methods."""
    return store if request.param == "store batches" else cast(Store, PerLinkBatches(store))


def test_a_fenced_out_link_does_not_fail_the_others(batches: Store, clock: FakeClock) -> None:
    store = batches
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="K", ttl=30, now=clock())
    store.mark_in_flight_many(
        [(g.link_name, g.token_version) for g in leased], owner="K", now=clock(), ttl=30
    )
    clock.advance(31)  # K stalls; B takes "b" over and commits newer tokens
    b = store.acquire_lease("b", owner="B", ttl=30, now=clock())
    assert b is not None and b.lost_response
    store.commit_tokens(
        "b",
        owner="B",
        expected_version=b.token_version,
        response=response("at-B", "rt-B", at=clock()),
        now=clock(),
        next_refresh_at=None,
    )
    results = store.commit_tokens_many(_commits(leased, clock), owner="K", now=clock())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LeaseLost) and "fenced out" in results[1].message
    kept = store.get_grant("b", with_tokens=True)
    assert kept is not None and kept.refresh_token is not None and kept.refresh_token.reveal() == "rt-B"
    for n in ("a", "c"):
        g = store.get_grant(n, with_tokens=True)
        assert g is not None and g.refresh_token is not None and g.refresh_token.reveal() == f"rt-{n}-2"


def test_mark_in_flight_many_fences_per_link(batches: Store, clock: FakeClock) -> None:
    store = batches
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="K", ttl=30, now=clock())
    items = [(g.link_name, g.token_version) for g in leased]
    items[2] = ("c", 99)  # a stale version
    results = store.mark_in_flight_many(items, owner="K", now=clock(), ttl=30)
    assert results[:2] == [None, None] and isinstance(results[2], LeaseLost)
    assert store.get_grant("c") is not None and store.get_grant("c").in_flight_since is None  # type: ignore[union-attr]


def test_record_failures_many_fences_per_link_and_keeps_lost_flag(batches: Store, clock: FakeClock) -> None:
    store = batches
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="K", ttl=30, now=clock())
    store.mark_in_flight_many(
        [(g.link_name, g.token_version) for g in leased], owner="K", now=clock(), ttl=30
    )
    records = [
        FailureRecord(
            g.link_name, g.token_version, GrantStatus.TRANSIENT_ERROR, "transient", "lost", clock() + 5, True
        )
        for g in leased
    ]
    records[1] = dataclasses.replace(records[1], expected_version=42)
    results = store.record_failures_many(records, owner="K", now=clock())
    assert results[0] is None and isinstance(results[1], LeaseLost) and results[2] is None
    g = store.get_grant("a")
    assert g is not None and g.lost_response and g.lease_owner is None and g.attempts == 1
    with pytest.raises(ValueError, match="unknown grant status"):
        store.record_failures_many([dataclasses.replace(records[0], status="bogus")], owner="K", now=clock())


def test_crash_between_batch_mark_and_batch_commit_is_a_lost_response_for_each_link(
    store: Store, clock: FakeClock
) -> None:
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="dead", ttl=30, now=clock())
    sent = clock()
    store.mark_in_flight_many(
        [(g.link_name, g.token_version) for g in leased], owner="dead", now=sent, ttl=30
    )
    # The keeper dies here: no commit. After the lease expires, every link comes back flagged.
    assert store.due_links(clock() + 10, limit=10) == []
    clock.advance(31)
    assert sorted(store.due_links(clock(), limit=10)) == NAMES
    again = store.acquire_leases(NAMES, owner="next", ttl=30, now=clock())
    assert [g.link_name for g in again] == NAMES
    for g in again:
        assert g.lost_response and g.in_flight_since is None and g.details["lost_response_sent_at"] == sent


def test_a_failed_batch_commit_writes_nothing(store: Store, clock: FakeClock) -> None:
    """The batch is one transaction: an error half-way rolls back every link (leases stay, in flight)."""
    _authorize_all(store, clock)
    leased = store.acquire_leases(NAMES, owner="K", ttl=30, now=clock())
    store.mark_in_flight_many(
        [(g.link_name, g.token_version) for g in leased], owner="K", now=clock(), ttl=30
    )
    original = store._token_columns  # type: ignore[attr-defined]
    calls = {"n": 0}

    def boom(uid: str, resp: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return original(uid, resp)

    store._token_columns = boom  # type: ignore[attr-defined]
    with pytest.raises(sqlite3.OperationalError):
        store.commit_tokens_many(_commits(leased, clock), owner="K", now=clock())
    for n in NAMES:
        g = store.get_grant(n, with_tokens=True)
        assert (
            g is not None and g.token_version == 1 and g.lease_owner == "K" and g.in_flight_since is not None
        )
        assert g.refresh_token is not None and g.refresh_token.reveal() == f"rt-{n}"


# -- the keeper's batched refresh -----------------------------------------------------------
def _authorize_with(store: Store, provider: RotatingProvider, clock: FakeClock, names: list[str]) -> None:
    add_links(store, *(link_write(n) for n in names))
    for n in names:
        first = dataclasses.replace(provider.authorize(n), received_at=clock())
        store.save_authorization(n, first, clock_now=clock())


def test_refresh_batch_refreshes_each_link_once_with_three_transactions(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    names = [f"l{i}" for i in range(10)]
    _authorize_with(store, provider, clock, names)
    clock.advance(55)
    begins = {"n": 0}
    original = store._immediate  # type: ignore[attr-defined]

    def counting() -> object:
        begins["n"] += 1
        return original()

    store._immediate = counting  # type: ignore[attr-defined]
    outcomes = keeper.refresh_batch(
        store, provider, names, owner="K", policy=keeper.KeeperPolicy(), clock=clock, rng=random.Random(1)
    )
    assert [o.result for o in outcomes] == [keeper.REFRESHED] * 10
    assert begins["n"] == 3  # acquire, mark in flight, commit
    assert provider.refresh_count() == 10 and not provider.revoked
    for n in names:
        g = store.get_grant(n, with_tokens=True)
        assert g is not None and g.refresh_token is not None and g.refresh_token.reveal() == provider.valid[n]


def test_refresh_batch_lost_response_flags_only_that_link(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    _authorize_with(store, provider, clock, NAMES)
    clock.advance(55)
    provider.faults.extend([lambda link: None, lose_response(), lambda link: None])
    outcomes = keeper.refresh_batch(
        store, provider, NAMES, owner="K", policy=keeper.KeeperPolicy(), clock=clock, rng=random.Random(1)
    )
    assert [o.result for o in outcomes] == [keeper.REFRESHED, keeper.FAILED, keeper.REFRESHED]
    b = store.get_grant("b")
    assert b is not None and b.lost_response and b.status == GrantStatus.TRANSIENT_ERROR
    assert b.lease_owner is None


def test_refresh_batch_does_not_send_after_the_lease_deadline(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    """A slow provider: requests stop before a lease could expire under an unsent answer."""
    _authorize_with(store, provider, clock, NAMES)
    clock.advance(55)
    policy = keeper.KeeperPolicy(lease_ttl=30, http_timeout=10)  # send within 10 s of marking
    provider.faults.extend([lambda link: clock.advance(6)] * 3)  # each request takes 6 s
    outcomes = keeper.refresh_batch(
        store, provider, NAMES, owner="K", policy=policy, clock=clock, rng=random.Random(1)
    )
    assert [o.result for o in outcomes] == [keeper.REFRESHED, keeper.REFRESHED, keeper.SKIPPED]
    assert provider.refresh_count("c") == 0
    c = store.get_grant("c")
    assert c is not None and not c.lost_response and c.in_flight_since is None and c.lease_owner is None
    assert c.retry_at is not None and c.retry_at <= clock() and store.due_links(clock(), limit=5) == ["c"]


def test_refresh_batch_skips_links_no_longer_due_and_held(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    _authorize_with(store, provider, clock, NAMES)
    clock.advance(55)
    assert store.acquire_lease("b", owner="other", ttl=30, now=clock()) is not None
    keeper.refresh_link(
        store, provider, "c", owner="X", policy=keeper.KeeperPolicy(), clock=clock, rng=random.Random(1)
    )
    outcomes = keeper.refresh_batch(
        store, provider, NAMES, owner="K", policy=keeper.KeeperPolicy(), clock=clock, rng=random.Random(1)
    )
    assert [(o.name, o.result) for o in outcomes] == [
        ("a", keeper.REFRESHED),
        ("b", keeper.SKIPPED),
        ("c", keeper.SKIPPED),
    ]
    assert provider.refresh_count("c") == 1 and not provider.revoked
