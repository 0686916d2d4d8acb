"""Audit events the keeper writes: who acted (:func:`process_actor`) and status changes."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from reconciler import settings
from reconciler.errors import LinkctlError, ProviderError

if TYPE_CHECKING:
    from reconciler.store.base import Store

__all__ = ["process_actor", "record_status_change"]

log = logging.getLogger("linkctl.keeper")


def process_actor() -> str:
    """Who an audit event of this process names (see :func:`reconciler.settings.process_actor`)."""
    return settings.process_actor(os.environ)


def record_status_change(
    store: Store, name: str, old: str, new: str, error: LinkctlError | None, *, now: float
) -> None:
    """Audit a failed refresh that moved a link to another status (never a token or a raw body)."""
    if old == new:
        return
    from reconciler.store.base import Event

    detail: dict[str, object] = {"old_status": str(old), "new_status": str(new)}
    if error is not None:
        detail["error"] = type(error).__name__
        if isinstance(error, ProviderError):
            detail["error_class"] = error.error_class
            if error.oauth_error:
                detail["oauth_error"] = error.oauth_error
            if error.status_code is not None:
                detail["http_status"] = error.status_code
    try:
        store.add_event(Event("grant.status_changed", name, process_actor(), detail, at=now))
    except LinkctlError as failure:  # the refresh outcome is stored; the audit line must not undo it
        log.warning("%s: cannot record the status change: %s", name, failure.message)
