"""Operations endpoints of ``linkctl serve``: ``/healthz``, ``/readyz``, ``/metrics``, and the notifier.

:func:`routes` is what :func:`reconciler.server.app.create_app` mounts; the handlers find
the process's :class:`Operations` in the context (``ctx.extras["operations"]``, made by
:meth:`Operations.for_context`); :class:`~reconciler.server.edge.Edge` counts the token
API's answers by status. One
:class:`Operations` per process holds the :class:`~reconciler.server.metrics.Metrics`
registry, the status-webhook :class:`~reconciler.services.notify.NotifierThread`
(started and stopped with the app) and a store connection per request thread for the
scrape and the readiness check. None of the three endpoints needs a session or key, and
none answers with anything secret.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.errors import LinkctlError
from reconciler.server.metrics import CONTENT_TYPE, Metrics, StoreSnapshot
from reconciler.services.notify import NotifierThread, NotifyPolicy

if TYPE_CHECKING:
    from reconciler.keeper import Outcome, TokenClientLike
    from reconciler.server.context import ServerContext
    from reconciler.store.base import Store

__all__ = ["Operations", "operations_of", "routes"]
OPERATIONS = "operations"  # the key in ServerContext.extras

# Nothing here may be cached by a proxy: a stale "ready" is worse than none.
_NO_STORE = {"Cache-Control": "no-store"}


class Operations:
    """Metrics, readiness and the notifier of one ``serve`` process."""

    def __init__(
        self,
        store_factory: Callable[[], Store],
        *,
        actor: str,
        policy: NotifyPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``store_factory`` opens a store (one per thread: SQLite connections are per thread)."""
        self._factory = store_factory
        self._local = threading.local()
        self._opened: list[Store] = []
        self._lock = threading.Lock()
        self.clock = clock
        self.metrics = Metrics(self._snapshot, clock=clock)
        self.notifier = NotifierThread(
            store_factory, actor=actor, policy=policy, observe=self.metrics.observe_notification
        )

    @classmethod
    def for_context(cls, ctx: ServerContext) -> Operations:
        """The operations of a ``serve`` process (``LINKCTL_NOTIFY_*`` read now: a bad one stops start-up)."""
        import os

        from reconciler.settings import process_actor
        from reconciler.store import open_store

        settings, notice = ctx.settings, ctx.notice

        def factory() -> Store:
            # Never create or migrate: serve did that at start-up; a vanished store stays missing.
            return open_store(settings, notice=notice or _quiet, create=False)

        return cls(
            factory,
            actor=process_actor(os.environ),
            policy=NotifyPolicy.from_env(os.environ),
            clock=ctx.clock,
        )

    # -- hooks for the rest of the server ------------------------------------------------
    def observe_request(self, status: int) -> None:
        """Count one token API answer (``server.edge.Edge`` calls it once per ``/v1/`` response)."""
        self.metrics.observe_request(status)

    def keeper_observer(self) -> Callable[[Outcome], None]:
        """``Keeper(observe=...)`` for ``serve --keeper``: refreshes by outcome."""
        return self.metrics.observe_outcome

    def timed_client(self, client: TokenClientLike) -> TokenClientLike:
        """The in-process keeper's token client with its refreshes timed (latency histogram)."""
        return self.metrics.timed(client)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the status-webhook notifier (the app's start-up)."""
        self.notifier.start()

    def stop(self) -> None:
        """Stop the notifier and close the stores opened for requests (the app's shutdown)."""
        self.notifier.stop()
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            with contextlib.suppress(Exception):  # another thread's SQLite connection
                store.close()

    # -- the store, per request thread ---------------------------------------------------
    def store(self) -> Store:
        """This thread's store (opened on first use)."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._factory()
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def forget_store(self) -> None:
        """Drop this thread's store after a failure, so the next request opens a new one."""
        store = getattr(self._local, "store", None)
        self._local.store = None
        if store is not None:
            with self._lock:
                if store in self._opened:
                    self._opened.remove(store)
            with contextlib.suppress(Exception):
                store.close()

    def _snapshot(self) -> StoreSnapshot:
        try:
            store = self.store()
            return StoreSnapshot(store.link_states(), store.delivery_backlog(), self.clock())
        except Exception:
            self.forget_store()
            raise

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """(ready, the JSON answer): the store answers and is at this linkctl's schema."""
        try:
            status = self.store().schema_status()
        except Exception as error:  # unreachable, gone, unreadable: not ready, never a 500
            self.forget_store()
            return False, {"status": "not_ready", "reason": _reason(error)}
        problem = status.problem()
        if problem is not None:
            return False, {"status": "not_ready", "reason": problem, "schema_version": status.version}
        return True, {"status": "ready", "schema_version": status.version}


def _reason(error: Exception) -> str:
    """An error in words for an answer: linkctl's message and fix, else only the type (no internals)."""
    if isinstance(error, LinkctlError):
        return f"{error.message}; {error.hint}" if error.hint else error.message
    return f"the store failed ({type(error).__name__})"


def _quiet(text: str) -> None:
    import logging

    logging.getLogger("linkctl.server").info(text)


def operations_of(request: Request) -> Operations:
    """The process's :class:`Operations` from a request."""
    from reconciler.server.context import context_of

    operations: Operations = context_of(request).extras[OPERATIONS]
    return operations


_operations = operations_of


def healthz(request: Request) -> Response:
    """``GET /healthz``: alive (answers without touching the store)."""
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


def readyz(request: Request) -> Response:
    """``GET /readyz``: 200 when the store is reachable and its schema current, else 503 with why."""
    ready, body = _operations(request).readiness()
    return JSONResponse(body, status_code=200 if ready else 503, headers=_NO_STORE)


def metrics(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text exposition (503 when the store cannot be read)."""
    try:
        text = _operations(request).metrics.render()
    except Exception as error:
        return JSONResponse(
            {
                "error": "store_unavailable",
                "message": f"cannot read the store for /metrics: {_reason(error)}",
            },
            status_code=503,
            headers={"Retry-After": "5", **_NO_STORE},
        )
    return Response(text, media_type=CONTENT_TYPE, headers=_NO_STORE)


def routes() -> list[Route]:
    """The operations routes (mounted by ``create_app``)."""
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET", "HEAD"]),
    ]
