"""The admin pages: the links list (``/``), a link (``/links/{name}``) and its three buttons.

Server-rendered HTML (:mod:`reconciler.server.html`), no JS framework; ``static/copy.js``
is the only script (the redirect URL's copy button). Every handler is a thin edge over
:mod:`reconciler.services`: the list and the detail come from ``services.links_page``,
Authorize from ``services.authorize.start`` (bound to the admin's session, persisted in
the store so any replica finishes it in :mod:`reconciler.server.callback`), Refresh now
and Revoke from ``services.link_actions`` (the keeper's own lease paths). Without a
session every page redirects to ``/login``; a POST without this session's
``csrf_token`` is refused with 403 and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from reconciler.errors import LinkctlError, ProviderError, UsageError
from reconciler.server import csrf, html, security
from reconciler.server.context import context_of
from reconciler.server.html import callback_path, link_url, message
from reconciler.server.login import forbidden, session_of, to_login

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from reconciler.services.sessions import Session

# Outcomes a redirect back to the link page announces (a fixed vocabulary: no text from the URL).
DONE = {
    "authorized": "Authorized: the provider's tokens are saved and the keeper keeps them fresh.",
    "refreshed": "Tokens refreshed now.",
    "revoked": "Tokens revoked at the provider; the link needs authorization again.",
}
_DIGITS = re.compile(r"^[0-9]{1,6}$")


def _signed_in(handler: Callable[[Request, Session], Response]) -> Callable[[Request], Response]:
    """A GET handler that needs a session (none: 303 to /login)."""

    def endpoint(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(request)
        return handler(request, session)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _posted(handler: Callable[[Request, Session, str], Response]) -> Callable[[Request], Any]:
    """A POST handler on ``/links/{name}/...``: session, then this session's csrf_token, then act."""

    async def endpoint(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            form = await csrf.read_form(request)
        except csrf.FormError as error:
            return message(None, "Refused", error.message, status=error.status)
        return await run_in_threadpool(_checked, request, form)

    def _checked(request: Request, form: dict[str, str]) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(request)
        if not csrf.session_token_ok(session, form.get(csrf.FIELD)):
            return forbidden(session)
        return handler(request, session, request.path_params["name"])

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


# -- the list ---------------------------------------------------------------------------


@_signed_in
def links_list(request: Request, session: Session) -> Response:
    """``GET /``: every link, attention first; ``?status=`` and ``?provider=`` filter, ``?page=`` pages."""
    from reconciler.services import links_page

    query = request.query_params
    raw_page = query.get("page") or "1"
    try:
        if not _DIGITS.match(raw_page):
            raise UsageError(f"page {raw_page[:20]!r} is not a page number", hint="use ?page=1, 2, ...")
        data = links_page.links_page(
            context_of(request).store(),
            status=query.get("status") or None,
            provider=query.get("provider") or None,
            page=int(raw_page),
        )
    except UsageError as error:
        return message(session, "Not a filter", error.message, error.hint, status=400)
    context = {
        "title": "Application links",
        "session": session,
        "csrf": csrf.session_token(session),
        "data": data,
        "statuses": [(s.value, label) for s, label in links_page.STATUS_LABELS.items()],
        "page_url": _page_url(data),
    }
    return html.page("links.html", context)


def _page_url(data: Any) -> Callable[[int], str]:
    def url(page: int) -> str:
        params = [(k, v) for k, v in (("status", data.status), ("provider", data.provider)) if v]
        params.append(("page", str(page)))
        return "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params)

    return url


# -- one link ---------------------------------------------------------------------------


def link_response(
    request: Request, session: Session, name: str, *, notice: tuple[str, str] | None = None, status: int = 200
) -> Response:
    """The link page, with a notice ``(kind, text)`` on top (kind: ok | error)."""
    from reconciler.services import links_page

    store = context_of(request).store()
    try:
        detail = links_page.link_page(store, name)
    except LinkctlError as error:
        return message(session, "No such link", error.message, error.hint, status=404)
    if notice is None and (done := request.query_params.get("done")) in DONE:
        notice = ("ok", DONE[done])
    redirect = detail.get("redirect_url")
    hosted = bool(redirect) and urlsplit(str(redirect)).path == callback_path(name)
    provider = security.origin_of(links_page.authorization_origin_hint(store, detail["spec"]))
    context = {
        "title": f"Link {name}",
        "session": session,
        "csrf": csrf.session_token(session),
        "link": detail,
        "notice": notice,
        "hosted_callback": hosted,
        "url": link_url(name),
    }
    return html.page("link.html", context, status=status, form_action=(provider,) if provider else ())


@_signed_in
def link_detail(request: Request, session: Session) -> Response:
    """``GET /links/{name}``: redirect URL first, then status, fix, settings, events, buttons."""
    return link_response(request, session, request.path_params["name"])


@_posted
def authorize_link(request: Request, session: Session, name: str) -> Response:
    """``POST /links/{name}/authorize``: 303 to the provider, with a state bound to this session."""
    from starlette.responses import RedirectResponse

    from reconciler.services import authorize

    ctx = context_of(request)
    store = ctx.store()
    back = link_url(name)
    try:
        config = authorize.load_client_config(store, name)
    except LinkctlError as error:
        return message(session, "Cannot authorize", error.message, error.hint, status=409, back=back)
    if config.grant != "authorization_code":
        hint = (
            f"run `linkctl authorize {name}` on a terminal (device flow)"
            if config.grant == "device_code"
            else "the keeper obtains its tokens by itself; press Refresh now to get one at once"
        )
        text = f"link {name!r} uses the {config.grant} grant: no browser consent"
        return message(session, "Cannot authorize here", text, hint, status=409, back=back)
    if not config.redirect_uri or urlsplit(config.redirect_uri).path != callback_path(name):
        text = (
            f"link {name!r} redirects to {config.redirect_uri or 'nothing'}, not to this server's"
            f" callback ({callback_path(name)})"
        )
        hint = f"run `linkctl authorize {name}` where that redirect URL is received"
        return message(session, "Cannot authorize here", text, hint, status=409, back=back)
    try:
        with ctx.token_client() as client:
            started = authorize.start(
                store, client, config, session_hash=session.session_hash, clock=ctx.clock
            )
    except ProviderError as error:
        return message(session, "Provider unavailable", error.message, error.hint, status=502, back=back)
    except LinkctlError as error:
        return message(session, "Cannot authorize", error.message, error.hint, status=409, back=back)
    return RedirectResponse(started.url, status_code=303)


@_posted
def refresh_link(request: Request, session: Session, name: str) -> Response:
    """``POST /links/{name}/refresh``: refresh now, under the keeper's lease."""
    from starlette.responses import RedirectResponse

    from reconciler.services import link_actions

    ctx = context_of(request)
    try:
        with ctx.token_client() as client:
            result = link_actions.refresh_now(ctx.store(), client, name, clock=ctx.clock)
    except LinkctlError as error:
        return message(session, "Cannot refresh", error.message, error.hint, status=404)
    if result.ok:
        return RedirectResponse(link_url(name, "refreshed"), status_code=303)
    status = 409 if result.message.startswith("not refreshed") else 502
    return link_response(request, session, name, notice=("error", result.message), status=status)


@_posted
def revoke_link(request: Request, session: Session, name: str) -> Response:
    """``POST /links/{name}/revoke``: revoke the tokens at the provider (RFC 7009), under the lease."""
    from starlette.responses import RedirectResponse

    from reconciler.services import link_actions

    ctx = context_of(request)
    try:
        with ctx.token_client() as client:
            result = link_actions.revoke(ctx.store(), client, name, clock=ctx.clock)
    except LinkctlError as error:
        return message(session, "Cannot revoke", error.message, error.hint, status=404)
    if result.ok:
        return RedirectResponse(link_url(name, "revoked"), status_code=303)
    status = 409 if result.message.startswith("nothing revoked") else 502
    return link_response(request, session, name, notice=("error", result.message), status=status)


def routes() -> list[BaseRoute]:
    """The pages' routes: log-in, the list, a link and its buttons, the callback, static files."""
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from reconciler.server import callback, login

    static = Path(__file__).resolve().parent / html.STATIC
    return [
        *login.routes(),
        Route("/", links_list, methods=["GET"]),
        Route("/links/{name}", link_detail, methods=["GET"]),
        Route("/links/{name}/authorize", authorize_link, methods=["POST"]),
        Route("/links/{name}/refresh", refresh_link, methods=["POST"]),
        Route("/links/{name}/revoke", revoke_link, methods=["POST"]),
        Route(callback_path("{name}"), callback.oauth_callback, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=static), name="static"),
    ]
