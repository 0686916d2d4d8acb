"""The keeper's event log: one ``refresh`` line per attempt (link, outcome, duration, next refresh; a
failure's class and fix), fed by the keeper's ``observe`` hook, so the keeper itself is unchanged.

The duration is the token request's, timed by a wrapper around the token client (keyed by
link name, per thread); the next refresh is read back from the store after the outcome.
Nothing here sees a token: the wrapper passes responses through, and a grant is read
without its tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.cli.logs import iso_time

if TYPE_CHECKING:
    from reconciler.keeper import Outcome
    from reconciler.store.base import Store

log = logging.getLogger("linkctl.keeper")

# What to do about a link in each status the keeper leaves it in after a failure.
FIXES = {
    "needs_authorization": "authorize the link again: `linkctl authorize NAME` (or the links page)",
    "configuration_error": "fix the client registration (client ID, secret): `linkctl doctor NAME`",
    "pending_credentials": "declare clientId and clientSecret, then apply",
    "transient_error": "none needed: retried with backoff; `linkctl doctor NAME` if it persists",
}


class TimedClient:
    """A token client that remembers how long each link's last token request took (this thread)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._local = threading.local()

    def _timed(self, name: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return call()
        finally:
            durations = getattr(self._local, "durations", None)
            if durations is None:
                durations = self._local.durations = {}
            durations[name] = time.monotonic() - started

    def refresh(self, config: Any, refresh_token: Any) -> Any:
        """Refresh grant, timed."""
        return self._timed(config.link, lambda: self._client.refresh(config, refresh_token))

    def client_credentials(self, config: Any) -> Any:
        """Client credentials grant, timed."""
        return self._timed(config.link, lambda: self._client.client_credentials(config))

    def took(self, name: str) -> float | None:
        """Seconds the last request for ``name`` on this thread took (forgotten once read)."""
        durations: dict[str, float] = getattr(self._local, "durations", None) or {}
        return durations.pop(name, None)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._client, attribute)


class RefreshLog:
    """The ``observe`` hook: logs each outcome at info (warning when it failed)."""

    def __init__(self, client: TimedClient, store_factory: Callable[[], Store]) -> None:
        self.client = client
        self._store_factory = store_factory
        self._local = threading.local()

    def _store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._store_factory()
        return store

    def __call__(self, outcome: Outcome) -> None:
        """Log one outcome (never raises: a log line must not break a refresh)."""
        try:
            self._log(outcome)
        except Exception as error:  # the store may be unreachable: say so without the event details
            log.warning("refresh", extra={"event": {"link": outcome.name, "outcome": outcome.result,
                                                    "log_error": type(error).__name__}})  # fmt: skip

    def _log(self, outcome: Outcome) -> None:
        took = self.client.took(outcome.name)
        grant = self._store().get_grant(outcome.name) if outcome.result != "skipped" else None
        event: dict[str, Any] = {
            "link": outcome.name,
            "outcome": outcome.result,
            "duration_ms": None if took is None else round(took * 1000, 1),
            "status": str(grant.status) if grant is not None else None,
            "next_refresh": iso_time(grant.next_refresh_at or grant.retry_at) if grant is not None else None,
        }
        if outcome.result == "failed":
            status = str(grant.status) if grant is not None else ""
            event["error_class"] = (grant.error_class if grant is not None else None) or status or "error"
            event["error"] = outcome.message  # the keeper's redacted status message
            event["fix"] = FIXES.get(status, "see `linkctl doctor NAME`").replace("NAME", outcome.name)
            log.warning("refresh", extra={"event": event})
        else:
            if outcome.result == "skipped":
                event["reason"] = outcome.message
            log.info("refresh", extra={"event": event})
