"""HTML rendering of the pages: Jinja2 templates from ``server/templates``, autoescaped.

One :class:`jinja2.Environment` per process, built on first use (``linkctl token`` and
the token API never pay for it). Every value is escaped unless a template says
otherwise, and none does. Pages carry no inline script or style (the CSP forbids them):
``static/app.css`` and ``static/copy.js`` come from this origin.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from reconciler.server import csrf, security

if TYPE_CHECKING:
    import jinja2
    from starlette.responses import HTMLResponse, Response

    from reconciler.services.sessions import Session

TEMPLATES = "templates"
STATIC = "static"


@functools.cache
def environment() -> jinja2.Environment:
    """The process's template environment (autoescape on, undefined names are errors)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler.server", TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["when"] = when
    return env


def when(value: str | None) -> str:
    """An ISO 8601 time as a page shows it (``2026-12-02 07:15:03Z``), or a dash."""
    if not value:
        return "—"
    return str(value).replace("T", " ")


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """Render ``template`` with ``context`` to a string."""
    return environment().get_template(template).render(context)


def page(
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    form_action: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """An HTML response, never cached, with the CSP widened only by ``form_action`` origins."""
    from starlette.responses import HTMLResponse

    response = HTMLResponse(render_text(template, context), status_code=status, headers=dict(headers or {}))
    response.headers["cache-control"] = "no-store"
    if form_action:
        response.headers["content-security-policy"] = security.content_security_policy(form_action)
    return response


def callback_path(name: str) -> str:
    """The path of a link's hosted callback, as its redirect URL names it."""
    from reconciler.validate.urls import REDIRECT_PATH

    return REDIRECT_PATH.format(name=name)


def link_url(name: str, done: str | None = None) -> str:
    """The link page's path (with an outcome to announce)."""
    path = f"/links/{quote(name, safe='')}"
    return f"{path}?done={done}" if done else path


def message(
    session: Session | None,
    title: str,
    text: str,
    hint: str | None = None,
    *,
    status: int,
    back: str | None = "/",
    retry: str | None = None,
    form_action: tuple[str, ...] = (),
) -> Response:
    """A page that says what happened and what to do (errors and refusals)."""
    context = {
        "title": title,
        "session": session,
        "csrf": csrf.session_token(session) if session is not None else "",
        "message": text,
        "hint": hint,
        "back": back,
        "retry": retry,
    }
    return page("message.html", context, status=status, form_action=form_action)
