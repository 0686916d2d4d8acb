"""The store's lease API: exclusivity, fencing, rotated/absent refresh tokens, crash detection.

Part of the store contract suite (runs once per backend); that the stored tokens are
sealed is checked underneath the interface in tests/unit/store/test_sqlite_only.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.errors import StateError
from reconciler.store import grants, read_ahead
from reconciler.store.base import Store
from reconciler.store.grants import LeaseLost
from reconciler.store.sqlite import SQLiteStore
from tests.support.fakes import FakeClock, add_links, link_write, response


def _authorized(store: Store, clock: FakeClock, name: str = "a", **kw: object) -> grants.Grant:
    add_links(store, link_write(name))
    return store.save_authorization(name, response(at=clock(), **kw), clock_now=clock())  # type: ignore[arg-type]


def test_save_authorization_stores_encrypted_tokens_and_schedules(store: Store, clock: FakeClock) -> None:
    grant = _authorized(store, clock)
    assert grant.status == GrantStatus.HEALTHY and grant.token_version == 1
    assert grant.next_refresh_at is not None and clock() + 2700 <= grant.next_refresh_at <= clock() + 3060
    full = store.get_grant("a", with_tokens=True)
    assert full is not None and full.refresh_token is not None and full.refresh_token.reveal() == "rt-1"


def test_get_access_token_reads_the_access_token_alone(store: Store, clock: FakeClock) -> None:
    assert store.get_access_token("nope") is None
    add_links(store, link_write("fresh"))
    unauthorized = store.get_access_token("fresh")
    assert unauthorized is not None and unauthorized.access_token is None
    assert unauthorized.valid_for(clock()) is None
    _authorized(store, clock)
    full = store.get_grant("a", with_tokens=True)
    token = store.get_access_token("a")
    assert full is not None and full.access_token is not None and token is not None
    assert token.access_token is not None and token.access_token.reveal() == full.access_token.reveal()
    assert (token.link_name, token.token_type, token.scope) == ("a", full.token_type, full.scope)
    assert full.access_expires_at is not None and token.access_expires_at is not None
    assert abs(token.access_expires_at - full.access_expires_at) < 1e-6
    assert token.valid_for(clock()) == pytest.approx(full.access_expires_at - clock(), abs=1e-6)
    assert not hasattr(token, "refresh_token")  # the narrow read never opens the refresh token


def test_lease_is_exclusive_until_it_expires(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    first = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert first is not None and first.refresh_token is not None
    assert store.acquire_lease("a", owner="B", ttl=30, now=clock() + 29.9) is None
    assert store.acquire_lease("a", owner="B", ttl=30, now=clock() + 30) is not None


def test_acquire_unknown_link_raises(store: Store, clock: FakeClock) -> None:
    with pytest.raises(StateError):
        store.acquire_lease("nope", owner="A", ttl=30, now=clock())


def test_rotated_refresh_token_replaces_and_absent_keeps_old(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    g = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert g is not None
    store.mark_in_flight("a", owner="A", token_version=g.token_version, now=clock())
    store.commit_tokens(
        "a",
        owner="A",
        expected_version=g.token_version,
        response=response("at-2", "rt-2", at=clock()),
        now=clock(),
        next_refresh_at=clock() + 10,
    )
    g = store.get_grant("a", with_tokens=True)
    assert g is not None and g.refresh_token is not None and g.refresh_token.reveal() == "rt-2"
    assert g.token_version == 2 and g.lease_owner is None and g.in_flight_since is None
    g = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert g is not None
    store.commit_tokens(
        "a",
        owner="A",
        expected_version=g.token_version,
        response=response("at-3", None, at=clock()),
        now=clock(),
        next_refresh_at=None,
    )
    g = store.get_grant("a", with_tokens=True)
    assert g is not None and g.refresh_token is not None and g.refresh_token.reveal() == "rt-2"
    assert g.access_token is not None and g.access_token.reveal() == "at-3"


def test_a_keeper_that_lost_its_lease_cannot_overwrite_newer_tokens(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    a = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert a is not None
    store.mark_in_flight("a", owner="A", token_version=a.token_version, now=clock())
    clock.advance(31)  # A stalls past its lease
    b = store.acquire_lease("a", owner="B", ttl=30, now=clock())
    assert b is not None and b.lost_response  # B learns A's request may have been answered
    store.mark_in_flight("a", owner="B", token_version=b.token_version, now=clock())
    store.commit_tokens(
        "a",
        owner="B",
        expected_version=b.token_version,
        response=response("at-B", "rt-B", at=clock()),
        now=clock(),
        next_refresh_at=None,
    )
    with pytest.raises(LeaseLost):
        store.commit_tokens(
            "a",
            owner="A",
            expected_version=a.token_version,
            response=response("at-A", "rt-A", at=clock()),
            now=clock(),
            next_refresh_at=None,
        )
    with pytest.raises(LeaseLost):
        store.record_failure(
            "a",
            owner="A",
            expected_version=a.token_version,
            status=GrantStatus.TRANSIENT_ERROR,
            error_class="transient",
            message="x",
            retry_at=None,
            lost_response=False,
            now=clock(),
        )
    with pytest.raises(LeaseLost):
        store.mark_in_flight("a", owner="A", token_version=a.token_version, now=clock())
    g = store.get_grant("a", with_tokens=True)
    assert g is not None and g.refresh_token is not None and g.refresh_token.reveal() == "rt-B"


def test_a_commit_given_twice_in_a_batch_is_written_once_and_the_repeat_fenced_out(
    store: Store, clock: FakeClock
) -> None:
    """Equal commits too: "committed" is said only of what was written (positions, not values)."""
    _authorized(store, clock)
    leased = store.acquire_leases(["a"], owner="K", ttl=30, now=clock())
    commit = grants.TokenCommit("a", leased[0].token_version, response("at-2", "rt-2", at=clock()), None)
    results = store.commit_tokens_many([commit, commit], owner="K", now=clock())
    assert results[0] is None
    assert isinstance(results[1], LeaseLost) and "fenced out" in results[1].message
    g = store.get_grant("a", with_tokens=True)
    assert g is not None and g.token_version == leased[0].token_version + 1


def test_same_version_but_another_owner_is_fenced(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    a = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert a is not None
    clock.advance(31)
    assert store.acquire_lease("a", owner="B", ttl=30, now=clock()) is not None
    with pytest.raises(LeaseLost, match="another owner"):
        store.commit_tokens(
            "a",
            owner="A",
            expected_version=a.token_version,
            response=response(at=clock()),
            now=clock(),
            next_refresh_at=None,
        )


def test_crash_after_mark_in_flight_becomes_a_lost_response(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    g = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert g is not None
    sent = clock()
    store.mark_in_flight("a", owner="A", token_version=g.token_version, now=sent)
    assert store.get_grant("a") is not None
    assert store.due_links(clock() + 10, limit=10) == []  # lease still held
    assert store.due_links(clock() + 31, limit=10) == ["a"]  # crashed holder: due again
    g2 = store.acquire_lease("a", owner="B", ttl=30, now=clock() + 31)
    assert g2 is not None and g2.lost_response and g2.in_flight_since is None
    assert g2.details["lost_response_sent_at"] == sent


def test_record_failure_counts_and_release(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    for n in (1, 2):
        g = store.acquire_lease("a", owner="A", ttl=30, now=clock())
        assert g is not None
        failed = store.record_failure(
            "a",
            owner="A",
            expected_version=g.token_version,
            status=GrantStatus.TRANSIENT_ERROR,
            error_class="transient",
            message="503",
            retry_at=clock() + 5,
            lost_response=n == 1,
            now=clock(),
        )
        assert failed.attempts == n and failed.lease_owner is None and failed.lost_response
    assert store.due_links(clock() + 4, limit=5) == [] and store.due_links(clock() + 5, limit=5) == ["a"]
    assert store.acquire_lease("a", owner="A", ttl=30, now=clock()) is not None
    assert store.release_lease("a", owner="A") and not store.release_lease("a", owner="A")


def test_due_links_rules(store: Store, clock: FakeClock) -> None:
    add_links(
        store,
        link_write("never-authorized"),
        link_write("cc", grant="client_credentials"),
        link_write("ok"),
        link_write("broken"),
        link_write("late"),
    )
    store.save_authorization("ok", response(at=clock()), clock_now=clock())
    store.save_authorization("late", response(at=clock() - 4000), clock_now=clock())
    store.save_authorization("broken", response(at=clock() - 4000), clock_now=clock())
    g = store.acquire_lease("broken", owner="A", ttl=30, now=clock())
    assert g is not None
    store.record_failure(
        "broken",
        owner="A",
        expected_version=g.token_version,
        status=GrantStatus.CONFIGURATION_ERROR,
        error_class="configuration_error",
        message="invalid_client",
        retry_at=None,
        lost_response=False,
        now=clock(),
    )
    assert store.due_links(clock(), limit=10) == ["cc", "late"]
    assert store.due_links(clock(), limit=1) == ["cc"]
    assert store.next_due_at() == 0.0
    assert store.acquire_lease("cc", owner="X", ttl=30, now=clock()) is not None
    assert store.due_links(clock(), limit=10) == ["late"]


def test_save_authorization_clears_errors_and_fences_in_flight(store: Store, clock: FakeClock) -> None:
    _authorized(store, clock)
    g = store.acquire_lease("a", owner="A", ttl=30, now=clock())
    assert g is not None
    store.mark_in_flight("a", owner="A", token_version=g.token_version, now=clock())
    new = store.save_authorization(
        "a", dataclasses.replace(response("at-9", "rt-9"), received_at=clock()), clock_now=clock()
    )
    assert new.status == GrantStatus.HEALTHY and not new.lost_response and new.lease_owner is None
    with pytest.raises(LeaseLost):
        store.commit_tokens(
            "a",
            owner="A",
            expected_version=g.token_version,
            response=response(at=clock()),
            now=clock(),
            next_refresh_at=None,
        )


@contextlib.contextmanager
def statements_sent(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement the store sends to its database meanwhile (beneath the interface)."""
    sent: list[str] = []
    if isinstance(store, SQLiteStore):
        store._conn.set_trace_callback(sent.append)
        try:
            yield sent
        finally:
            store._conn.set_trace_callback(None)
        return
    original = psycopg.Connection.execute

    def counting(self: psycopg.Connection[Any], query: Any, *args: Any, **kw: Any) -> Any:
        sent.append(str(query))
        return original(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    yield sent


def test_leased_links_are_read_with_their_lease_once_and_only_briefly(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_links(store, link_write("a"), link_write("b"))
    for name in ("a", "b"):
        store.save_authorization(name, response(at=time.time()), clock_now=time.time())
    leased = store.acquire_leases(["a", "b"], owner="K", ttl=30, now=time.time())
    assert [g.link_name for g in leased] == ["a", "b"]
    with statements_sent(store, monkeypatch) as sent:
        link = store.get_link("a")
        secret = store.read_secret("a", "clientSecret")
        assert link is not None and link.spec["clientId"] == "client-a" and secret is not None
        assert store.read_secret("a", "privateKey") is None  # absent then: absent in the same snapshot
        assert sent == []  # the lease transaction brought them
        assert store.get_link("a") is not None and len(sent) == 1  # a link is answered ahead once
        add_links(store, link_write("c"))  # an apply through this store drops the read-ahead
        sent.clear()
        assert store.get_link("b") is not None and len(sent) == 1
        store.release_lease("a", owner="K")
        store.release_lease("b", owner="K")
        monkeypatch.setattr(read_ahead, "READ_AHEAD_SECONDS", 0.0)
        store.acquire_leases(["a"], owner="K", ttl=30, now=time.time())
        sent.clear()
        assert store.read_secret("a", "clientSecret") is not None and len(sent) == 1  # expired: read again
