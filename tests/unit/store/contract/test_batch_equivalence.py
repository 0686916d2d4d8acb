"""Each backend's batch lease writes give exactly what its per-link writes give, row for row.

The keeper's batches (one transaction per call) are written for speed: SQLite runs the
per-row statements in one transaction, PostgreSQL one set-based statement per batch. The
per-link loops of ``GrantStore`` are the reference. Each seeded scenario mixes free links,
leases held by another owner, expired leases left in flight, this owner's own leases,
unknown and repeated names, stale token versions, leases that ran out before the mark,
links taken over before the commit, and failures recorded beside commits. It runs on two
stores built the same way, once through the backend's batch methods and once through the
reference, and every answer and every stored row must agree. A repeated name is an exact
copy or, for commits, the same link at the version before or after, anywhere in the batch
(written as one statement per item would write them; the keeper never repeats a name).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.store import grants
from reconciler.store.base import Store
from reconciler.store.grants import FailureRecord, TokenCommit
from tests.support.fakes import FakeClock, add_links, link_write, response
from tests.support.stores import PerLinkBatches, StoreBackend

NAMES = [f"link-{i}" for i in range(10)]
SCENARIOS = 30


@pytest.fixture
def two_stores(
    open_: Callable[..., Store], store_backend: StoreBackend, tmp_path: Path
) -> Callable[[], tuple[Store, Store]]:
    """Opens pairs of fresh stores of the backend: (its batch methods, the per-link reference)."""
    count = 0

    def fresh() -> Store:
        nonlocal count
        count += 1
        return open_(state_url=store_backend.make_url(tmp_path / f"store-{count}"))

    return lambda: (fresh(), cast(Store, PerLinkBatches(fresh())))


def _scenario(store: Store, seed: int) -> list[object]:
    """Run one seeded scenario on ``store``; every answer and the final rows, comparable."""
    rng = random.Random(seed)
    random.seed(seed)  # the jitter of the schedule written by save_authorization
    clock = FakeClock()
    add_links(store, *(link_write(name) for name in NAMES))
    for name in NAMES:
        store.save_authorization(name, response(f"at-{name}", f"rt-{name}", at=clock()), clock_now=clock())
    states = {name: rng.choice(("free", "held", "crashed", "own")) for name in NAMES}
    for name in NAMES:  # short leases first: they expire before the batch
        if states[name] == "crashed":
            dead = store.acquire_lease(name, owner="dead", ttl=5, now=clock())
            assert dead is not None
            store.mark_in_flight(name, owner="dead", token_version=dead.token_version, now=clock())
    clock.advance(10)
    for name in NAMES:
        if states[name] in ("held", "own"):
            store.acquire_lease(name, owner="other" if states[name] == "held" else "K", ttl=30, now=clock())
    wanted = rng.sample(NAMES, rng.randint(1, len(NAMES)))
    wanted += rng.sample(wanted, min(len(wanted), rng.randint(0, 2))) + ["ghost"] * rng.randint(0, 1)
    rng.shuffle(wanted)
    answers: list[object] = []

    leased = store.acquire_leases(wanted, owner="K", ttl=30, now=clock())
    answers.append([(g.link_name, g.token_version, g.lost_response, g.lease_owner) for g in leased])
    clock.advance(31 if rng.random() < 0.2 else 1)  # sometimes K's leases run out before the mark
    items = [(g.link_name, g.token_version + (1 if rng.random() < 0.15 else 0)) for g in leased]
    items += rng.sample(items, min(len(items), rng.randint(0, 1)))
    items += [(name, 1) for name in NAMES if states[name] == "held" and rng.random() < 0.3]
    answers.append(_messages(store.mark_in_flight_many(items, owner="K", now=clock(), ttl=30)))

    if rng.random() < 0.5:  # K stalls; another keeper takes some links over and commits first
        clock.advance(31)
        for g in rng.sample(leased, min(len(leased), rng.randint(0, 3))):
            taken = store.acquire_lease(g.link_name, owner="B", ttl=30, now=clock())
            if taken is not None:
                store.commit_tokens(
                    g.link_name,
                    owner="B",
                    expected_version=taken.token_version,
                    response=response(f"at-B-{g.link_name}", f"rt-B-{g.link_name}", at=clock()),
                    now=clock(),
                    next_refresh_at=clock() + 60,
                )
    failed = [g for g in leased if rng.random() < 0.3]
    commits = [
        TokenCommit(
            g.link_name,
            g.token_version,
            response(
                f"at-{g.link_name}-2", f"rt-{g.link_name}-2" if rng.random() < 0.8 else None, at=clock()
            ),
            clock() + 50,
        )
        for g in leased
        if g not in failed
    ]
    commits += rng.sample(commits, min(len(commits), rng.randint(0, 1)))
    for c in rng.sample(commits, min(len(commits), rng.randint(0, 2))):  # again, at another version
        again = dataclasses.replace(
            c,
            expected_version=c.expected_version + rng.choice((-1, 1)),
            response=response(f"at-{c.name}-3", f"rt-{c.name}-3", at=clock()),
        )
        commits.insert(rng.randint(0, len(commits)), again)
    answers.append(_messages(store.commit_tokens_many(commits, owner="K", now=clock())))
    failures = [
        FailureRecord(
            g.link_name,
            g.token_version,
            rng.choice((GrantStatus.TRANSIENT_ERROR, GrantStatus.NEEDS_AUTHORIZATION)),
            "provider",
            f"failed: {g.link_name}",
            clock() + 30,
            rng.random() < 0.5,
        )
        for g in failed
    ]
    failures += rng.sample(failures, min(len(failures), rng.randint(0, 1)))
    answers.append(_messages(store.record_failures_many(failures, owner="K", now=clock())))
    answers.append(_rows(store))
    return answers


def _messages(results: list[grants.LeaseLost | None]) -> list[str | None]:
    return [None if r is None else r.message for r in results]


def _rows(store: Store) -> list[object]:
    """Every grant as stored (tokens revealed: their sealed bytes differ by nonce), and the schedule."""
    out: list[object] = []
    for listed in store.list_grants():
        grant = store.get_grant(listed.link_name, with_tokens=True)
        assert grant is not None
        fields = dataclasses.asdict(dataclasses.replace(grant, access_token=None, refresh_token=None))
        del fields["link_uid"]  # random per store
        tokens = [t.reveal() if t is not None else None for t in (grant.access_token, grant.refresh_token)]
        out.append((sorted(fields.items()), tokens))
    out.sort(key=repr)
    out.append(store.next_due_at())
    return out


@pytest.mark.parametrize("seed", range(SCENARIOS))
def test_batch_writes_equal_the_per_link_writes(
    two_stores: Callable[[], tuple[Store, Store]], seed: int
) -> None:
    batch, per_link = two_stores()
    assert _scenario(batch, seed) == _scenario(per_link, seed)
