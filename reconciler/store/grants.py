"""Grants: the tokens of a link and the bookkeeping that keeps them fresh.

:class:`GrantStore` is the part of the store interface that OAuth flows and the
keeper use (``oauth.flows`` calls :meth:`GrantStore.save_authorization`;
``oauth.keeper`` and ``linkctl token`` use the lease methods). The refresh
schedule (:func:`next_refresh_time`) lives here, below the keeper, because the
store computes it too when first tokens are saved.

Invariants (docs/testing.md): one refresh in flight per link (a lease with an expiry
longer than the HTTP timeout), every token write conditional on
``token_version`` (fencing), a rotated refresh token committed before anything
else, and the old refresh token kept when a response carries none.
"""

from __future__ import annotations

import abc
import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.errors import ConflictError, StateError
from reconciler.secrets import Secret

_T = TypeVar("_T")

if TYPE_CHECKING:
    from reconciler.oauth.client import TokenResponse

# Grant statuses, shown by `linkctl list/show` and the status page.
PENDING_CREDENTIALS = "pending_credentials"  # clientId/clientSecret not declared yet
NEEDS_AUTHORIZATION = "needs_authorization"  # no grant yet, or invalid_grant: an admin must authorize
HEALTHY = "healthy"
REFRESHING = "refreshing"  # a lease is held and a request is in flight
TRANSIENT_ERROR = "transient_error"  # retry at ``retry_at``
CONFIGURATION_ERROR = "configuration_error"  # invalid_client & co: fix the registration
GRANT_STATUSES = (
    PENDING_CREDENTIALS,
    NEEDS_AUTHORIZATION,
    HEALTHY,
    REFRESHING,
    TRANSIENT_ERROR,
    CONFIGURATION_ERROR,
)
# Statuses the keeper never retries on its own: a human must act first.
PARKED_STATUSES = (PENDING_CREDENTIALS, NEEDS_AUTHORIZATION, CONFIGURATION_ERROR)

# -- the refresh schedule (the invariants in docs/testing.md) ----------------------
REFRESH_AT_MIN = 0.75  # refresh between 75 % and 85 % of the token lifetime (jittered) ...
REFRESH_AT_MAX = 0.85
LATEST_MARGIN_MAX = 60.0  # ... and never later than expiry - min(60 s, 10 % of the lifetime)
LATEST_MARGIN_FRACTION = 0.10
KEEPALIVE = 7 * 86400.0  # refresh at least weekly: provider inactivity limits (90/180 days) never bite
KEEPALIVE_INACTIVITY_FRACTION = 0.25  # ... and at most a quarter of a preset's inactivity limit
UNKNOWN_EXPIRY_CLIENT_CREDENTIALS = 3600.0  # re-fetch tokens of unknown lifetime hourly


class LeaseLost(ConflictError):
    """A fenced write found another lease owner or a newer token version: nothing was written."""


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


@dataclasses.dataclass(frozen=True)
class Grant:
    """Tokens and refresh bookkeeping of one link (tokens only when asked for)."""

    link_name: str
    link_uid: str
    status: str
    token_version: int  # fencing counter: +1 on every token write
    access_token: Secret | None = None
    refresh_token: Secret | None = None
    has_refresh_token: bool = False
    token_type: str | None = None
    scope: str | None = None
    access_expires_at: float | None = None
    obtained_at: float | None = None  # first authorization
    last_refresh_at: float | None = None
    next_refresh_at: float | None = None
    retry_at: float | None = None
    attempts: int = 0  # consecutive failures
    last_error: str | None = None  # redacted text
    error_class: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    in_flight_since: float | None = None  # a refresh was sent and its answer not committed yet
    lost_response: bool = False  # an earlier refresh's response never arrived
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TokenCommit:
    """One link's refreshed tokens, for :meth:`GrantStore.commit_tokens_many`."""

    name: str
    expected_version: int
    response: TokenResponse
    next_refresh_at: float | None


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """One link's failed attempt, for :meth:`GrantStore.record_failures_many`."""

    name: str
    expected_version: int
    status: str
    error_class: str
    message: str
    retry_at: float | None
    lost_response: bool


class GrantStore(abc.ABC):
    """Grant operations every backend implements.

    SQLite implements the lease/fencing methods in
    :class:`~reconciler.store.sqlite_leases.SQLiteLeases`. Every write is conditional on
    ``owner`` (the lease) and ``token_version`` (fencing)
    and raises :class:`LeaseLost` when fenced out. Timestamps come from the caller's clock.
    """

    @abc.abstractmethod
    def get_grant(self, name: str, *, with_tokens: bool = False) -> Grant | None:
        """The grant of a link; tokens are decrypted only when asked for."""

    @abc.abstractmethod
    def list_grants(self) -> list[Grant]:
        """All grants without tokens."""

    # -- first tokens (oauth.flows) -------------------------------------------------
    @abc.abstractmethod
    def save_authorization(self, name: str, response: TokenResponse, *, clock_now: float) -> Grant:
        """Store first tokens (authorize, device or client-credentials): version +1, status healthy."""

    # -- scheduling and leases (oauth.keeper, linkctl token) ----------------------------
    @abc.abstractmethod
    def due_links(self, now: float, *, limit: int) -> list[str]:
        """Names of links to refresh or obtain now, most overdue first, whose lease is free."""

    @abc.abstractmethod
    def next_due_at(self) -> float | None:
        """The earliest time any link becomes due (None: nothing is scheduled)."""

    @abc.abstractmethod
    def acquire_lease(self, name: str, *, owner: str, ttl: float, now: float) -> Grant | None:
        """Take the refresh lease of a link (tokens decrypted); None while someone else holds it.

        A grant left in flight by a holder whose lease expired (a crash after the request
        was sent) comes back with ``lost_response=True``: its refresh token may be consumed.
        """

    @abc.abstractmethod
    def mark_in_flight(
        self, name: str, *, owner: str, token_version: int, now: float, ttl: float | None = None
    ) -> None:
        """Record durably that a token request is about to be sent (optionally renewing the lease)."""

    @abc.abstractmethod
    def commit_tokens(
        self,
        name: str,
        *,
        owner: str,
        expected_version: int,
        response: TokenResponse,
        now: float,
        next_refresh_at: float | None,
    ) -> Grant:
        """Store refreshed tokens (fenced) and release the lease in the same transaction."""

    @abc.abstractmethod
    def record_failure(
        self,
        name: str,
        *,
        owner: str,
        expected_version: int,
        status: str,
        error_class: str,
        message: str,
        retry_at: float | None,
        lost_response: bool,
        now: float,
    ) -> Grant:
        """Record a failed attempt (fenced), count it, and release the lease."""

    @abc.abstractmethod
    def release_lease(self, name: str, *, owner: str) -> bool:
        """Give up a lease without writing tokens; False if ``owner`` no longer held it."""

    # -- batches (the keeper) ----------------------------------------------------------
    # The defaults below loop over the single-link methods (one transaction per link).
    # SQLite overrides them with one transaction per call; the per-link semantics
    # (fencing, lost-response adoption, durability before release) are the same.
    def acquire_leases(self, names: Sequence[str], *, owner: str, ttl: float, now: float) -> list[Grant]:
        """Take the leases of several links (tokens decrypted); held or unknown links are left out."""
        out = []
        for name in dict.fromkeys(names):
            try:
                grant = self.acquire_lease(name, owner=owner, ttl=ttl, now=now)
            except StateError:  # deleted meanwhile
                grant = None
            if grant is not None:
                out.append(grant)
        return out

    def mark_in_flight_many(
        self, items: Sequence[tuple[str, int]], *, owner: str, now: float, ttl: float | None = None
    ) -> list[LeaseLost | None]:
        """:meth:`mark_in_flight` for ``(name, token_version)`` pairs; per item None or the fencing error."""
        return _each_fenced(
            items,
            lambda item: self.mark_in_flight(item[0], owner=owner, token_version=item[1], now=now, ttl=ttl),
        )

    def commit_tokens_many(
        self, commits: Sequence[TokenCommit], *, owner: str, now: float
    ) -> list[LeaseLost | None]:
        """:meth:`commit_tokens` for several links; per item None (committed) or the fencing error.

        Everything returned as committed is durable when this returns; a fenced-out link
        writes nothing and does not stop the others.
        """
        return _each_fenced(
            commits,
            lambda c: self.commit_tokens(
                c.name,
                owner=owner,
                expected_version=c.expected_version,
                response=c.response,
                now=now,
                next_refresh_at=c.next_refresh_at,
            ),
        )

    def record_failures_many(
        self, failures: Sequence[FailureRecord], *, owner: str, now: float
    ) -> list[LeaseLost | None]:
        """:meth:`record_failure` for several links; per item None (recorded) or the fencing error."""
        return _each_fenced(
            failures,
            lambda f: self.record_failure(
                f.name,
                owner=owner,
                expected_version=f.expected_version,
                status=f.status,
                error_class=f.error_class,
                message=f.message,
                retry_at=f.retry_at,
                lost_response=f.lost_response,
                now=now,
            ),
        )


def _each_fenced(items: Sequence[_T], write: Callable[[_T], object]) -> list[LeaseLost | None]:
    """Run one fenced write per item; per item None or the fencing error (the others go on)."""
    out: list[LeaseLost | None] = []
    for item in items:
        try:
            write(item)
            out.append(None)
        except LeaseLost as fenced:
            out.append(fenced)
    return out
