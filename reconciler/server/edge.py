"""The one middleware of ``linkctl serve``: security headers, the token API's request count, the access line.

:class:`Edge` does in one pure ASGI layer what three middlewares (security headers, the
request count, the access log) did before, with one wrapper around ``send`` instead of
three: on the token API every layer's closure and calls cost about 3 µs of a request of
30-40 µs (docs/benchmarks.md).

It also gives ``GET /v1/links/{name}/token`` a lane of its own: a request the token route
matches goes straight to that route's endpoint, skipping Starlette's exception middleware
and the router's walk (the endpoint catches its own errors and answers them as JSON). Every
other request takes the app's full stack. Both lanes get the same headers, count and line.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.routing import Match, Route

from reconciler.server.security import HEADERS

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from reconciler.server.access_log import AccessLines
    from reconciler.server.ops import Operations

_SECURITY_NAMES = frozenset(name for name, _ in HEADERS)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus each security header they lack (a response's own policy wins)."""
    present = {name.lower() for name, _ in headers if name.lower() in _SECURITY_NAMES}
    if not present:
        return [*headers, *HEADERS]
    return [*headers, *((name, value) for name, value in HEADERS if name not in present)]


class Edge:
    """ASGI middleware: security headers on every response, ``/v1/`` answers counted, one access line each."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        operations: Operations | None = None,
        access_log: AccessLines | None = None,
        fast_route: Route | None = None,
    ) -> None:
        self.app = app
        self.operations = operations
        self.access_log = access_log
        self.fast_route = fast_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer through the fast lane or the app; decorate the start message; log when done."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        size = 0
        counted = self.operations is not None and scope.get("path", "").startswith("/v1/")

        async def edge_send(message: Message) -> None:
            nonlocal status, size
            kind = message["type"]
            if kind == "http.response.body":
                size += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                message["headers"] = with_security_headers(list(message.get("headers", ())))
                if counted:
                    assert self.operations is not None
                    self.operations.observe_request(int(status))
            await send(message)

        app = self.app
        route = self.fast_route
        if route is not None and scope.get("method") == "GET":
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                app = route.app
        try:
            await app(scope, receive, edge_send)
        finally:
            if self.access_log is not None:
                self.access_log.record(scope, status, size, time.perf_counter() - start)
