"""The link page's buttons: refresh a link now, revoke its tokens — through the keeper's own paths.

"Refresh now" is :func:`reconciler.keeper.refresh_link` with ``force`` (the same lease,
fencing and commit-before-release as the keeper daemon, so a keeper refreshing the same
link at the same moment is safe); "Revoke" is :func:`reconciler.keeper.revoke_grant`
(the lease held while the tokens are read and revoked, the grant then marked as needing
authorization). Nothing here is a second implementation: it picks the policy and the
actor, and turns the keeper's answers into what a page says.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import TYPE_CHECKING

from reconciler.domain.clock import Clock
from reconciler.errors import ConfigError

if TYPE_CHECKING:
    from reconciler.keeper.config import TokenClientLike
    from reconciler.store.base import Store

# One request at most, well inside a page's patience; the lease outlives it (invariant 3).
HTTP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class ActionResult:
    """What a button did: ok or not, and one sentence for the page (never a token)."""

    link: str
    ok: bool
    message: str


def _known(store: Store, name: str) -> None:
    if store.get_link(name) is None:
        raise ConfigError(f"no link named {name!r} in the store", hint="see the links list")


def refresh_now(
    store: Store, client: TokenClientLike, name: str, *, owner: str | None = None, clock: Clock = time.time
) -> ActionResult:
    """Refresh ``name`` now under its lease (skipped, and said so, while another process holds it)."""
    from reconciler import keeper

    _known(store, name)
    owner = owner or keeper.new_owner("serve")
    policy = keeper.KeeperPolicy(lease_ttl=3 * HTTP_TIMEOUT, http_timeout=HTTP_TIMEOUT)
    outcome = keeper.refresh_link(
        store, client, name, owner=owner, policy=policy, clock=clock, rng=random.Random(), force=True
    )
    if outcome.result in (keeper.REFRESHED, keeper.OBTAINED):
        return ActionResult(name, True, "tokens refreshed")
    if outcome.result == keeper.SKIPPED:
        return ActionResult(name, False, f"not refreshed: {outcome.message or 'skipped'}")
    status = f" (status: {outcome.status})" if outcome.status else ""
    return ActionResult(name, False, f"refresh failed{status}: {outcome.message or 'unknown error'}")


def revoke(store: Store, client: TokenClientLike, name: str, *, clock: Clock = time.time) -> ActionResult:
    """Revoke ``name``'s tokens at the provider (RFC 7009); the link then needs authorization."""
    from reconciler import keeper

    _known(store, name)
    result = keeper.revoke_grant(store, name, client, clock=clock)
    if result.revoked:
        kinds = " and ".join(t.replace("_", " ") for t in result.revoked_tokens)
        return ActionResult(name, True, f"revoked at the provider ({kinds}); the link needs authorization")
    if not result.attempted:
        return ActionResult(name, False, f"nothing revoked: {result.reason or result.error or 'no tokens'}")
    return ActionResult(name, False, f"revocation failed: {result.error or 'unknown error'}")
