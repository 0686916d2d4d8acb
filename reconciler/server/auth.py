"""API-key authentication of the token API: ``Authorization: Bearer <key>``.

Looks keys up through the process's short-lived :class:`~reconciler.services.apikeys.KeyCache`
(revocation reaches every process within its TTL) and records a key's use at most once a
minute per process, off the request's path. An admin key is refused here: admin keys
log in to the pages, link keys read tokens (see :mod:`reconciler.services.apikeys`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.services.apikeys import KeyRefused

if TYPE_CHECKING:
    from starlette.requests import Request

    from reconciler.server.context import ServerContext
    from reconciler.store.api_keys import ApiKeyRecord


def bearer_key(request: Request) -> str | None:
    """The key of an ``Authorization: Bearer`` header (None when absent or another scheme)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def link_key(ctx: ServerContext, request: Request) -> ApiKeyRecord:
    """The live link key of a request; :class:`KeyRefused` (401/403) otherwise."""
    now = ctx.clock()
    record = ctx.key_cache.verify(ctx.store(), bearer_key(request), now)
    if record.admin:
        raise KeyRefused(
            "an admin key is for the pages, not the token API; create a key without --admin"
            " (`linkctl apikey create --links PATTERN`)",
            reason="admin_only",
            status=403,
        )
    request.scope.setdefault("state", {})["api_key_id"] = record.id
    if ctx.should_touch(record.id, now):
        _touch_later(ctx, record.id, now)
    return record


def _touch_later(ctx: ServerContext, key_id: str, now: float) -> None:
    """Record the key's use in a thread of its own: a write must not stall the event loop."""
    import threading

    def touch() -> None:
        try:
            with ctx.open_store() as store:
                store.touch_api_key(key_id, now=now)
        except Exception:  # a busy store: the next interval records it
            pass

    threading.Thread(target=touch, name="apikey-touch", daemon=True).start()
