"""The store's status-webhook API: sealed targets, changes enqueued once, leased deliveries.

Part of the store contract suite (runs once per backend); the delivery loop on top of it
is tested against a real HTTP receiver in tests/integration/test_notify_webhooks.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from reconciler.domain.grants import GrantStatus
from reconciler.domain.notify import NOTIFIED_STATUSES, NotifyTargetDecl, target_origin
from reconciler.secrets import Secret
from reconciler.store.base import Store
from reconciler.store.notifications import StatusChange
from tests.support.fakes import FakeClock, add_links, link_write, response

URL = "https://hooks.example.com/services/T0/B0/tokenpart"


def _decl(url: str = URL, secret: str = "k" * 32) -> NotifyTargetDecl:
    return NotifyTargetDecl(url=Secret(url), secret=Secret(secret), origin=target_origin(url))


def _render(change: StatusChange) -> str:
    return json.dumps({"link": change.link, "old": change.old, "new": change.new})


def _detect(store: Store, clock: FakeClock, targets: list[str]) -> list[StatusChange]:
    return store.record_status_changes(
        now=clock(), targets=targets, render=_render, announced=NOTIFIED_STATUSES
    )


def _fail(store: Store, clock: FakeClock, name: str, status: GrantStatus) -> None:
    grant = store.acquire_lease(name, owner="t", ttl=30, now=clock())
    assert grant is not None
    store.record_failure(
        name,
        owner="t",
        expected_version=grant.token_version,
        status=status,
        error_class=str(status),
        message="invalid_grant: the refresh token was revoked",
        retry_at=None,
        lost_response=False,
        now=clock(),
    )


def test_targets_are_sealed_replaced_and_unchanged_is_no_write(store: Store, clock: FakeClock) -> None:
    assert store.notify_targets() == []
    assert store.put_notify_targets([_decl()], actor="alice", now=clock()) is True
    assert store.put_notify_targets([_decl()], actor="alice", now=clock()) is False
    (target,) = store.notify_targets()
    assert target.url.reveal() == URL and target.secret.reveal() == "k" * 32
    assert target.origin == "https://hooks.example.com"
    assert "tokenpart" not in target.id
    assert store.put_notify_targets([_decl(secret="n" * 32)], actor="alice", now=clock()) is True
    (rotated,) = store.notify_targets()
    assert rotated.id == target.id and rotated.secret.reveal() == "n" * 32
    events = [e for e in store.list_events() if e.action == "notify.targets_updated"]
    assert len(events) == 2 and "tokenpart" not in json.dumps([e.detail for e in events])
    assert store.put_notify_targets([], actor="alice", now=clock()) is True
    assert store.notify_targets() == []


def test_first_sight_is_a_baseline_and_each_change_is_enqueued_once(store: Store, clock: FakeClock) -> None:
    add_links(store, link_write("a"), link_write("b"))
    store.save_authorization("a", response(at=clock()), clock_now=clock())
    assert _detect(store, clock, ["t1", "t2"]) == []  # baseline: nothing announced
    assert store.claim_deliveries(owner="o", now=clock(), lease_ttl=30, limit=10) == []
    _fail(store, clock, "a", GrantStatus.NEEDS_AUTHORIZATION)
    clock.advance(1)
    (change,) = _detect(store, clock, ["t1", "t2"])
    assert (change.link, change.old, change.new) == ("a", "healthy", "needs_authorization")
    assert change.state.last_error and "revoked" in change.state.last_error
    assert _detect(store, clock, ["t1", "t2"]) == []  # already announced
    claimed = store.claim_deliveries(owner="o", now=clock(), lease_ttl=30, limit=10)
    assert sorted(d.target for d in claimed) == ["t1", "t2"]
    assert json.loads(claimed[0].body) == {"link": "a", "old": "healthy", "new": "needs_authorization"}
    assert store.delivery_backlog() == 2


def test_four_detectors_at_once_enqueue_a_change_once(
    store: Store, open_: Callable[[], Store], clock: FakeClock
) -> None:
    add_links(store, link_write("a"))
    store.save_authorization("a", response(at=clock()), clock_now=clock())
    _detect(store, clock, ["t"])
    _fail(store, clock, "a", GrantStatus.CONFIGURATION_ERROR)
    barrier = threading.Barrier(4)
    found: list[int] = []

    def look() -> None:
        mine = open_()  # a connection per thread, as every process has its own
        try:
            barrier.wait()
            found.append(len(_detect(mine, clock, ["t"])))
        finally:
            mine.close()

    threads = [threading.Thread(target=look) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(found) == [0, 0, 0, 1]
    assert store.delivery_backlog() == 1


def test_refreshing_is_not_announced_and_deleted_links_are_forgotten(store: Store, clock: FakeClock) -> None:
    add_links(store, link_write("a"))
    store.save_authorization("a", response(at=clock()), clock_now=clock())
    _detect(store, clock, ["t"])
    grant = store.acquire_lease("a", owner="o", ttl=30, now=clock())
    assert grant is not None
    store.mark_in_flight("a", owner="o", token_version=grant.token_version, now=clock())
    assert store.get_grant("a").status == GrantStatus.REFRESHING  # type: ignore[union-attr]
    assert _detect(store, clock, ["t"]) == []
    with store.write(expected_serial=None, actor="t") as tx:
        tx.delete_link("a")
    assert _detect(store, clock, ["t"]) == []
    add_links(store, link_write("a"))  # the same name again: a new baseline, not a change
    assert _detect(store, clock, ["t"]) == []


def test_a_leased_delivery_is_claimed_by_one_holder_until_it_expires(store: Store, clock: FakeClock) -> None:
    add_links(store, link_write("a"))
    _detect(store, clock, ["t"])
    store.save_authorization("a", response(at=clock()), clock_now=clock())
    (change,) = _detect(store, clock, ["t"])
    assert change.new == "healthy"
    (mine,) = store.claim_deliveries(owner="one", now=clock(), lease_ttl=30, limit=10)
    assert store.claim_deliveries(owner="two", now=clock(), lease_ttl=30, limit=10) == []
    clock.advance(31)  # "one" died: its lease ends
    (theirs,) = store.claim_deliveries(owner="two", now=clock(), lease_ttl=30, limit=10)
    assert theirs.id == mine.id
    done = dict(actor="t", link="a", detail={"target": "https://h"})
    assert store.finish_delivery(mine.id, owner="one", now=clock(), **done) is False  # fenced out
    assert store.finish_delivery(
        theirs.id, owner="two", now=clock(), error="HTTP 500", retry_at=clock() + 10, **done
    )
    assert store.claim_deliveries(owner="two", now=clock(), lease_ttl=30, limit=10) == []
    clock.advance(10)
    (again,) = store.claim_deliveries(owner="two", now=clock(), lease_ttl=30, limit=10)
    assert again.attempts == 1
    assert store.finish_delivery(again.id, owner="two", now=clock(), **done)
    assert store.delivery_backlog() == 0
    assert store.list_events(link="a")[0].action == "notify.delivered"


def test_giving_up_removes_the_row_with_an_audit_event(store: Store, clock: FakeClock) -> None:
    add_links(store, link_write("a"))
    _detect(store, clock, ["t"])
    store.save_authorization("a", response(at=clock()), clock_now=clock())
    _detect(store, clock, ["t"])
    (row,) = store.claim_deliveries(owner="o", now=clock(), lease_ttl=30, limit=10)
    assert store.finish_delivery(
        row.id, owner="o", now=clock(), actor="t", link="a", detail={"attempts": 12}, error="x", give_up=True
    )
    assert store.delivery_backlog() == 0
    event = store.list_events(link="a")[0]
    assert event.action == "notify.given_up" and event.detail == {"attempts": 12}
