"""``linkctl authorize`` and ``linkctl doctor``: obtain a link's first tokens, and diagnose links.

A thin edge over :mod:`reconciler.oauth.flows` and :class:`~reconciler.oauth.client.TokenClient`:
reads the link and its client secret from the store, runs the flow the link's
grant asks for, and saves the first tokens with ``GrantStore.save_authorization``.
Registered by :mod:`reconciler.cli`. Never prints a token, code, verifier or secret.
(``token`` and ``keeper`` are registered by the keeper's command module.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from reconciler.errors import EXIT_ERROR, EXIT_OK, ConfigError, LinkctlError

if TYPE_CHECKING:
    from reconciler.cli.output import Context
    from reconciler.domain.tokens import ClientConfig, TokenResponse
    from reconciler.oauth.client import TokenClient
    from reconciler.store.base import Store

DEFAULT_TIMEOUT = 300.0
MAX_CLOCK_SKEW = 60.0  # seconds; beyond this, expiry maths and JWT checks go wrong


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``authorize`` and ``doctor`` to the ``linkctl`` parser."""
    p = subparsers.add_parser(
        "authorize",
        help="consent once (browser or device code) and store the link's first tokens",
        description="Run the link's OAuth flow: authorization code + PKCE (a loopback listener "
        "receives the redirect, or paste the final URL), the device flow with --device, or the "
        "client credentials grant for client_credentials links.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    p.add_argument("--device", action="store_true", help="use the device authorization flow (RFC 8628)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for the consent (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(handler=authorize_command)

    p = subparsers.add_parser(
        "doctor",
        help="check links: endpoints, TLS, discovery, redirect URL, refresh token, clock skew",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="one link (default: every link)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per-request timeout")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(handler=doctor_command)


# -- authorize -------------------------------------------------------------------------


def _load_config(ctx: Context, name: str) -> ClientConfig:
    from reconciler.keeper import client_config

    store = ctx.store()
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


def _display_available(env: Mapping[str, str]) -> bool:
    """A browser can plausibly be shown (a GUI session, not SSH/CI)."""
    if sys.platform in ("darwin", "win32"):
        return not env.get("SSH_CONNECTION")
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _open_browser(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url, new=1)
    except webbrowser.Error:
        return False


def authorize_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl authorize NAME``: obtain and store the first tokens of a link."""
    from reconciler.oauth import flows
    from reconciler.oauth.client import TokenClient

    config = _load_config(ctx, args.name)
    with TokenClient(metadata_cache=ctx.metadata_cache()) as client:
        if config.grant == "client_credentials":
            ctx.notice(
                f"link {config.link!r} uses the client credentials grant: no consent is needed "
                "(the keeper obtains tokens by itself); obtaining a token now"
            )
            response = client.client_credentials(config)
        elif args.device or config.grant == "device_code":
            config = dataclasses.replace(config, grant="device_code")
            response = flows.run_device_flow(client, config, announce=ctx.out, timeout=args.timeout)
        else:
            use_browser = not args.no_browser and _display_available(ctx.env)
            response = flows.run_authorization_code(
                client,
                config,
                announce=_url_on_stdout(ctx),
                open_browser=_open_browser if use_browser else None,
                stdin=sys.stdin,
                timeout=args.timeout,
            )
    store = ctx.store()
    store.save_authorization(config.link, response, clock_now=time.time())
    _audit_authorization(ctx, store, config, response)
    _report(ctx, args, config, response)
    return EXIT_OK


def _audit_authorization(ctx: Context, store: Store, config: ClientConfig, response: TokenResponse) -> None:
    """Record who consented, when, to which grant type and scopes (never a token)."""
    from reconciler.cli.core_cmds import _actor
    from reconciler.store.base import Event

    detail = {
        "grant": config.grant,
        "scope": response.scope,
        "refresh_token": response.refresh_token is not None,
        "expires_in": response.expires_in,
    }
    store.add_event(Event("grant.authorized", config.link, _actor(ctx), detail, at=response.received_at))


def _url_on_stdout(ctx: Context) -> Any:
    """Announce: URLs go to stdout on a line of their own (scripts read them), prose to stderr."""

    def announce(text: str) -> None:
        if text.startswith(("http://", "https://")):
            ctx.out(text)
        else:
            ctx.notice(text)

    return announce


def _report(ctx: Context, args: argparse.Namespace, config: ClientConfig, response: TokenResponse) -> None:
    summary = {
        "link": config.link,
        "grant": config.grant,
        "refresh_token": response.refresh_token is not None,
        "expires_in": response.expires_in,
        "scope": response.scope,
    }
    if getattr(args, "output", "text") == "json":
        ctx.json(summary)
        return
    lifetime = "no stated lifetime" if response.expires_in is None else f"{response.expires_in:g} s"
    refresh = "with a refresh token" if response.refresh_token is not None else "without a refresh token"
    ctx.notice(f"authorized link {config.link!r}: access token ({lifetime}) {refresh}; tokens saved")


# -- doctor ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Finding:
    """One doctor result: severity ok | warning | error, what was found, and how to fix it."""

    link: str
    check: str
    severity: str
    message: str
    fix: str | None = None


def doctor_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl doctor [NAME]``: findings with fixes; exit 1 when any finding is an error."""
    from reconciler.oauth.client import TokenClient

    store = ctx.store()
    if args.name:
        link = store.get_link(args.name)
        if link is None:
            raise ConfigError(f"no link named {args.name!r} in the store", hint="run `linkctl list`")
        names = [link.name]
    else:
        names = [link.name for link in store.list_links()]
    findings: list[Finding] = []
    with TokenClient(timeout=args.timeout, metadata_cache=ctx.metadata_cache()) as client:
        for name in names:
            findings.extend(diagnose_link(ctx, client, name))
    if args.output == "json":
        ctx.json([dataclasses.asdict(f) for f in findings])
    else:
        for f in findings:
            ctx.out(f"{f.severity:7} {f.link}: {f.check}: {f.message}")
            if f.fix and f.severity != "ok":
                ctx.out(f"        fix: {f.fix}")
        if not findings:
            ctx.out("no links in the store")
    return EXIT_ERROR if any(f.severity == "error" for f in findings) else EXIT_OK


# What providers print when the redirect URL is not registered for the client.
_REDIRECT_MISMATCH = (
    "redirect_uri_mismatch",  # Google
    "aadsts50011",  # Microsoft
    "redirect_uri did not match",  # oidc-provider and others
    "invalid redirect_uri",
    "invalid_redirect_uri",
    "redirect uri is not registered",
)
# A refresh token no provider ever issued: refused as invalid_grant when the client
# authenticates, as invalid_client when its ID or secret is wrong (or expired).
DOCTOR_PROBE_TOKEN = "linkctl-doctor-probe-not-a-refresh-token"


def _check_redirect_registration(client: TokenClient, config: ClientConfig, add: Any) -> None:
    """Ask the authorization endpoint as a browser would and read its verdict (no consent given)."""
    from reconciler.oauth import flows

    request = flows.build_authorization_request(config)
    probe = client.probe(request.url)
    if probe.status_code is None:
        return  # reachability is reported by the endpoint check
    text = (probe.body + " " + (probe.location or "")).lower()
    fix = f"register exactly {config.redirect_uri} as a redirect URI of client {config.client_id}"
    if any(marker in text for marker in _REDIRECT_MISMATCH):
        add(
            "redirect URL",
            "error",
            "the provider refuses the redirect URL: it is not registered for this client",
            fix,
        )
    elif (
        probe.location and probe.location.startswith(config.redirect_uri or "") and "error=" in probe.location
    ):
        error = parse_qs(urlsplit(probe.location).query).get("error", ["?"])[0]
        add(
            "authorization request",
            "error",
            f"the provider answered the authorization request with {error}",
            "check scopes, grant types and the client's registration at the provider",
        )
    elif probe.status_code in (200, 302, 303):
        add("redirect URL", "ok", "the provider accepts the redirect URL (a login would come next)")
    else:
        add(
            "authorization request",
            "warning",
            f"the authorization endpoint answered HTTP {probe.status_code}",
            fix,
        )


def _check_client_authentication(client: TokenClient, config: ClientConfig, add: Any) -> None:
    """Send a made-up refresh token: the error code tells whether the client ID and secret work."""
    from reconciler.errors import GrantError, ProviderConfigError, TransientProviderError
    from reconciler.secrets import Secret

    try:
        client.refresh(config, Secret(DOCTOR_PROBE_TOKEN))
    except GrantError:
        add(
            "client authentication",
            "ok",
            "client ID and secret accepted (a made-up refresh token was refused)",
        )
    except ProviderConfigError as error:
        add("client authentication", "error", error.message, error.hint)
    except TransientProviderError as error:
        add("client authentication", "warning", f"could not check: {error.message}", error.hint)
    else:
        add(
            "client authentication",
            "warning",
            "the provider accepted a made-up refresh token",
            "this provider does not validate refresh tokens as expected; tokens may misbehave",
        )


def diagnose_link(ctx: Context, client: TokenClient, name: str) -> list[Finding]:
    """Run every check on one link."""
    from reconciler.oauth import flows, providers

    found: list[Finding] = []

    def add(check: str, severity: str, message: str, fix: str | None = None) -> None:
        found.append(Finding(name, check, severity, message, fix))

    try:
        config = _load_config(ctx, name)
    except LinkctlError as error:
        add("credentials", "warning", error.message, error.hint)
        return found
    if config.issuer and (config.token_endpoint is None or config.authorization_endpoint is None):
        try:
            config = client.with_endpoints(config)
            add("discovery", "ok", f"metadata found for issuer {config.issuer}")
        except LinkctlError as error:
            add("discovery", "error", error.message, error.hint)
            return found
    # Reachability, TLS and clock skew, from a plain GET of each endpoint.
    endpoints = [("token endpoint", config.token_endpoint)]
    if config.grant == "authorization_code":
        endpoints.append(("authorization endpoint", config.authorization_endpoint))
    for label, url in endpoints:
        if not url:
            add(label, "error", "not declared", "declare the endpoint, or spec.issuer to discover it")
            continue
        probe = client.probe(url)
        if probe.error is not None:
            fix = (
                "fix the certificate chain or CA bundle" if probe.tls_error else "check DNS, proxy, firewall"
            )
            add(label, "error", f"{url}: {probe.error}", fix)
            continue
        add(label, "ok", f"{url} answers (HTTP {probe.status_code})")
        if probe.server_time is not None:
            skew = probe.server_time - time.time()
            if abs(skew) > MAX_CLOCK_SKEW:
                add(
                    "clock",
                    "error",
                    f"the local clock differs from the provider's by {skew:+.0f} s",
                    "synchronize the clock (NTP); token expiry and JWT checks depend on it",
                )
    # The redirect URL the provider must have registered.
    if config.grant == "authorization_code":
        if not config.redirect_uri:
            add("redirect URL", "error", "no redirect URL", "declare an Instance with spec.baseUrl and apply")
        else:
            add(
                "redirect URL to register",
                "ok",
                f"register exactly {config.redirect_uri} at the provider",
                "a mismatch shows as redirect_uri_mismatch (Google) or AADSTS50011 (Microsoft)",
            )
        if config.redirect_uri and config.authorization_endpoint and config.client_id:
            _check_redirect_registration(client, config, add)
        causes, fixes = flows.offline_diagnosis(config)
        specific = [c for c in causes if "(missing)" in c or "not sent" in c or "unless prompt" in c]
        if specific:
            add("refresh token", "warning", "; ".join(specific), "; ".join(fixes))
    if config.client_secret is not None and config.token_endpoint and config.client_id:
        _check_client_authentication(client, config, add)
    # What the store knows from earlier requests (last error, secret expiry).
    grant = ctx.store().get_grant(name)
    if grant is not None and grant.last_error:
        severity = (
            "error" if grant.error_class in ("configuration_error", "needs_authorization") else "warning"
        )
        preset = providers.find_preset(config.provider)
        meaning = preset.explain(None, grant.last_error) if preset else None
        add("last error", severity, grant.last_error, meaning.fix if meaning else None)
    elif grant is None or grant.access_expires_at is None:
        add("grant", "warning", "not authorized yet", f"run `linkctl authorize {name}`")
    return found
