"""What one server process shares between requests: settings, store connections, key cache, clock.

:class:`ServerContext` lives on ``app.state.ctx``. Store connections are per thread (a
SQLite connection belongs to its thread): the event loop's thread answers fresh tokens
from its own connection, the thread pool's threads open theirs on first use, and all are
closed at shutdown. Nothing here is the truth about anything: the store is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import Clock
from reconciler.services.apikeys import KeyCache
from reconciler.services.tokens import DEFAULT_HTTP_TIMEOUT

if TYPE_CHECKING:
    from starlette.requests import Request

    from reconciler.oauth.client import TokenClient
    from reconciler.settings import Settings
    from reconciler.store.base import Store

# How often one process re-reads a key it has seen: revocation reaches every process within this.
KEY_CACHE_TTL = 1.0
# last_used_at is written at most this often per key and process (a write per request would
# serialize every token read behind the store's write lock).
TOUCH_INTERVAL = 60.0


@dataclasses.dataclass
class ServerContext:
    """Per-process state of ``linkctl serve`` (see the module docstring)."""

    settings: Settings
    clock: Clock = time.time
    log_format: str = "text"
    key_cache: KeyCache = dataclasses.field(default_factory=lambda: KeyCache(ttl=KEY_CACHE_TTL))
    notice: Any = None  # Callable[[str], None] for store-opening notes; None: stderr
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # for the pages/ops parts
    _local: threading.local = dataclasses.field(default_factory=threading.local, repr=False)
    _opened: list[Store] = dataclasses.field(default_factory=list, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _touched: dict[str, float] = dataclasses.field(default_factory=dict, repr=False)

    def store(self) -> Store:
        """This thread's store connection (opened on first use, closed by :meth:`close`)."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self.open_store()
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def open_store(self) -> Store:
        """A new store connection the caller owns (for threads of their own, e.g. the keeper)."""
        from reconciler.store import open_store

        return open_store(self.settings, notice=self.notice or _quiet)

    def token_client(self, timeout: float = DEFAULT_HTTP_TIMEOUT) -> TokenClient:
        """A token client for one refresh (the caller closes it), with the store's discovery cache."""
        from reconciler.oauth.client import TokenClient
        from reconciler.store import MetadataCacheOpener

        return TokenClient(
            timeout=timeout, keepalive=False, metadata_cache=MetadataCacheOpener(self.settings)
        )

    def should_touch(self, key_id: str, now: float) -> bool:
        """Whether this process should record a use of ``key_id`` now (at most every TOUCH_INTERVAL)."""
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and 0 <= now - last < TOUCH_INTERVAL:
                return False
            if len(self._touched) > 100_000:
                self._touched.clear()
            self._touched[key_id] = now
            return True

    def close(self) -> None:
        """Close every store connection opened through :meth:`store`."""
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            # A connection of a thread that is gone: nothing to keep.
            with contextlib.suppress(Exception):
                store.close()


def context_of(request: Request) -> ServerContext:
    """The process's :class:`ServerContext` from a request."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


def _quiet(text: str) -> None:
    import logging

    logging.getLogger("linkctl.server").info(text)
