"""Obtaining a link's first tokens: authorization code + PKCE, the device flow, client credentials.

Owns PKCE and ``state`` generation, the authorization URL, callback checks
(state, ``error=``, RFC 9207 ``iss``), the loopback callback listener, reading
a pasted redirect URL, and the "will this grant keep working?" check on the
first token response. HTTP goes through :class:`~reconciler.oauth.client.TokenClient`.

Called by :mod:`reconciler.services.authorize` (start: :func:`prepare_authorization_request`;
finish: :func:`exchange_callback`) and by ``linkctl authorize``, which receives the
redirect in between with :func:`await_callback`; the coming server's "Authorize" page
uses the same two service calls without the listener.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.server
import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from reconciler.domain.tokens import ClientConfig, DeviceAuthorization, TokenResponse
from reconciler.errors import ConfigError, GrantError, ProviderConfigError, ProviderError
from reconciler.oauth import providers
from reconciler.oauth.client import TokenClient
from reconciler.secrets import Secret, reveal

MIN_ACCESS_ONLY_LIFETIME = 24 * 3600.0  # without a refresh token, the access token must last a day
PKCE_VERIFIER_BYTES = 48  # -> 64 base64url characters (RFC 7636 §4.1 allows 43-128)
# Parameters the flow itself sets; declared authorizeParams must not override them.
PROTOCOL_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)


@dataclasses.dataclass(frozen=True)
class Pkce:
    """An RFC 7636 S256 pair; the verifier stays secret until the code exchange."""

    verifier: Secret
    challenge: str
    method: str = "S256"


def new_pkce(nbytes: int = PKCE_VERIFIER_BYTES) -> Pkce:
    """A fresh S256 PKCE pair from the ``secrets`` module."""
    verifier = secrets.token_urlsafe(nbytes)
    if not 43 <= len(verifier) <= 128:
        raise ValueError("a PKCE verifier must be 43-128 characters long (RFC 7636 §4.1)")
    return Pkce(verifier=Secret(verifier), challenge=pkce_challenge(verifier))


def pkce_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable ``state`` value (CSRF protection for the callback)."""
    return secrets.token_urlsafe(24)


@dataclasses.dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization code request in progress: what the callback is checked against."""

    link: str
    url: str
    state: str
    pkce: Pkce
    redirect_uri: str
    issuer: str | None  # expected RFC 9207 ``iss`` (None: unknown, not checked)
    require_iss: bool = False  # the server advertises iss in responses: refuse a callback without it
    provider: str = "custom"  # whose error table explains an error= callback


def scope_string(config: ClientConfig) -> str:
    """The link's scopes joined by its preset's separator."""
    return providers.join_scopes(config.provider, config.scopes)


def _preset_params(provider: str) -> Mapping[str, str]:
    preset = providers.find_preset(provider)
    return preset.authorize_params if preset else {}


def authorize_params(config: ClientConfig) -> dict[str, str]:
    """The extra authorization parameters sent, sealed ones revealed: preset's, declared, implied.

    A custom link asking for ``offline_access`` gets ``prompt=consent`` unless it sets
    ``authorizeParams.prompt`` itself: OpenID Connect Core §11 makes consent a condition
    of the refresh token, and oidc-provider drops ``offline_access`` without it.
    """
    params = {
        key: reveal(value) if isinstance(value, Secret) else str(value)
        for key, value in {**_preset_params(config.provider), **config.authorize_params}.items()
    }
    if config.provider == "custom" and "offline_access" in config.scopes and "prompt" not in params:
        params["prompt"] = "consent"
    return params


def build_authorization_request(
    config: ClientConfig,
    *,
    redirect_uri: str | None = None,
    state: str | None = None,
    pkce: Pkce | None = None,
    require_iss: bool = False,
) -> AuthorizationRequest:
    """The authorization URL (RFC 6749 §4.1.1 + PKCE) with preset and declared params merged."""
    if not config.authorization_endpoint:
        raise ConfigError(
            f"link {config.link!r} has no authorization endpoint",
            hint="declare spec.authorizationEndpoint, or spec.issuer so it can be discovered",
        )
    if not config.client_id:
        raise ConfigError(f"link {config.link!r} has no clientId yet", hint="declare spec.clientId and apply")
    redirect = redirect_uri or config.redirect_uri
    if not redirect:
        raise ConfigError(
            f"link {config.link!r} has no redirect URL",
            hint="declare an Instance with spec.baseUrl (see `linkctl redirect-url NAME`) and apply",
        )
    state = state or new_state()
    pkce = pkce or new_pkce()
    # Preset params first, then declared ones (the stored spec already merges them; merging
    # again keeps a hand-built ClientConfig correct), then the protocol's own.
    params = {key: value for key, value in authorize_params(config).items() if key not in PROTOCOL_PARAMS}
    params.update(
        {
            "response_type": "code",
            "client_id": reveal(config.client_id),
            "redirect_uri": redirect,
            "state": state,
            "code_challenge": pkce.challenge,
            "code_challenge_method": pkce.method,
        }
    )
    scope = scope_string(config)
    if scope:
        params["scope"] = scope
    parts = urlsplit(config.authorization_endpoint)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return AuthorizationRequest(
        link=config.link,
        url=url,
        state=state,
        pkce=pkce,
        redirect_uri=redirect,
        issuer=config.issuer,
        require_iss=require_iss,
        provider=config.provider,
    )


def _single(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def parse_callback(callback_url: str, request: AuthorizationRequest) -> str:
    """Check the redirect back from the provider and return the authorization code."""
    parts = urlsplit(callback_url.strip())
    # response_mode=fragment providers put the answer after '#'.
    query = parse_qs(parts.query or parts.fragment, keep_blank_values=True)
    link = request.link
    rerun = f"run `linkctl authorize {link}` again"
    if not query:
        raise ProviderError(
            f"link {link!r}: the callback URL carries no authorization response",
            hint="paste the whole URL of the page the provider redirected to (it contains ?code=...)",
        )
    state = _single(query, "state")
    if state is None or not secrets.compare_digest(state, request.state):
        raise ProviderError(
            f"link {link!r}: the callback's state does not match this authorization request "
            "(a stale browser tab, or a forged request)",
            hint=f"{rerun} and finish it in the browser tab it opens",
        )
    iss = _single(query, "iss")
    if iss is not None and request.issuer is not None and iss != request.issuer:
        # RFC 9207 §2.4: a response from another issuer is a mix-up attack or a misconfiguration.
        raise ProviderError(
            f"link {link!r}: the callback comes from issuer {iss!r}, expected {request.issuer!r}",
            hint="check spec.issuer; if it is right, the response was not meant for this link",
        )
    if iss is None and request.require_iss:
        raise ProviderError(
            f"link {link!r}: the provider announces the iss parameter but the callback lacks it",
            hint=rerun,
        )
    error = _single(query, "error")
    if error is not None:
        description = " ".join((_single(query, "error_description") or "").split())[:200]
        raise authorization_error(link, error, description, request.provider)
    code = _single(query, "code")
    if not code:
        raise ProviderError(f"link {link!r}: the callback carries neither code nor error", hint=rerun)
    return code


def authorization_error(link: str, error: str, description: str, provider: str = "custom") -> ProviderError:
    """The classified error for an ``error=`` callback (RFC 6749 §4.1.2.1)."""
    preset = providers.find_preset(provider)
    meaning = preset.explain(error, description) if preset else None
    text = f"link {link!r}: the provider refused the authorization: {error[:64]}"
    if meaning:
        text += f": {meaning.meaning}"
    if description:
        text += f" (provider says: {description})"
    if error == "access_denied":
        return GrantError(text, hint=f"run `linkctl authorize {link}` again and approve", oauth_error=error)
    hint = meaning.fix if meaning else "check the link's scopes, client registration and redirect URL"
    if meaning and meaning.error_class == "needs_authorization":
        return GrantError(text, hint=hint, oauth_error=error)
    return ProviderConfigError(text, hint=hint, oauth_error=error)


# -- the loopback listener ------------------------------------------------------------


def is_loopback_redirect(redirect_uri: str) -> bool:
    """True for ``http://`` redirect URIs on a loopback address (we can listen there)."""
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class _HTTPServerV6(http.server.HTTPServer):
    address_family = socket.AF_INET6


def _server_class(host: str) -> type[http.server.HTTPServer]:
    return _HTTPServerV6 if ":" in host else http.server.HTTPServer


_DONE_PAGE = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>linkctl</title></head>"
    b"<body><p>linkctl received the authorization response. You can close this window.</p></body></html>"
)


class CallbackListener:
    """A one-request HTTP listener on a loopback redirect URI (started before the browser opens)."""

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        if not is_loopback_redirect(redirect_uri):
            raise ValueError("the callback listener serves loopback http:// redirect URIs only")
        self.redirect_uri = redirect_uri
        self._path = parts.path or "/"
        self._received: str | None = None
        self._event = threading.Event()
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path != listener._path or listener._event.is_set():
                    self.send_error(404)
                    return
                listener._received = f"{parts.scheme}://{parts.netloc}{self.path}"
                listener._event.set()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(_DONE_PAGE)

            def log_message(self, format: str, *args: Any) -> None:
                # The default logs the request line, which carries the authorization code.
                return

        host = parts.hostname or "127.0.0.1"
        self._server = _server_class(host)((host, parts.port or 80), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1})
        self._thread.daemon = True
        self._thread.start()

    @property
    def port(self) -> int:
        """The port actually bound (useful when the redirect URI says port 0 in tests)."""
        return int(self._server.server_address[1])

    def wait(self, timeout: float) -> str:
        """The full callback URL, or ``ProviderError`` when nothing arrived in ``timeout`` s."""
        try:
            if not self._event.wait(timeout):
                raise ProviderError(
                    f"no authorization response arrived at {self.redirect_uri} within {timeout:g} s",
                    hint="finish the consent in the browser, or use --timeout, --no-browser or --device",
                )
            assert self._received is not None
            return self._received
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(Exception):
            self._server.shutdown()
            self._server.server_close()


def read_pasted_redirect(stdin: IO[str], prompt: Callable[[str], None]) -> str:
    """Ask for the final redirect URL (when no listener can receive it) and read one line."""
    prompt("After approving, paste the full URL your browser was redirected to, then press Enter:")
    line = stdin.readline()
    if not line.strip():
        raise ProviderError(
            "no redirect URL was pasted", hint="copy the address bar of the page the provider redirected to"
        )
    return line.strip()


# -- "will this grant keep working?" -----------------------------------------------------


def check_offline(config: ClientConfig, response: TokenResponse) -> None:
    """Refuse a first response that has no refresh token and no access token lasting a day."""
    if config.grant not in ("authorization_code", "device_code"):
        return
    if response.refresh_token is not None:
        return
    if response.expires_in is not None and response.expires_in >= MIN_ACCESS_ONLY_LIFETIME:
        return
    lifetime = "no stated lifetime" if response.expires_in is None else f"{response.expires_in:g} s"
    causes, fixes = offline_diagnosis(config)
    raise ProviderConfigError(
        f"link {config.link!r}: the provider returned no refresh token and a short-lived access token "
        f"({lifetime}), so the link would stop working within the hour. Likely causes: " + "; ".join(causes),
        hint="; ".join(fixes) + f"; then run `linkctl authorize {config.link}` again",
    )


def offline_diagnosis(config: ClientConfig) -> tuple[list[str], list[str]]:
    """Causes and fixes for a missing refresh token, for this link's provider and settings."""
    params = authorize_params(config)
    scopes = set(config.scopes)
    causes: list[str] = []
    fixes: list[str] = []
    if config.provider == "google":
        if params.get("access_type") != "offline":
            causes.append("Google issues refresh tokens only with access_type=offline, which is not sent")
            fixes.append("set spec.authorizeParams.access_type: offline")
        if params.get("prompt") != "consent":
            causes.append("Google re-issues a refresh token on re-consent only with prompt=consent")
            fixes.append("set spec.authorizeParams.prompt: consent")
        causes.append("the Google OAuth client is not a 'Web application' or the consent was partial")
        fixes.append("revoke the app at https://myaccount.google.com/permissions and consent again")
    elif config.provider == "microsoft":
        if "offline_access" not in scopes:
            causes.append("Microsoft issues refresh tokens only for the offline_access scope (missing)")
        else:
            causes.append("the offline_access scope was not granted (check admin consent)")
        fixes.append("keep offline_access in the scopes and grant consent for it in the app registration")
    else:
        if "offline_access" not in scopes:
            causes.append("many providers issue refresh tokens only for the offline_access scope (missing)")
            fixes.append("add offline_access to spec.scopes")
        if params.get("prompt") != "consent":
            causes.append(
                "OpenID Connect servers (e.g. oidc-provider, Keycloak-like) drop offline_access "
                "unless prompt=consent is sent"
            )
            fixes.append("set spec.authorizeParams.prompt: consent")
        causes.append("the client may not be allowed the refresh_token grant")
        fixes.append("allow the refresh_token grant type for the client at the provider")
    return causes, fixes


# -- whole flows ------------------------------------------------------------------------


def prepare_authorization_request(client: TokenClient, config: ClientConfig) -> AuthorizationRequest:
    """The authorization request for ``config``, endpoints discovered and RFC 9207 ``iss`` looked up."""
    config = client.with_endpoints(config)
    require_iss = False
    if config.issuer:
        with contextlib.suppress(ProviderError):
            require_iss = client.discover(config.issuer).authorization_response_iss_parameter_supported
    return build_authorization_request(config, require_iss=require_iss)


def await_callback(
    url: str,
    redirect_uri: str,
    *,
    announce: Callable[[str], None],
    open_browser: Callable[[str], bool] | None,
    stdin: IO[str],
    timeout: float,
) -> str:
    """Show the URL, then receive the redirect on a loopback listener or as a pasted URL."""
    listener = CallbackListener(redirect_uri) if is_loopback_redirect(redirect_uri) else None
    try:
        announce("Open this URL in a browser and approve the access:")
        announce(url)
        if open_browser is not None:
            open_browser(url)
        if listener is not None:
            announce(f"Waiting up to {timeout:g} s for the redirect to {redirect_uri} ...")
            return listener.wait(timeout)
        return read_pasted_redirect(stdin, announce)
    finally:
        if listener is not None:
            listener.close()


def exchange_callback(
    client: TokenClient, config: ClientConfig, request: AuthorizationRequest, callback: str
) -> TokenResponse:
    """Check the callback against ``request``, exchange its code (PKCE) and check the grant lasts."""
    code = parse_callback(callback, request)
    response = client.exchange_code(
        config, code=code, code_verifier=request.pkce.verifier.reveal(), redirect_uri=request.redirect_uri
    )
    check_offline(config, response)
    return response


def run_device_flow(
    client: TokenClient,
    config: ClientConfig,
    *,
    announce: Callable[[str], None],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    on_device: Callable[[DeviceAuthorization], None] | None = None,
) -> TokenResponse:
    """RFC 8628 end to end: show the user code, poll until approved, offline check."""
    device = client.device_authorize(config)
    announce(f"Open {device.verification_uri} and enter the code: {device.user_code}")
    if device.verification_uri_complete:
        announce(f"(or open {device.verification_uri_complete})")
    if on_device is not None:
        on_device(device)
    response = client.poll_device(config, device, sleep=sleep, deadline=clock() + timeout)
    check_offline(dataclasses.replace(config, grant="device_code"), response)
    return response
