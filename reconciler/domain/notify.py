"""Status webhooks as plain data: a declared target, and the origin it is shown by.

A webhook URL may itself be a credential (Slack-style URLs carry a token in their
path), so it travels as a :class:`~reconciler.secrets.Secret` like the signing key, is
sealed in the store, and is shown everywhere by :func:`target_origin` only.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from reconciler.secrets import Secret

__all__ = ["NOTIFIED_STATUSES", "NotifyTargetDecl", "target_origin"]

# "refreshing" lasts a second on every refresh: announcing it would turn each refresh
# into two webhooks. A link in it keeps the status it was last announced with.
NOTIFIED_STATUSES = frozenset(
    {
        "pending_credentials",
        "needs_authorization",
        "healthy",
        "transient_error",
        "configuration_error",
    }
)


@dataclasses.dataclass(frozen=True)
class NotifyTargetDecl:
    """One ``spec.notify`` entry as validation read it (URL and key never formatted)."""

    url: Secret
    secret: Secret
    origin: str  # scheme://host[:port], the only part of the URL ever shown
    url_encrypted: bool = False


def target_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what logs, events and metrics may name."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")
