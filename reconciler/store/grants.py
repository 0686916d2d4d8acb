"""Grants: the tokens of a link and the bookkeeping that keeps them fresh.

:class:`GrantStore` is the part of the store interface that OAuth flows and the
keeper use (``oauth.flows`` calls :meth:`GrantStore.save_authorization`;
``reconciler.keeper`` and ``linkctl token`` use the lease methods). The data types
(:class:`~reconciler.domain.grants.Grant`, its statuses, the batch records) live in
:mod:`reconciler.domain.grants`; they are re-exported here for the store's callers.

Invariants (docs/testing.md): one refresh in flight per link (a lease with an expiry
longer than the HTTP timeout), every token write conditional on
``token_version`` (fencing), a rotated refresh token committed before anything
else, and the old refresh token kept when a response carries none.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Container, Sequence
from typing import TYPE_CHECKING, TypeVar

from reconciler.domain.grants import AccessToken, FailureRecord, Grant, GrantStatus, TokenCommit
from reconciler.errors import ConflictError, StateError

__all__ = ["AccessToken", "FailureRecord", "Grant", "GrantStore", "LeaseLost", "TokenCommit"]

_T = TypeVar("_T")

if TYPE_CHECKING:
    from reconciler.domain.tokens import TokenResponse


class LeaseLost(ConflictError):
    """A fenced write found another lease owner or a newer token version: nothing was written."""


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

    def get_access_token(self, name: str) -> AccessToken | None:
        """The stored access token of a link (decrypted) with its type, scope and expiry; None: no grant.

        The refresh token is not read. Backends override this with one narrow query (the
        token API calls it on every request); this default goes through :meth:`get_grant`.
        """
        grant = self.get_grant(name, with_tokens=True)
        if grant is None:
            return None
        return AccessToken(
            link_name=grant.link_name,
            access_token=grant.access_token,
            token_type=grant.token_type,
            scope=grant.scope,
            access_expires_at=grant.access_expires_at,
        )

    @abc.abstractmethod
    def list_grants(self) -> list[Grant]:
        """All grants without tokens."""

    def list_grants_with_status(self, statuses: Collection[GrantStatus]) -> list[Grant]:
        """The grants (without tokens) whose status is one of ``statuses``, ordered by link name.

        The keeper's report asks for the few links that wait for a person; a backend may
        select them in its query instead of building every grant (this default filters).
        """
        wanted = frozenset(statuses)
        return [grant for grant in self.list_grants() if grant.status in wanted]

    # -- first tokens (oauth.flows) -------------------------------------------------
    @abc.abstractmethod
    def save_authorization(self, name: str, response: TokenResponse, *, clock_now: float) -> Grant:
        """Store first tokens (authorize, device or client-credentials): version +1, status healthy."""

    # -- scheduling and leases (the keeper, linkctl token) ----------------------------
    @abc.abstractmethod
    def due_links(self, now: float, *, limit: int) -> list[str]:
        """Names of links to refresh or obtain now, most overdue first, whose lease is free.

        Due means :func:`reconciler.domain.schedule.due_at`: a backend stores its result on
        every grant write that changes one of its inputs and only compares it here (not
        before a held lease expires), so no backend re-encodes the rule in its query language.
        Most overdue is the earliest stored due time (then the name), so a backend can read
        them in the order of an index on it and stop after ``limit``.
        """

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
        status: GrantStatus,
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


def rounds_of(names: Sequence[str], *, known: Container[str]) -> list[list[int]]:
    """Positions of the ``known`` names in rounds: round n holds each name's n-th position.

    A batch that names a link twice is written round after round, as one statement per
    item would write it (the keeper never does; the contract holds the stores to it).
    """
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in known:
            n = seen[name] = seen.get(name, -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(position)
    return rounds


def fenced_out(
    name: str, action: str, *, version: int, found: tuple[int, str | None] | None, owner: str
) -> LeaseLost:
    """The error of a fenced write that matched no row: ``found`` is the row's (version, lease owner) now."""
    if found is None:
        return LeaseLost(f"cannot {action} for link {name!r}: the link was deleted meanwhile")
    holder = "nobody" if found[1] is None else ("this owner" if found[1] == owner else "another owner")
    return LeaseLost(
        f"cannot {action} for link {name!r}: fenced out (expected token version {version},"
        f" found {found[0]}; lease held by {holder})",
        hint="another refresh won the race; its tokens are kept",
    )
