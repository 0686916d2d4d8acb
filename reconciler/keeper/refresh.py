"""Refresh one link or a batch of links: take the leases, then run the one lease protocol."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reconciler.keeper.lease import Attempt, run_leased
from reconciler.keeper.report import SKIPPED, Outcome

if TYPE_CHECKING:
    from reconciler.domain.grants import Grant
    from reconciler.keeper.config import TokenClientLike
    from reconciler.keeper.timing import KeeperPolicy, Now, SendPace
    from reconciler.store.base import Store

__all__ = ["refresh_batch", "refresh_leased", "refresh_link"]

LEASE_HELD = "lease held by another process"


def refresh_batch(
    store: Store,
    client: TokenClientLike,
    names: Iterable[str],
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Now,
    rng: random.Random,
    pace: SendPace | None = None,
) -> list[Outcome]:
    """Refresh what is still due among ``names``: one transaction to lease them all, then the protocol.

    Links whose lease is held elsewhere are skipped; ``pace`` learns how long requests take.
    Returns one outcome per distinct name, in input order.
    """
    order = list(dict.fromkeys(names))
    leased = store.acquire_leases(order, owner=owner, ttl=policy.lease_ttl, now=clock())
    attempts = run_leased(
        store, client, leased, owner=owner, policy=policy, clock=clock, rng=rng, only_if_due=True, pace=pace
    )
    return [
        attempt.outcome if (attempt := attempts.get(name)) else Outcome(name, SKIPPED, message=LEASE_HELD)
        for name in order
    ]


def refresh_leased(
    store: Store,
    client: TokenClientLike,
    grant: Grant,
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Now,
    rng: random.Random,
) -> Attempt:
    """Refresh (or obtain) the tokens of one grant whose lease ``owner`` holds; always ends the lease."""
    attempts = run_leased(
        store, client, [grant], owner=owner, policy=policy, clock=clock, rng=rng, only_if_due=False
    )
    return attempts[grant.link_name]


def refresh_link(
    store: Store,
    client: TokenClientLike,
    name: str,
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Now,
    rng: random.Random,
    force: bool = False,
) -> Outcome:
    """Take the lease of one link and refresh it if it is (still) due; skipped if the lease is held."""
    grant = store.acquire_lease(name, owner=owner, ttl=policy.lease_ttl, now=clock())
    if grant is None:
        return Outcome(name, SKIPPED, message=LEASE_HELD)
    attempts = run_leased(
        store, client, [grant], owner=owner, policy=policy, clock=clock, rng=rng, only_if_due=not force
    )
    return attempts[name].outcome
