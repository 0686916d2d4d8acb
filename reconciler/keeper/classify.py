"""Classification of a failed token request into a grant status ("errors classified" in docs/testing.md).

The kind of failure is one of the error classes of :mod:`reconciler.errors`; the status
stored for it and the ``error_class`` recorded with it both follow from that class, so
the errors and the grant statuses stay one vocabulary.
"""

from __future__ import annotations

from reconciler.domain.clock import iso_time
from reconciler.domain.grants import Grant, GrantStatus
from reconciler.errors import (
    GrantError,
    LinkctlError,
    ProviderConfigError,
    ProviderError,
    ResponseLost,
    StateError,
    TransientProviderError,
)

__all__ = ["classify", "failure_kind", "failure_message"]

# The grant status that each kind of failure leaves behind.
_STATUS_OF: dict[type[ProviderError], GrantStatus] = {
    TransientProviderError: GrantStatus.TRANSIENT_ERROR,
    GrantError: GrantStatus.NEEDS_AUTHORIZATION,
    ProviderConfigError: GrantStatus.CONFIGURATION_ERROR,
}


def failure_kind(error: LinkctlError, *, client_credentials: bool) -> type[ProviderError]:
    """The error class a failed token request counts as: transient, grant gone, or configuration."""
    if isinstance(error, TransientProviderError):  # ResponseLost included
        return TransientProviderError
    if isinstance(error, GrantError):
        # Client credentials have no grant a human could renew: the registration is wrong.
        return ProviderConfigError if client_credentials else GrantError
    if isinstance(error, ProviderConfigError | StateError):
        return ProviderConfigError
    if isinstance(error, ProviderError):  # an unclassified provider answer: try again later
        return TransientProviderError
    return ProviderConfigError


def classify(error: LinkctlError, *, client_credentials: bool) -> tuple[GrantStatus, str]:
    """``(grant status, error_class)`` for a failed token request."""
    kind = failure_kind(error, client_credentials=client_credentials)
    return _STATUS_OF[kind], kind.error_class


def failure_message(error: LinkctlError, grant: Grant, *, name: str, now: float) -> str:
    """The status message of a failed attempt; explains an invalid_grant after a lost response."""
    text = error.message
    if error.hint:
        text = f"{text} (hint: {error.hint})"
    if isinstance(error, ResponseLost):
        return (
            f"no response to the token request sent at {iso_time(now)}: the provider may have consumed"
            f" the refresh token; will retry ({text})"
        )
    if isinstance(error, GrantError) and grant.lost_response:
        sent = grant.details.get("lost_response_sent_at") or grant.in_flight_since
        return (
            f"the refresh token was probably consumed by a lost response (sent at {iso_time(sent)});"
            f" the provider now rejects it: {error.message}."
            f" Run `linkctl authorize {name}` to authorize the link again"
        )
    if isinstance(error, GrantError):
        return f"{text}; run `linkctl authorize {name}` to authorize the link again"
    return text
