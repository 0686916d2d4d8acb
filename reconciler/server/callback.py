"""The hosted OAuth callback: ``GET /oauth/callback/{name}``, exactly where a link's redirect URL points.

The provider sends the admin's browser back here with ``code`` and ``state`` (and
``iss`` when it announces RFC 9207). The callback needs the admin session that pressed
Authorize (the session cookie is ``SameSite=Lax``, so it comes along on this top-level
redirect) and hands everything to :func:`reconciler.services.authorize.finish` — the
same path as ``linkctl authorize`` — which takes the pending state once (bound to this
session and link, persisted in the store: any replica finishes it), checks ``iss``,
exchanges the code with PKCE and stores the tokens. Success returns to the link page;
a refusal is a 4xx page that says why and what to do, and stores nothing. The page
never repeats the code, the state or a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.errors import (
    AuthorizationStateError,
    GrantError,
    LinkctlError,
    ProviderConfigError,
    TransientProviderError,
)
from reconciler.server import security
from reconciler.server.context import context_of
from reconciler.server.html import link_url, message
from reconciler.server.login import session_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from reconciler.services.sessions import Session


def actor_of(session: Session) -> str:
    """Who consented, for the audit log: the admin key's id and label (never the key)."""
    record = session.api_key
    label = f" ({record.label})" if record.label else ""
    return f"serve:{record.id}{label}"


def oauth_callback(request: Request) -> Response:
    """``GET /oauth/callback/{name}``: finish the authorization this browser's session started."""
    from starlette.responses import RedirectResponse

    from reconciler.services import authorize

    name = request.path_params["name"]
    query = request.query_params
    back = link_url(name)
    if len(query.getlist("state")) != 1 or not query.get("state"):
        error = query.get("error")
        said = f" (the provider answered {error[:64]!r})" if error else ""
        return message(
            None,
            "Authorization refused",
            f"link {name!r}: the callback carries no state{said}, so it cannot be matched to an"
            " authorization started here; nothing was stored",
            "press Authorize on the link's page and finish the consent in the tab it opens",
            status=400,
            back=back,
        )
    session = session_of(request)
    if session is None:
        return message(
            None,
            "Authorization refused",
            f"link {name!r}: this browser has no admin session, and an authorization started here"
            " is finished only by the session that started it; nothing was stored",
            "log in, then press Authorize on the link's page again",
            status=403,
            back="/login",
        )
    ctx = context_of(request)
    store = ctx.store()
    retry = f"{back}/authorize"
    provider = _provider_origin(request, name)
    try:
        with ctx.token_client() as client:
            authorize.finish(
                store,
                client,
                query["state"],
                str(request.url),
                actor=actor_of(session),
                clock=ctx.clock,
                link=name,
                session_hash=session.session_hash,
            )
    except AuthorizationStateError as error:
        return message(session, "Authorization refused", error.message, error.hint, status=400, back=back)
    except (GrantError, ProviderConfigError) as error:
        # access_denied, invalid_scope, redirect_uri_mismatch, AADSTS codes, no refresh token.
        return message(
            session,
            "The provider refused the authorization",
            error.message,
            error.hint,
            status=400,
            back=back,
            retry=retry,
            form_action=provider,
        )
    except TransientProviderError as error:
        return message(
            session,
            "Provider unavailable",
            error.message,
            error.hint or "try again in a minute",
            status=502,
            back=back,
            retry=retry,
            form_action=provider,
        )
    except LinkctlError as error:
        return message(session, "Authorization failed", error.message, error.hint, status=400, back=back)
    return RedirectResponse(link_url(name, "authorized"), status_code=303)


def _provider_origin(request: Request, name: str) -> tuple[str, ...]:
    """The authorization endpoint's origin, for the CSP of a page with an "Authorize again" form."""
    from reconciler.services import links_page

    store = context_of(request).store()
    link = store.get_link(name)
    if link is None:
        return ()
    origin = security.origin_of(links_page.authorization_origin_hint(store, link.spec))
    return (origin,) if origin else ()
