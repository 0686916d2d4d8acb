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

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from reconciler.domain.clock import iso_time
from reconciler.domain.grants import AccessToken, Grant
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
from reconciler.server.auth import bearer_from_header, link_key, link_key_of
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


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Compact JSON with ``no-store`` caching (answers may hold tokens)."""
    body = _ENCODER.encode(data).encode("utf-8")
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


def _unknown_params(request: Request, allowed: frozenset[str]) -> None:
    extra = sorted(set(request.query_params) - allowed)
    if extra:
        raise ApiError(400, "invalid_request", f"unknown query parameter {extra[0][:40]!r}")


@functools.lru_cache(maxsize=256)
def _min_valid_of(query: bytes) -> float:
    """``min_valid`` from a raw query string: seconds from 0 to a day (default 60); nothing else allowed.

    Cached by the raw query (clients send the same few; parsing cost 3-4 µs a request): only
    queries that parse are kept, and those hold nothing but ``min_valid``, never a secret.
    """
    if not query:
        return DEFAULT_MIN_VALID
    from urllib.parse import parse_qsl

    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    extra = sorted({k for k, _ in pairs} - {"min_valid"})
    if extra:
        raise ApiError(400, "invalid_request", f"unknown query parameter {extra[0][:40]!r}")
    if len(pairs) > 1:
        raise ApiError(400, "invalid_request", "min_valid given more than once")
    from reconciler.settings import parse_number

    try:
        return parse_number(pairs[0][1], maximum=MAX_MIN_VALID)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"min_valid {exc}") from None


def _read_token(
    ctx: ServerContext, scope: MutableMapping[str, Any], name: str, key: str | None
) -> tuple[AccessToken | None, float]:
    """Check the key and read the stored access token: the token if fresh enough (else None), and min_valid.

    Only the access token is read and decrypted (``Store.get_access_token``), never the
    refresh token: the answer holds nothing else, and the narrow read costs a third of a grant's.
    """
    record = link_key_of(ctx, scope, key)
    min_valid = _min_valid_of(scope.get("query_string", b""))
    if not apikeys.allows(record, name):
        raise not_allowed(name)
    stored = ctx.store().get_access_token(name)
    left = None if stored is None else stored.valid_for(ctx.clock())
    if left is None or left < min_valid:
        return None, min_valid
    return stored, min_valid


@functools.lru_cache(maxsize=1024)
def _expires_at(moment: float | None) -> str | None:
    """``expires_at`` of an answer (cached: many requests answer the same stored token)."""
    return iso_time(moment, zulu=True)


async def token_body(
    ctx: ServerContext, scope: MutableMapping[str, Any], name: str, key: str | None
) -> bytes:
    """The JSON answer of ``GET /v1/links/{name}/token``; raises what :func:`from_error` maps."""
    token: AccessToken | Grant | None
    if ctx.inline_reads:  # a local SQLite read takes microseconds: not worth a thread hop
        token, min_valid = _read_token(ctx, scope, name, key)
    else:  # a network store must not stall the event loop
        token, min_valid = await run_in_threadpool(_read_token, ctx, scope, name, key)
    if token is None:
        token = await run_in_threadpool(_refresh, ctx, name, min_valid)
    assert token.access_token is not None
    # The object spelled out (what _ENCODER would write, a third of its cost): every string
    # goes through the JSON string encoder, so nothing a provider sent can break out of it.
    expires_at = _expires_at(token.access_expires_at)
    return (
        f'{{"access_token":{_json_string(token.access_token.reveal())},'
        f'"token_type":{_json_string(token.token_type or "Bearer")},'
        f'"expires_at":{"null" if expires_at is None else _json_string(expires_at)},'
        f'"scope":{"null" if token.scope is None else _json_string(token.scope)}}}'
    ).encode()


_TOKEN_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
]


class TokenEndpoint:
    """``GET /v1/links/{name}/token`` as a plain ASGI app: the hot path skips Request/Response objects.

    The key check, the store read and the token's decryption are all there is per request;
    everything else (refusals, the refresh in the thread pool) is the same code as the other
    endpoints use.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: ServerContext = scope["app"].state.ctx
        name = scope["path_params"]["name"]
        key = None
        for header, value in scope["headers"]:
            if header == b"authorization":
                key = bearer_from_header(value.decode("latin-1"))
                break
        try:
            body = await token_body(ctx, scope, name, key)
        except Exception as error:
            await error_response(from_error(error, name))(scope, receive, send)
            return
        headers = [*_TOKEN_HEADERS, (b"content-length", str(len(body)).encode("ascii"))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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


def token_route(routes: list[BaseRoute]) -> Route:
    """The ``GET /v1/links/{name}/token`` route among ``routes`` (for the middleware's fast lane)."""
    return next(r for r in routes if isinstance(r, Route) and isinstance(r.endpoint, TokenEndpoint))


def routes() -> list[BaseRoute]:
    """The token API's routes."""
    return [
        # The token route first: it is the one that is called thousands of times a second.
        Route("/v1/links/{name}/token", TokenEndpoint(), methods=["GET"]),
        Route("/v1/links", api_endpoint(list_links), methods=["GET"]),
        Route("/v1/links/{name}", api_endpoint(get_link), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
