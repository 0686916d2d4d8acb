"""When a token is refreshed next and when a grant is due: the refresh schedule (docs/testing.md).

It sits in the domain, below the store, because two layers compute it: the store when
first tokens are saved (``GrantStore.save_authorization``) and on every grant write, when
it stores :func:`due_at` for its due query, and the keeper after every refresh and when
it re-checks a leased grant. :mod:`reconciler.keeper.timing` re-exports it beside the
keeper's other timing rules, so the keeper reads every rule from one module.
"""

from __future__ import annotations

import random

from reconciler.domain.grants import GrantStatus

__all__ = [
    "KEEPALIVE",
    "KEEPALIVE_INACTIVITY_FRACTION",
    "LATEST_MARGIN_FRACTION",
    "LATEST_MARGIN_MAX",
    "REFRESH_AT_MAX",
    "REFRESH_AT_MIN",
    "UNKNOWN_EXPIRY_CLIENT_CREDENTIALS",
    "due_at",
    "keepalive_interval",
    "next_refresh_time",
]

REFRESH_AT_MIN = 0.75  # refresh between 75 % and 85 % of the token lifetime (jittered) ...
REFRESH_AT_MAX = 0.85
LATEST_MARGIN_MAX = 60.0  # ... and never later than expiry - min(60 s, 10 % of the lifetime)
LATEST_MARGIN_FRACTION = 0.10
KEEPALIVE = 7 * 86400.0  # refresh at least weekly: provider inactivity limits (90/180 days) never bite
KEEPALIVE_INACTIVITY_FRACTION = 0.25  # ... and at most a quarter of a preset's inactivity limit
UNKNOWN_EXPIRY_CLIENT_CREDENTIALS = 3600.0  # re-fetch tokens of unknown lifetime hourly


def keepalive_interval(inactivity_days: float | None = None) -> float:
    """Longest gap between refreshes of a grant whose access token lifetime is long or unknown."""
    if inactivity_days:
        return min(KEEPALIVE, inactivity_days * 86400.0 * KEEPALIVE_INACTIVITY_FRACTION)
    return KEEPALIVE


def next_refresh_time(
    received_at: float,
    expires_in: float | None,
    *,
    has_refresh_token: bool,
    client_credentials: bool = False,
    inactivity_days: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """When to refresh a token obtained at ``received_at`` (None: it cannot be refreshed, ever).

    Known lifetime L: at ``uniform(0.75, 0.85) * L``, capped at ``L - min(60 s, 0.1 L)`` and
    at the keep-alive interval. Unknown lifetime: at the keep-alive interval (jittered down
    by up to 10 %). Without a refresh token (and not client credentials) the grant is due
    at expiry, so the keeper can say it needs authorization; never, if it does not expire.
    """
    rand = rng or random
    keepalive = keepalive_interval(inactivity_days) * rand.uniform(0.9, 1.0)
    refreshable = has_refresh_token or client_credentials
    if expires_in is None or expires_in <= 0:
        if not refreshable:
            return None
        if client_credentials and not has_refresh_token:
            return received_at + UNKNOWN_EXPIRY_CLIENT_CREDENTIALS * rand.uniform(0.9, 1.0)
        return received_at + keepalive
    if not refreshable:
        return received_at + expires_in
    lifetime = float(expires_in)
    at = lifetime * rand.uniform(REFRESH_AT_MIN, REFRESH_AT_MAX)
    latest = lifetime - min(LATEST_MARGIN_MAX, LATEST_MARGIN_FRACTION * lifetime)
    return received_at + min(at, latest, keepalive)


# Statuses that wait for a person (credentials in the declaration, a fixed configuration).
_NEVER_DUE = frozenset({GrantStatus.PENDING_CREDENTIALS, GrantStatus.CONFIGURATION_ERROR})


def due_at(
    *,
    status: str,
    retry_at: float | None,
    next_refresh_at: float | None,
    in_flight_since: float | None,
    has_access_token: bool,
    client_credentials: bool,
) -> float | None:
    """When a grant becomes due for a refresh or a first token (0: at once; None: never by itself).

    A request left in flight (its answer lost) and a client-credentials link without tokens
    need no human: due at once, or at the retry time. A grant waiting for credentials, a
    fixed configuration or an authorization is never due; any other at its retry time,
    else its scheduled refresh. The store keeps the result per grant (``grants.due_at``)
    and selects on it; a held lease delays it until the lease expires.
    """
    if status in _NEVER_DUE:
        return None
    if in_flight_since is not None or (client_credentials and not has_access_token):
        return 0.0 if retry_at is None else retry_at
    if status == GrantStatus.NEEDS_AUTHORIZATION:
        return None
    return retry_at if retry_at is not None else next_refresh_at
