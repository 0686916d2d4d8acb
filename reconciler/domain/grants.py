"""Grants: the tokens of a link and the bookkeeping that keeps them fresh, as plain data.

:class:`GrantStatus` is the one vocabulary of grant states: the store persists its
values, ``linkctl list/show`` and the status page print them, and the keeper's
classification of errors produces them. :class:`TokenCommit` and :class:`FailureRecord`
are the fenced writes the keeper hands to the store.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.domain.access_token import AccessToken

if TYPE_CHECKING:
    from reconciler.domain.tokens import TokenResponse
    from reconciler.secrets import Secret

__all__ = ["PARKED_STATUSES", "AccessToken", "FailureRecord", "Grant", "GrantStatus", "TokenCommit"]


class GrantStatus(enum.StrEnum):
    """The state of a link's grant (values are stored and shown: never rename them)."""

    PENDING_CREDENTIALS = "pending_credentials"  # clientId/clientSecret not declared yet
    NEEDS_AUTHORIZATION = "needs_authorization"  # no grant yet, or invalid_grant: an admin must authorize
    HEALTHY = "healthy"
    REFRESHING = "refreshing"  # a lease is held and a request is in flight
    TRANSIENT_ERROR = "transient_error"  # retry at ``retry_at``
    CONFIGURATION_ERROR = "configuration_error"  # invalid_client & co: fix the registration


# Statuses the keeper never retries on its own: a human must act first.
PARKED_STATUSES = frozenset(
    {GrantStatus.PENDING_CREDENTIALS, GrantStatus.NEEDS_AUTHORIZATION, GrantStatus.CONFIGURATION_ERROR}
)


@dataclasses.dataclass(frozen=True)
class Grant:
    """Tokens and refresh bookkeeping of one link (tokens only when asked for)."""

    link_name: str
    link_uid: str
    status: GrantStatus
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
    """One link's refreshed tokens, for ``GrantStore.commit_tokens_many``."""

    name: str
    expected_version: int
    response: TokenResponse
    next_refresh_at: float | None


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """One link's failed attempt, for ``GrantStore.record_failures_many``."""

    name: str
    expected_version: int
    status: GrantStatus
    error_class: str
    message: str
    retry_at: float | None
    lost_response: bool
