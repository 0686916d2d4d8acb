"""Admin sessions of the pages: log in with an admin key, look a cookie up, log out.

The cookie value is 256 random bits; the store keeps its SHA-256 and a sealed CSRF
secret per session, so any server process can check a cookie and a form's token.
A session ends at ``/logout``, when it expires, or when its API key is revoked or
expires (checked on every look-up, not only at log-in).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

from reconciler.domain.clock import Clock
from reconciler.secrets import Secret
from reconciler.services import apikeys

if TYPE_CHECKING:
    from reconciler.store.api_keys import ApiKeyRecord
    from reconciler.store.base import Store

SESSION_TTL = 8 * 3600.0  # a working day; log in again after that
COOKIE_BYTES = 32


def session_hash(cookie_value: str) -> str:
    """The stored form of a session cookie's value: SHA-256 (hex)."""
    return hashlib.sha256(cookie_value.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Session:
    """A live admin session (what a page handler may rely on)."""

    session_hash: str
    api_key: ApiKeyRecord
    csrf_secret: Secret  # for HMAC-derived form tokens; never sent as it is
    created_at: float
    expires_at: float


def login(
    store: Store, key: str | None, *, ttl: float = SESSION_TTL, clock: Clock = time.time
) -> tuple[Secret, Session]:
    """Start a session for an admin key: the cookie value (set once, never stored) and the session.

    Raises :class:`~reconciler.services.apikeys.KeyRefused` for a missing, unknown, revoked
    or expired key (401) or a link key (403).
    """
    record = apikeys.verify_admin(store, key, clock=clock)
    now = clock()
    cookie = Secret(secrets.token_urlsafe(COOKIE_BYTES))
    csrf = Secret(secrets.token_urlsafe(COOKIE_BYTES))
    hashed = session_hash(cookie.reveal())
    # A session never outlives its key.
    expires = now + ttl if record.expires_at is None else min(now + ttl, record.expires_at)
    store.put_session(hashed, api_key_id=record.id, csrf_secret=csrf, created_at=now, expires_at=expires)
    store.touch_api_key(record.id, now=now)
    return cookie, Session(hashed, record, csrf, now, expires)


def lookup(store: Store, cookie_value: str | None, *, clock: Clock = time.time) -> Session | None:
    """The live session of a cookie value, or None (absent, unknown, ended, expired, key gone)."""
    if not cookie_value or len(cookie_value) > 200:
        return None
    hashed = session_hash(cookie_value)
    row = store.get_session(hashed)
    if row is None or not hmac.compare_digest(row.session_hash, hashed):
        return None
    now = clock()
    if row.ended_at is not None or now >= row.expires_at:
        return None
    record = store.get_api_key(row.api_key_id)
    if record is None or not record.admin or record.revoked_at is not None:
        return None
    if record.expires_at is not None and now >= record.expires_at:
        return None
    return Session(hashed, record, row.csrf_secret, row.created_at, row.expires_at)


def logout(store: Store, cookie_value: str | None, *, clock: Clock = time.time) -> bool:
    """End the session of a cookie value; False if there was no open one."""
    if not cookie_value or len(cookie_value) > 200:
        return False
    return store.end_session(session_hash(cookie_value), now=clock())
