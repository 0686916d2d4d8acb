"""Security headers on every response of ``linkctl serve`` (pages, callback, API, health, metrics).

:data:`HEADERS` are added to every response by :class:`reconciler.server.edge.Edge` (one
header merge on the token API's hot path). The Content-Security-Policy allows scripts and
styles from this origin only — never inline script, never ``unsafe-inline`` — and no
framing (``frame-ancestors 'none'``). A page whose form is redirected to a provider (the
link page's Authorize) sets its own policy through :func:`content_security_policy`,
naming that provider's origin in ``form-action`` (browsers apply ``form-action`` to the
redirect after a submission); the middleware keeps a policy a response already carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from starlette.responses import Response

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

R = TypeVar("R", bound="Response")
CSP_HEADER = b"content-security-policy"


def origin_of(url: str | None) -> str | None:
    """The ``scheme://host[:port]`` of an absolute http(s) URL (a CSP source), or None."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    if any(c in parts.netloc for c in " ;,'\"\\"):
        return None  # nothing that could end a CSP directive or source list
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(form_action: Iterable[str] = ()) -> str:
    """The policy of every page: this origin's scripts and styles only, no framing, no inline code."""
    targets = " ".join(["'self'", *dict.fromkeys(o for o in form_action if o)])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        f" form-action {targets}; frame-ancestors 'none'; base-uri 'none'"
    )


HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (CSP_HEADER, content_security_policy().encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # for browsers older than frame-ancestors
    (b"cross-origin-opener-policy", b"same-origin"),
)


def add_headers(response: R) -> R:
    """``response`` (a Starlette response) with the headers it lacks: for answers made outside the
    middleware (the last-resort 500 handler runs outside every middleware)."""
    for name, value in HEADERS:
        response.headers.setdefault(name.decode("ascii"), value.decode("ascii"))
    return response
