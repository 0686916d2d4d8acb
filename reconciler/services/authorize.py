"""The authorize use case: obtain a link's first tokens and save them with their audit event.

The authorization code flow is two calls so that another process (a server replica)
can finish what one started: :func:`start` builds the request and persists its pending
state in the store (PKCE verifier sealed, short expiry, single use); :func:`finish`
consumes it exactly once, exchanges the code and saves the tokens. The device and
client credentials grants run in one process and save through :func:`save_tokens`.
An authorization started from the server's pages is bound to the admin's session and
its link (``session_hash``, ``link``): :func:`finish` refuses a callback from another
session or naming another link before it takes the state, so nothing is stored and
the admin's own callback still works.
Never returns or logs a token, code, verifier or secret.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import Clock
from reconciler.errors import AuthorizationStateError, ConfigError

if TYPE_CHECKING:
    from reconciler.oauth.client import ClientConfig, TokenClient, TokenResponse
    from reconciler.store.base import Store
    from reconciler.store.pending import PendingAuthorization

PENDING_TTL = 600.0  # seconds a started authorization may take to come back (10 minutes)


def load_client_config(store: Store, name: str) -> ClientConfig:
    """The token-request configuration of a stored link, or ``ConfigError`` saying what is missing."""
    from reconciler.keeper import client_config

    link = store.get_link(name)
    if link is None:
        raise ConfigError(f"no link named {name!r} in the store", hint="run `linkctl list`, or apply first")
    spec: Mapping[str, Any] = link.spec
    if not spec.get("clientId"):
        raise ConfigError(
            f"link {name!r} has no clientId yet (pending credentials)",
            hint=f"register the app with redirect URL from `linkctl redirect-url {name}`, "
            "declare clientId/clientSecret and apply",
        )
    return client_config(store, link)


@dataclasses.dataclass(frozen=True)
class StartedAuthorization:
    """What the user is sent to: the URL, and what the callback is matched by (never the verifier)."""

    link: str
    url: str
    state: str
    redirect_uri: str
    expires_at: float


def start(
    store: Store,
    client: TokenClient,
    config: ClientConfig,
    *,
    clock: Clock = time.time,
    ttl: float = PENDING_TTL,
    session_hash: str | None = None,
) -> StartedAuthorization:
    """Build the authorization code request of ``config`` and persist its pending state."""
    from reconciler.oauth import flows

    request = flows.prepare_authorization_request(client, config)
    now = clock()
    store.put_pending_authorization(
        request.link,
        state=request.state,
        code_verifier=request.pkce.verifier,
        redirect_uri=request.redirect_uri,
        issuer=request.issuer,
        require_iss=request.require_iss,
        created_at=now,
        expires_at=now + ttl,
        session_hash=session_hash,
    )
    return StartedAuthorization(request.link, request.url, request.state, request.redirect_uri, now + ttl)


def finish(
    store: Store,
    client: TokenClient,
    state: str,
    callback_url: str,
    *,
    actor: str,
    clock: Clock = time.time,
    link: str | None = None,
    session_hash: str | None = None,
) -> tuple[ClientConfig, TokenResponse]:
    """Consume the pending authorization of ``state`` once, exchange the callback's code, save tokens.

    With ``link``/``session_hash`` (the hosted callback), a state bound to another link or
    session is refused and left untouched.
    """
    from reconciler.oauth import flows

    pending = store.consume_pending_authorization(state, now=clock(), link=link, session_hash=session_hash)
    hosted = session_hash is not None
    again = "press Authorize on the link's page again" if hosted else "run `linkctl authorize NAME` again"
    if pending is None:
        raise AuthorizationStateError(
            "no authorization was started with this state (or it was removed after expiring)", hint=again
        )
    _refuse_binding(pending, link, again)
    link = pending.link_name
    again = (
        f"press Authorize on the page of link {link!r} again"
        if hosted
        else f"run `linkctl authorize {link}` again"
    )
    if pending.consumed_before:
        raise AuthorizationStateError(f"link {link!r}: this authorization was already finished", hint=again)
    if clock() >= pending.expires_at:
        raise AuthorizationStateError(
            f"link {link!r}: this authorization expired (started more than"
            f" {pending.expires_at - pending.created_at:g} s ago)",
            hint=again,
        )
    config = client.with_endpoints(load_client_config(store, link))
    verifier = pending.code_verifier.reveal()
    request = flows.AuthorizationRequest(
        link=link,
        url="",
        state=state,
        pkce=flows.Pkce(verifier=pending.code_verifier, challenge=flows.pkce_challenge(verifier)),
        redirect_uri=pending.redirect_uri,
        issuer=pending.issuer,
        require_iss=pending.require_iss,
        provider=config.provider,
    )
    response = flows.exchange_callback(client, config, request, callback_url)
    save_tokens(store, config, response, actor=actor, clock=clock)
    return config, response


def _refuse_binding(pending: PendingAuthorization, link: str | None, again: str) -> None:
    """Say why a callback may not finish a pending authorization it does not own."""
    if pending.refused == "link":
        raise AuthorizationStateError(
            f"this callback is for link {link!r}, but its state belongs to an authorization of link"
            f" {pending.link_name!r}: the code is not exchanged",
            hint=f"start the authorization from the page of the link you mean; {again}",
        )
    if pending.refused == "session" and pending.session_hash is None:
        raise AuthorizationStateError(
            f"link {pending.link_name!r}: this authorization was started with `linkctl authorize`,"
            " not from this server's pages",
            hint="copy this page's address from the browser's address bar into the terminal where"
            " `linkctl authorize` waits, or press Authorize on the link's page instead",
        )
    if pending.refused == "session":
        raise AuthorizationStateError(
            f"link {pending.link_name!r}: this authorization was started from another browser session",
            hint="finish it in the browser that started it, or press Authorize on the link's page here",
        )


def save_tokens(
    store: Store, config: ClientConfig, response: TokenResponse, *, actor: str, clock: Clock = time.time
) -> None:
    """Save a link's first tokens and record who consented, when, to what (never a token)."""
    from reconciler.store.base import Event

    store.save_authorization(config.link, response, clock_now=clock())
    detail = {
        "grant": config.grant,
        "scope": response.scope,
        "refresh_token": response.refresh_token is not None,
        "expires_in": response.expires_in,
    }
    store.add_event(Event("grant.authorized", config.link, actor, detail, at=response.received_at))
