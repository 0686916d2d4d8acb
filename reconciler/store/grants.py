"""Grants: the tokens of a link and the bookkeeping that keeps them fresh.

:class:`GrantStore` is the part of the store interface that OAuth flows and the
keeper use. Invariants (DESIGN.md §5): one refresh in flight per link (a lease
with an expiry longer than the HTTP timeout), every token write conditional on
``token_version`` (fencing), a rotated refresh token committed before anything
else, and the old refresh token kept when a response carries none.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

from reconciler.secrets import Secret

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



class GrantStore(abc.ABC):
    """Grant operations every backend implements."""

    @abc.abstractmethod
    def get_grant(self, name: str, *, with_tokens: bool = False) -> Grant | None:
        """The grant of a link; tokens are decrypted only when asked for."""

    @abc.abstractmethod
    def list_grants(self) -> list[Grant]:
        """All grants without tokens."""
