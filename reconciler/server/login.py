"""Admin log-in to the pages: ``/login`` (an admin API key) and ``/logout``; the session of a request.

``/login`` shows a form with the fields ``key`` and ``csrf_token`` (a signed
double-submit cookie, see :mod:`reconciler.server.csrf`); a valid admin key starts a
session (:func:`reconciler.services.sessions.login`) whose cookie is ``HttpOnly``,
``SameSite=Lax``, ``Path=/`` and ``Secure`` when the Instance's baseUrl (or the request)
is HTTPS, and redirects to ``/`` (or the page the admin was sent from). ``/logout``
(POST with the session's ``csrf_token``) ends the session in the store, so every replica
forgets it at once. Pages call :func:`session_of` and :func:`to_login`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from reconciler.server import csrf, html
from reconciler.server.context import context_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from reconciler.services.apikeys import KeyRefused
    from reconciler.services.sessions import Session

SESSION_COOKIE = "linkctl_session"
LOGIN_CSRF_TTL = 3600  # seconds the login form may stay open
_BASE_URL_TTL = 30.0  # seconds a process trusts the baseUrl it derived from the store


def session_of(request: Request) -> Session | None:
    """The live admin session of a request's cookie, or None (looked up in the store every time)."""
    from reconciler.services import sessions

    ctx = context_of(request)
    return sessions.lookup(ctx.store(), request.cookies.get(SESSION_COOKIE), clock=ctx.clock)


def safe_next(target: str | None) -> str:
    """A same-site path to return to after log-in (anything else becomes ``/``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 0x21 for c in target):
        return "/"
    return target


def to_login(request: Request) -> Response:
    """303 to ``/login``, remembering the page asked for (only a GET is worth returning to)."""
    from starlette.responses import RedirectResponse

    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = "/login" if request.method != "GET" or here == "/" else f"/login?next={quote(here, safe='')}"
    return RedirectResponse(target, status_code=303)


def cookie_secure(request: Request) -> bool:
    """Whether cookies get ``Secure``: the Instance's baseUrl is HTTPS, or this request came over HTTPS."""
    if request.url.scheme == "https":
        return True
    ctx = context_of(request)
    cached = ctx.extras.get("pages.base_url")
    now = time.monotonic()
    if cached is None or now - cached[1] > _BASE_URL_TTL:
        from reconciler.services.links_page import instance_base_url

        cached = (instance_base_url(ctx.store()), now)
        ctx.extras["pages.base_url"] = cached
    base: str | None = cached[0]
    return bool(base and base.startswith("https://"))


def _login_form(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    ctx = context_of(request)
    nonce = request.cookies.get(csrf.LOGIN_COOKIE)
    fresh = not nonce or len(nonce) > 100 or not nonce.isascii()
    if fresh:
        nonce = csrf.new_login_nonce()
    assert nonce is not None
    response = html.page(
        "login.html",
        {
            "title": "Log in",
            "session": None,
            "csrf": csrf.login_token(ctx.store(), nonce),
            "next": safe_next(request.query_params.get("next")),
            "error": error,
            # Secure cookies never come back over plain HTTP: say so before the log-in fails.
            "insecure": request.url.scheme == "http" and cookie_secure(request),
        },
        status=status,
    )
    if fresh:
        response.set_cookie(
            csrf.LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_CSRF_TTL,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
    return response


def login_page(request: Request) -> Response:
    """``GET /login``: the form (already logged in: straight to the list)."""
    from starlette.responses import RedirectResponse

    if session_of(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _login_form(request)


async def login_submit(request: Request) -> Response:
    """``POST /login``: check the form's CSRF token, then the key; set the session cookie."""
    from starlette.concurrency import run_in_threadpool

    try:
        form = await csrf.read_form(request)
    except csrf.FormError as error:
        return await run_in_threadpool(_login_form, request, error=error.message, status=error.status)
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: dict[str, str]) -> Response:
    from starlette.responses import RedirectResponse

    from reconciler.services import sessions
    from reconciler.services.apikeys import KeyRefused

    ctx = context_of(request)
    store = ctx.store()
    if not csrf.login_token_ok(store, request.cookies.get(csrf.LOGIN_COOKIE), form.get(csrf.FIELD)):
        return _login_form(
            request,
            error="the form expired or did not come from this page (CSRF check failed): log in again",
            status=403,
        )
    try:
        cookie, session = sessions.login(store, form.get("key") or None, clock=ctx.clock)
    except KeyRefused as refused:
        return _login_form(request, error=_refusal(refused), status=refused.status)
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie.reveal(),
        max_age=max(1, int(session.expires_at - ctx.clock())),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )
    response.delete_cookie(csrf.LOGIN_COOKIE, path="/login")
    return response


def _refusal(refused: KeyRefused) -> str:
    # KeyRefused says why in words fit for the page (never the key); a link key is not an admin key.
    return f"not logged in: {refused.message}"


def logout_page(request: Request) -> Response:
    """``GET /logout``: a button that posts the log-out (a link must not end a session)."""
    from starlette.responses import RedirectResponse

    session = session_of(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    return html.page(
        "logout.html", {"title": "Log out", "session": session, "csrf": csrf.session_token(session)}
    )


async def logout_submit(request: Request) -> Response:
    """``POST /logout`` with the session's ``csrf_token``: end the session, clear the cookie."""
    from starlette.concurrency import run_in_threadpool

    try:
        form = await csrf.read_form(request)
    except csrf.FormError as error:
        return html.message(None, "Refused", error.message, status=error.status)
    return await run_in_threadpool(_logout, request, form)


def _logout(request: Request, form: dict[str, str]) -> Response:
    from starlette.responses import RedirectResponse

    from reconciler.services import sessions

    ctx = context_of(request)
    session = session_of(request)
    if session is None:
        return to_login(request)
    if not csrf.session_token_ok(session, form.get(csrf.FIELD)):
        return forbidden(session)
    sessions.logout(ctx.store(), request.cookies.get(SESSION_COOKIE), clock=ctx.clock)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure(request)
    )
    return response


def forbidden(session: Session | None) -> Response:
    """403: a POST without this session's ``csrf_token`` (a forged or stale form)."""
    return html.message(
        session,
        "Refused",
        "refused: this form did not carry a valid csrf_token (a stale page, or a request forged by"
        " another site); nothing was changed",
        "reload the page and submit the form again",
        status=403,
    )


def routes() -> list[BaseRoute]:
    """``/login`` and ``/logout`` (GET shows the form, POST acts)."""
    from starlette.routing import Route

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout_page, methods=["GET"]),
        Route("/logout", logout_submit, methods=["POST"]),
    ]
