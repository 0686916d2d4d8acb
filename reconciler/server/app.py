"""The Starlette application of ``linkctl serve``: routes, error answers, the keeper, the access log.

:func:`create_app` assembles the routes of :mod:`~reconciler.server.api`,
:mod:`~reconciler.server.ops` and :mod:`~reconciler.server.pages` around one
:class:`~reconciler.server.context.ServerContext` (``app.state.ctx``). With ``keeper=True``
the token keeper runs in a thread of this process for the app's lifetime (the same
leases as ``linkctl keeper``, so it is safe next to other keepers); ``app.state.keeper``
is the running :class:`~reconciler.keeper.Keeper` (None without).

``linkctl serve`` starts granian with :func:`app_from_environment` as an import string
(the CLI edge may not import this one): its options come in ``LINKCTL_SERVE_OPTIONS``.
The app runs in granian's worker process, the keeper (with ``--keeper``) in a thread there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from reconciler.domain.clock import Clock
from reconciler.server import api, ops, pages
from reconciler.server.access_log import AccessLines
from reconciler.server.context import ServerContext
from reconciler.server.edge import Edge
from reconciler.server.security import add_headers
from reconciler.settings import Settings

OPTIONS_ENV = "LINKCTL_SERVE_OPTIONS"
log = logging.getLogger("linkctl.server")


def _keeper_thread(ctx: ServerContext, workers: int, stop: threading.Event, ready: dict[str, Any]) -> None:
    """Run the keeper until ``stop`` (its own store and HTTP client; one store per worker)."""
    from reconciler import keeper
    from reconciler.oauth.client import TokenClient
    from reconciler.store import MetadataCacheOpener

    policy = keeper.KeeperPolicy()
    client = TokenClient(
        timeout=policy.http_timeout,
        keepalive=True,
        max_connections=max(workers, 1),
        metadata_cache=MetadataCacheOpener(ctx.settings),
    )
    try:
        with ctx.open_store() as store:
            operations = ctx.extras[ops.OPERATIONS]  # /metrics: outcomes and refresh latency
            runner = keeper.Keeper(
                store,
                operations.timed_client(client),
                store_factory=ctx.open_store,
                workers=workers,
                policy=policy,
                clock=ctx.clock,
                observe=operations.keeper_observer(),
            )
            ready["keeper"] = runner
            ready["started"].set()
            runner.run_forever(stop)
    except Exception as error:  # logged, not raised: the API keeps answering from the store
        log.error("the keeper stopped: %s", getattr(error, "message", type(error).__name__))
    finally:
        ready["started"].set()
        client.close()


async def _http_error(request: Request, exc: Exception) -> Response:
    """404/405 and other HTTP errors: JSON on the API's paths, text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/v1/"):
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return api.error_response(
            api.ApiError(exc.status_code, error, str(exc.detail), headers=dict(exc.headers or {}))
        )
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception: logged by type only, answered without detail."""
    log.error("internal error answering %s %s: %s", request.method, request.url.path, type(exc).__name__)
    if request.url.path.startswith("/v1/"):
        error = api.error_response(
            api.ApiError(500, "internal_error", "internal error; see the server's log")
        )
        return add_headers(error)  # this handler runs outside every middleware
    return add_headers(PlainTextResponse("internal error; see the server's log", status_code=500))


def create_app(
    settings: Settings,
    *,
    keeper: bool = False,
    keeper_workers: int = 4,
    log_format: str = "text",
    clock: Clock = time.time,
    access_log: bool = True,
) -> Starlette:
    """The ASGI application of ``linkctl serve`` over the store of ``settings``."""
    ctx = ServerContext(settings=settings, clock=clock, log_format=log_format)
    lines = AccessLines(log_format=log_format) if access_log else None
    operations = ctx.extras[ops.OPERATIONS] = ops.Operations.for_context(ctx)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        operations.start()  # status webhooks, on their own thread
        if keeper:
            ready: dict[str, Any] = {"started": threading.Event()}
            thread = threading.Thread(
                target=_keeper_thread, args=(ctx, keeper_workers, stop, ready), name="keeper", daemon=True
            )
            thread.start()
            ready["started"].wait(30)
            app.state.keeper = ready.get("keeper")
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(60)
            operations.stop()
            ctx.close()
            if lines is not None:
                lines.flush()

    routes = [*api.routes(), *ops.routes(), *pages.routes()]
    edge = Middleware(
        Edge,
        operations=operations,
        access_log=lines,
        fast_route=api.token_route(routes),
    )
    app = Starlette(
        routes=routes,
        middleware=[edge],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.keeper = None
    return app


def configure_logging(log_format: str) -> None:
    """Server logs on stderr: access lines as they are, other lines with level and logger (JSON or text)."""
    import sys

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            if record.name == "linkctl.access":
                return message
            if log_format == "json":
                return json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                        "level": record.levelname.lower(),
                        "logger": record.name,
                        "message": message,
                    },
                    separators=(",", ":"),
                )
            return f"{record.levelname.lower()}: {record.name}: {message}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter())
    for name in ("linkctl",):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def app_from_environment(env: Mapping[str, str] | None = None) -> Starlette:
    """The app as ``linkctl serve`` configured it (settings from ``LINKCTL_*``, options as JSON)."""
    env = os.environ if env is None else env
    options = json.loads(env.get(OPTIONS_ENV) or "{}")
    log_format = str(options.get("log_format", "text"))
    configure_logging(log_format)
    return create_app(
        Settings.from_env(env),
        keeper=bool(options.get("keeper", False)),
        keeper_workers=int(options.get("keeper_workers", 4)),
        log_format=log_format,
    )
