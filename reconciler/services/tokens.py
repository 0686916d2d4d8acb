"""The fresh-token use case of ``linkctl token`` (and later the server's token endpoint).

Starts fast: a token that is fresh enough is returned without importing the HTTP
client; only a refresh builds one, through the factory, and through the keeper's lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.domain.access_token import AccessToken
    from reconciler.domain.clock import Clock  # (datetime: needed only for `token -o json`)
    from reconciler.oauth.client import TokenClient
    from reconciler.settings import Settings
    from reconciler.store.base import Store
    from reconciler.store.grants import Grant

DEFAULT_HTTP_TIMEOUT = 10.0


def ready_access_token(
    settings: Settings,
    name: str,
    *,
    min_valid: float,
    notice: Callable[[str], None],
    clock: Clock = time.time,
) -> tuple[AccessToken, float] | None:
    """A stored access token valid for ``min_valid`` s, and when that was checked; None: use the store.

    Read without opening the store in full where the backend can (``linkctl token`` with a
    fresh token, the common case, then starts in about two thirds of the time). None means
    anything else — a token too old, no token, no such link, a store to create or migrate —
    and :func:`fresh_access_token` on the opened store decides, with its usual messages.
    """
    from reconciler.store import read_ready_access_token

    token = read_ready_access_token(settings, name, notice=notice)
    now = clock()
    left = None if token is None else token.valid_for(now)
    if token is None or left is None or left < min_valid:
        return None
    return token, now


def fresh_access_token(
    store: Store,
    name: str,
    *,
    min_valid: float,
    wait: float,
    client_factory: Callable[[float], TokenClient],
    clock: Clock = time.time,
) -> tuple[Grant, float]:
    """A grant whose access token is valid for at least ``min_valid`` s, and when that was checked.

    ``client_factory(http_timeout)`` is called only when a refresh is needed; every
    client it built is closed before returning.
    """
    # The timing rules only: the lease protocol (and httpx) is imported for a refresh.
    from reconciler.keeper.timing import KeeperPolicy

    now = clock()
    grant = stored_token(store, name, min_valid=min_valid, now=now)
    if grant is None:
        from reconciler.keeper.fresh import fresh_token

        policy = KeeperPolicy(lease_ttl=3 * DEFAULT_HTTP_TIMEOUT, http_timeout=DEFAULT_HTTP_TIMEOUT)
        clients: list[TokenClient] = []

        def factory() -> TokenClient:
            clients.append(client_factory(policy.http_timeout))
            return clients[-1]

        try:
            grant = fresh_token(
                store, name, min_valid=min_valid, client=factory, policy=policy, wait_timeout=wait
            )
        finally:
            for client in clients:
                client.close()
        now = clock()
    assert grant is not None and grant.access_token is not None
    return grant, now


def stored_token(store: Store, name: str, *, min_valid: float, now: float) -> Grant | None:
    """The stored grant if its access token is valid for ``min_valid`` s at ``now`` (no request, no lease)."""
    from reconciler.keeper.timing import access_valid_for

    grant = store.get_grant(name, with_tokens=True)
    left = None if grant is None else access_valid_for(grant, now)
    if grant is None or grant.access_token is None or left is None or left < min_valid:
        return None
    return grant


def token_json(grant: Grant | AccessToken, now: float) -> dict[str, Any]:
    """The ``token -o json`` object: the access token, its type and when it expires."""
    from reconciler.domain.clock import iso_time

    assert grant.access_token is not None
    expires_at = grant.access_expires_at
    return {
        "access_token": grant.access_token.reveal(),
        "token_type": grant.token_type or "Bearer",
        "expires_at": iso_time(expires_at),
        "expires_in": None if expires_at is None else max(0, int(expires_at - now)),
    }
