"""How far a request got, from httpcore's trace events (``extensions={"trace": ...}``).

:class:`reconciler.oauth.client.TokenClient` records the event names of each request
(never their payloads) to tell a request that never left from one whose answer was lost:
only the second may have used up a refresh token or a code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["opened_connection", "recorder", "request_sent"]

SENT_EVENT = "http11.send_request_body.complete"
CONNECT_PREFIX = "connection.connect_tcp."


def recorder(events: list[str]) -> Callable[[str, Mapping[str, Any]], None]:
    """An httpcore ``trace`` callback that records event names (never their payloads)."""

    def trace(name: str, info: Mapping[str, Any]) -> None:
        events.append(name)

    return trace


def request_sent(events: Sequence[str]) -> bool | None:
    """Whether the request body was completely written (None: the transport reported nothing).

    Only HTTP/1.1 events are understood; anything else (no events: a custom or mock
    transport; HTTP/2) is unknown, and callers then assume the request was sent.
    """
    if not any(e.startswith("http11.") or e.startswith(CONNECT_PREFIX) for e in events):
        return None
    if any(e.startswith("http2.") for e in events):
        return None
    return SENT_EVENT in events


def opened_connection(events: Sequence[str]) -> bool:
    """Whether the request opened a new connection (not one reused from the pool)."""
    return any(e.startswith(CONNECT_PREFIX) for e in events)
