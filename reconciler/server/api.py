"""The token API: ``/v1/links``, ``/v1/links/{name}``, ``/v1/links/{name}/token``.

Link keys only (``Authorization: Bearer``); errors are JSON ``{"error", "message"}`` with
401 (no or bad key), 403 (key not allowed, or an admin key), 409 (a human must act:
authorize, credentials, configuration), 422 (``min_valid`` longer than the provider's
tokens live), 503 (provider or store unavailable, with ``Retry-After``). A key asking for
a link its patterns do not name gets the same 403 as for a link that does not exist.

A fresh stored token is answered on the event loop from its thread's store connection;
a refresh runs in the thread pool through :func:`reconciler.services.tokens.fresh_access_token`,
the single-flight lease path of ``linkctl token``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from reconciler.domain.grants import Grant
from reconciler.errors import (
    ConflictError,
    GrantError,
    LinkctlError,
    ProviderConfigError,
    StateError,
    TokenLifetimeTooShort,
    TransientProviderError,
    UnknownLink,
)
from reconciler.server.auth import link_key
from reconciler.server.context import ServerContext, context_of
from reconciler.services import apikeys
from reconciler.services.apikeys import KeyRefused

log = logging.getLogger("linkctl.server")

DEFAULT_MIN_VALID = 60.0
MAX_MIN_VALID = 86_400.0
REFRESH_WAIT = 30.0  # how long a request waits for another process's refresh lease
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


class ApiError(Exception):
    """An API refusal: HTTP status, stable ``error`` code, message, extra headers and fields."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Compact JSON with ``no-store`` caching (answers may hold tokens)."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(
        body, status_code=status, media_type="application/json", headers={**NO_STORE, **(headers or {})}
    )


def error_response(error: ApiError) -> Response:
    """An :class:`ApiError` as its JSON body."""
    return json_response(
        {"error": error.error, "message": error.message, **error.extra}, error.status, error.headers
    )


def not_allowed(name: str) -> ApiError:
    """The one answer for a link the key may not read and for a link that does not exist."""
    return ApiError(
        403, "forbidden", f"this API key may not read a link named {name[:100]!r} (or there is none)"
    )


def _retry_after(seconds: float | None, default: float) -> dict[str, str]:
    value = default if seconds is None or not math.isfinite(seconds) else seconds
    return {"retry-after": str(max(1, math.ceil(value)))}


def from_error(error: Exception, name: str | None = None) -> ApiError:
    """A service error as an API refusal (messages never hold secrets: errors.py's rule)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, KeyRefused):
        headers = {"www-authenticate": 'Bearer realm="linkctl"'} if error.status == 401 else {}
        code = "unauthorized" if error.status == 401 else "forbidden"
        return ApiError(error.status, code, error.message, headers=headers, extra={"reason": error.reason})
    if isinstance(error, UnknownLink):
        return not_allowed(name or "")
    if isinstance(error, TokenLifetimeTooShort):
        return ApiError(
            422,
            "token_lifetime_too_short",
            error.message.replace("--min-valid", "min_valid"),
            extra={"token_lifetime": round(error.lifetime), "min_valid": error.min_valid},
        )
    if isinstance(error, GrantError):
        return ApiError(409, "needs_authorization", error.message)
    if isinstance(error, ProviderConfigError):
        return ApiError(409, "configuration_error", error.message)
    if isinstance(error, TransientProviderError):
        return ApiError(
            503, "provider_unavailable", error.message, headers=_retry_after(error.retry_after, 30)
        )
    if isinstance(error, ConflictError):
        return ApiError(503, "busy", error.message, headers=_retry_after(None, 2))
    if isinstance(error, StateError):
        return ApiError(503, "store_unavailable", error.message, headers=_retry_after(None, 5))
    if isinstance(error, LinkctlError):
        return ApiError(500, error.error_code, error.message)
    # Only the type: a library's message may quote input, and input may hold a secret.
    log.error("internal error answering a request: %s", type(error).__name__)
    return ApiError(500, "internal_error", "internal error; see the server's log")


Endpoint = Callable[[Request], Awaitable[Response]]


def api_endpoint(handler: Callable[[ServerContext, Request], Awaitable[Any]]) -> Endpoint:
    """Wrap a handler: authenticate errors and service errors become JSON refusals."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(context_of(request), request)
        except Exception as error:
            return error_response(from_error(error, request.path_params.get("name")))
        return result if isinstance(result, Response) else json_response(result)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def parse_min_valid(request: Request) -> float:
    """``min_valid`` from the query: seconds from 0 to a day (default 60)."""
    values = request.query_params.getlist("min_valid")
    if not values:
        return DEFAULT_MIN_VALID
    if len(values) > 1:
        raise ApiError(400, "invalid_request", "min_valid given more than once")
    from reconciler.settings import parse_number

    try:
        return parse_number(values[0], maximum=MAX_MIN_VALID)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"min_valid {exc}") from None


def _unknown_params(request: Request, allowed: frozenset[str]) -> None:
    extra = sorted(set(request.query_params) - allowed)
    if extra:
        raise ApiError(400, "invalid_request", f"unknown query parameter {extra[0][:40]!r}")


async def get_token(ctx: ServerContext, request: Request) -> Response:
    """``GET /v1/links/{name}/token``: an access token valid for at least ``min_valid`` s."""
    from reconciler.services.tokens import stored_token

    record = link_key(ctx, request)
    name = request.path_params["name"]
    _unknown_params(request, frozenset({"min_valid"}))
    min_valid = parse_min_valid(request)
    if not apikeys.allows(record, name):
        raise not_allowed(name)
    now = ctx.clock()
    grant = stored_token(ctx.store(), name, min_valid=min_valid, now=now)
    if grant is None:
        grant = await run_in_threadpool(_refresh, ctx, name, min_valid)
    assert grant is not None and grant.access_token is not None
    from reconciler.domain.clock import iso_time

    return json_response(
        {
            "access_token": grant.access_token.reveal(),
            "token_type": grant.token_type or "Bearer",
            "expires_at": iso_time(grant.access_expires_at, zulu=True),
            "scope": grant.scope,
        }
    )


def _refresh(ctx: ServerContext, name: str, min_valid: float) -> Grant:
    """The lease path of ``linkctl token`` in a pool thread, with that thread's store."""
    from reconciler.services.tokens import fresh_access_token

    grant, _ = fresh_access_token(
        ctx.store(),
        name,
        min_valid=min_valid,
        wait=REFRESH_WAIT,
        client_factory=ctx.token_client,
        clock=ctx.clock,
    )
    return grant


async def list_links(ctx: ServerContext, request: Request) -> Any:
    """``GET /v1/links``: the status of every link the key may read (no secrets)."""
    record = link_key(ctx, request)
    _unknown_params(request, frozenset())

    def views() -> list[dict[str, Any]]:
        from reconciler.services.views import link_view

        store = ctx.store()
        grants = {g.link_name: g for g in store.list_grants()}
        return [
            link_view(link, grants.get(link.name))
            for link in store.list_links()
            if apikeys.allows(record, link.name)
        ]

    return {"links": await run_in_threadpool(views)}


async def get_link(ctx: ServerContext, request: Request) -> Any:
    """``GET /v1/links/{name}``: one link's status and spec, secrets shown as sealed."""
    record = link_key(ctx, request)
    name = request.path_params["name"]
    _unknown_params(request, frozenset())
    if not apikeys.allows(record, name):
        raise not_allowed(name)

    def view() -> dict[str, Any]:
        from reconciler.services.views import detailed_view

        store = ctx.store()
        link = store.get_link(name)
        if link is None:
            raise not_allowed(name)
        return detailed_view(store, link)

    return await run_in_threadpool(view)


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the API's OpenAPI 3.1 description."""
    from reconciler.server.openapi import schema

    return json_response(schema(), headers={"cache-control": "public, max-age=300"})


def routes() -> list[BaseRoute]:
    """The token API's routes."""
    return [
        Route("/v1/links", api_endpoint(list_links), methods=["GET"]),
        Route("/v1/links/{name}", api_endpoint(get_link), methods=["GET"]),
        Route("/v1/links/{name}/token", api_endpoint(get_token), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
