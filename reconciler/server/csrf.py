"""CSRF tokens of the pages' forms (hidden input ``csrf_token``) and the form bodies they come in.

Two kinds, both checkable by any server process (nothing in one process's memory):

- in a session: ``HMAC-SHA256(session's sealed CSRF secret, session hash)`` — the secret
  is per session (:mod:`reconciler.services.sessions`), so a token is worthless in any
  other session and dies with its session;
- before a session (``/login``): a signed double-submit cookie. The cookie holds a random
  nonce; the form's token is ``nonce.HMAC(server key, nonce)``, the server key derived
  from the state key (every replica has it). A forged form needs the nonce of the
  victim's cookie *and* a signature only the server can make.

A POST whose token is missing or wrong is refused with 403 by the caller (``pages``,
``login``). :func:`read_form` reads ``application/x-www-form-urlencoded`` bodies, bounded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from starlette.requests import Request

    from reconciler.services.sessions import Session
    from reconciler.store.base import Store

FIELD = "csrf_token"
LOGIN_COOKIE = "linkctl_login_csrf"
MAX_FORM_BYTES = 16 * 1024  # the largest form (login) is a few hundred bytes
_SESSION_INFO = b"linkctl/csrf/session/v1/"
_LOGIN_INFO = b"linkctl/csrf/login/v1"


class FormError(Exception):
    """A form body that is not a small urlencoded form (the caller answers 400/413/415)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def session_token(session: Session) -> str:
    """The ``csrf_token`` of every form shown in ``session``."""
    key = session.csrf_secret.reveal().encode("utf-8")
    return _b64(hmac.new(key, _SESSION_INFO + session.session_hash.encode("ascii"), hashlib.sha256).digest())


def session_token_ok(session: Session, token: str | None) -> bool:
    """Whether a submitted token is the one of ``session`` (constant time)."""
    return bool(token) and hmac.compare_digest(session_token(session), str(token))


def _login_key(store: Store) -> bytes:
    # Derived, never the state key itself: a login token reveals nothing about it.
    return hmac.new(store.fingerprint_key(), _LOGIN_INFO, hashlib.sha256).digest()


def new_login_nonce() -> str:
    """A fresh random value for the login CSRF cookie."""
    return secrets.token_urlsafe(32)


def login_token(store: Store, nonce: str) -> str:
    """The login form's ``csrf_token`` for the nonce in its cookie."""
    signature = hmac.new(_login_key(store), nonce.encode("ascii"), hashlib.sha256).digest()
    return f"{nonce}.{_b64(signature)}"


def login_token_ok(store: Store, cookie_nonce: str | None, token: str | None) -> bool:
    """Whether a login form's token matches its cookie and carries the server's signature."""
    if not cookie_nonce or not token or len(token) > 200 or not cookie_nonce.isascii():
        return False
    return hmac.compare_digest(login_token(store, cookie_nonce), token)


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form body as ``{field: first value}``; :class:`FormError` otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    if not body:
        return {}  # no fields, so no csrf_token: the caller refuses it
    if kind != "application/x-www-form-urlencoded":
        # Not one of our forms (text/plain and JSON are the classic cross-site tricks): no token.
        raise FormError(
            "refused: not a form of these pages (application/x-www-form-urlencoded), so no csrf_token;"
            " nothing was changed",
            403,
        )
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise FormError("the form is not valid UTF-8 urlencoded data", 400) from None
    return {name: values[0] for name, values in fields.items()}
