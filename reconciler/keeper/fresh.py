"""``linkctl token``'s fresh-token path: an access token valid for at least ``--min-valid`` seconds.

A stored token that is fresh enough is returned without a request. Otherwise the
refresh goes through the lease like the keeper's (:func:`~reconciler.keeper.refresh.refresh_leased`),
or waits for the process that holds the lease and returns what it committed. This
module must stay cheap to import (``linkctl token`` starts with it): httpx and the
token client are built only when a request is really needed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.domain.clock import iso_time
from reconciler.domain.grants import PARKED_STATUSES, Grant, GrantStatus
from reconciler.domain.owners import new_owner
from reconciler.errors import (
    ConflictError,
    GrantError,
    LinkctlError,
    NeedsAuthorization,
    ProviderConfigError,
    ProviderError,
    ProviderUnavailable,
    TokenLifetimeTooShort,
    TransientProviderError,
    UnknownLink,
)
from reconciler.keeper.config import is_client_credentials
from reconciler.keeper.refresh import refresh_leased
from reconciler.keeper.report import OBTAINED, REFRESHED, SKIPPED
from reconciler.keeper.timing import KeeperPolicy, Now, Sleep, access_lifetime, access_valid_for
from reconciler.store.grants import LeaseLost

if TYPE_CHECKING:
    from reconciler.keeper.config import TokenClientLike
    from reconciler.store.base import Store

__all__ = ["fresh_token"]


def _raise_for_status(grant: Grant, name: str) -> None:
    """Refuse to refresh a parked grant: say what a human must do."""
    message = grant.last_error
    if grant.status == GrantStatus.CONFIGURATION_ERROR:
        raise ProviderConfigError(
            f"link {name!r} has a configuration error: {message or 'see linkctl show'}",
            hint="fix the client registration or spec, apply, then run `linkctl keeper --once`",
        )
    if grant.status == GrantStatus.PENDING_CREDENTIALS:
        raise GrantError(
            f"link {name!r} has no client credentials yet",
            hint="declare clientId/clientSecret and apply",
        )
    raise NeedsAuthorization(
        f"link {name!r} needs authorization: {message or 'it has not been authorized yet'}",
        hint=f"run `linkctl authorize {name}`",
    )


def _lifetime_too_short(name: str, lifetime: float, min_valid: float) -> TokenLifetimeTooShort:
    """The refusal when no refresh can give ``min_valid`` seconds: say how long tokens live."""
    return TokenLifetimeTooShort(
        f"link {name!r}: the provider's access tokens live {lifetime:.0f} s, shorter than"
        f" --min-valid {min_valid:g}",
        lifetime=lifetime,
        min_valid=min_valid,
        hint=f"ask for at most --min-valid {max(int(lifetime) - 1, 0)}, or configure longer-lived"
        " tokens at the provider",
    )


def _token_error(error: ProviderError, message: str) -> ProviderError:
    """A failed refresh as ``linkctl token`` reports it: the class carries the exit code scripts read."""
    if isinstance(error, GrantError):
        kind: type[ProviderError] = NeedsAuthorization
    elif isinstance(error, TransientProviderError):
        kind = ProviderUnavailable
    else:
        kind = type(error)
    return kind(message, hint=error.hint, oauth_error=error.oauth_error, retry_after=error.retry_after)


def _resolve(client: TokenClientLike | Callable[[], TokenClientLike]) -> TokenClientLike:
    """A client, or the client a factory builds (so httpx is imported only when needed)."""
    if hasattr(client, "refresh"):
        return client  # type: ignore[return-value]
    assert callable(client)
    return client()


def fresh_token(
    store: Store,
    name: str,
    *,
    min_valid: float,
    client: TokenClientLike | Callable[[], TokenClientLike],
    clock: Now = time.time,
    sleep: Sleep = time.sleep,
    policy: KeeperPolicy | None = None,
    wait_timeout: float = 60.0,
    rng: random.Random | None = None,
) -> Grant:
    """An access token valid for at least ``min_valid`` s (refreshing through the lease if needed).

    If another process holds the lease, poll until it has committed and return its
    token. Never refreshes in a loop: when the stored token's recorded lifetime, or that
    of a token refreshed during this call, is shorter than ``min_valid``, no refresh can
    help and :class:`TokenLifetimeTooShort` says how long the provider's tokens live.
    ``client`` may be a factory, so the HTTP client is only built when a request is
    really needed.
    """
    policy = policy or KeeperPolicy()
    rng = rng or random.Random()
    start = clock()
    grant = store.get_grant(name, with_tokens=True)
    if grant is None:
        raise UnknownLink(f"no link named {name!r} in the store", hint="run `linkctl list` to see links")

    def usable(g: Grant, now: float) -> bool:
        left = access_valid_for(g, now)
        if left is None or left <= 0:
            return False
        if left < min_valid and g.token_version != grant.token_version:
            # Refreshed meanwhile (by us or another process): as fresh as it gets when its
            # lifetime covers min_valid (the request's latency ate the rest); else say so.
            lifetime = access_lifetime(g)
            if lifetime is not None and lifetime >= min_valid:
                return True
            raise _lifetime_too_short(name, lifetime if lifetime is not None else left, min_valid)
        return left >= min_valid

    if usable(grant, start):
        return grant
    link = store.get_link(name)
    cc = link is not None and is_client_credentials(link)
    if grant.status in PARKED_STATUSES and not (cc and grant.access_token is None):
        _raise_for_status(grant, name)
    recorded = access_lifetime(grant) if grant.access_token is not None else None
    if recorded is not None and recorded < min_valid:
        raise _lifetime_too_short(name, recorded, min_valid)  # a refresh would only repeat it
    owner = new_owner("token")
    delay = 0.02
    deadline = start + wait_timeout
    for _ in range(100_000):  # bounded; the deadline ends it long before
        now = clock()
        leased = store.acquire_lease(name, owner=owner, ttl=policy.lease_ttl, now=now)
        if leased is not None:
            try:
                fresh_enough = usable(leased, now)
            except TokenLifetimeTooShort:
                store.release_lease(name, owner=owner)
                raise
            if fresh_enough:
                store.release_lease(name, owner=owner)
                return leased
            if leased.status in PARKED_STATUSES and not (cc and leased.access_token is None):
                store.release_lease(name, owner=owner)
                _raise_for_status(leased, name)
            attempt = refresh_leased(
                store, _resolve(client), leased, owner=owner, policy=policy, clock=clock, rng=rng
            )
            outcome, error = attempt.outcome, attempt.cause
            if outcome.result in (REFRESHED, OBTAINED):
                store.announce_work()  # its due time moved: idle keepers re-plan (PostgreSQL NOTIFY)
                fresh = store.get_grant(name, with_tokens=True)
                assert fresh is not None
                usable(fresh, clock())  # raises when even the new token is too short
                return fresh
            if outcome.result == SKIPPED and isinstance(error, LeaseLost):
                # Fenced out: another holder wrote newer tokens meanwhile; read them below.
                error = None
            if isinstance(error, LinkctlError):
                if isinstance(error, ProviderError):
                    raise _token_error(error, f"cannot refresh link {name!r}: {outcome.message or error}")
                raise error
            if error is not None or outcome.result != SKIPPED:
                raise ConflictError(f"cannot refresh link {name!r}: {outcome.message}")
        current = store.get_grant(name, with_tokens=True)
        if current is None:
            raise UnknownLink(f"link {name!r} was deleted meanwhile")
        if usable(current, now):
            return current
        if current.status in PARKED_STATUSES and current.token_version != grant.token_version:
            _raise_for_status(current, name)
        if now >= deadline:
            raise ConflictError(
                f"link {name!r}: another process has held the refresh lease for more than"
                f" {wait_timeout:g} s (owner {current.lease_owner},"
                f" until {iso_time(current.lease_expires_at)})",
                hint="try again; a crashed holder's lease expires by itself",
            )
        sleep(delay)
        delay = min(delay * 2, 0.25)
    raise ConflictError(f"link {name!r}: gave up waiting for the refresh lease")  # pragma: no cover
