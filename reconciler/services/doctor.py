"""Doctor: check links' endpoints, TLS, discovery, redirect URL, client authentication, clock skew.

Each check adds a :class:`Finding` (ok | warning | error, with a fix); nothing here
prints. ``linkctl doctor`` renders them; a server page can render the same list.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from reconciler.domain.clock import Clock
from reconciler.errors import ConfigError, LinkctlError
from reconciler.services.authorize import load_client_config

if TYPE_CHECKING:
    from reconciler.oauth.client import ClientConfig, TokenClient
    from reconciler.store.base import Store

MAX_CLOCK_SKEW = 60.0  # seconds; beyond this, expiry maths and JWT checks go wrong


@dataclasses.dataclass(frozen=True)
class Finding:
    """One doctor result: severity ok | warning | error, what was found, and how to fix it."""

    link: str
    check: str
    severity: str
    message: str
    fix: str | None = None


def doctor_names(store: Store, name: str | None) -> list[str]:
    """The links a doctor run checks: ``name`` (which must exist), else every stored link."""
    if name:
        link = store.get_link(name)
        if link is None:
            raise ConfigError(f"no link named {name!r} in the store", hint="run `linkctl list`")
        return [link.name]
    return [link.name for link in store.list_links()]


def diagnose(
    store: Store, client: TokenClient, names: list[str], *, clock: Clock = time.time
) -> list[Finding]:
    """Every check on each of ``names``, in order."""
    findings: list[Finding] = []
    for name in names:
        findings.extend(diagnose_link(store, client, name, clock=clock))
    return findings


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


def last_error_fix(provider: str, last_error: str) -> str | None:
    """The fix of a stored last error, from the provider preset's known codes (doctor and pages)."""
    from reconciler.oauth import providers

    preset = providers.find_preset(provider)
    meaning = preset.explain(None, last_error) if preset else None
    return meaning.fix if meaning else None


def diagnose_link(store: Store, client: TokenClient, name: str, *, clock: Clock = time.time) -> list[Finding]:
    """Run every check on one link."""
    from reconciler.oauth import flows

    found: list[Finding] = []

    def add(check: str, severity: str, message: str, fix: str | None = None) -> None:
        found.append(Finding(name, check, severity, message, fix))

    try:
        config = load_client_config(store, name)
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
            skew = probe.server_time - clock()
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
    grant = store.get_grant(name)
    if grant is not None and grant.last_error:
        severity = (
            "error" if grant.error_class in ("configuration_error", "needs_authorization") else "warning"
        )
        add("last error", severity, grant.last_error, last_error_fix(config.provider, grant.last_error))
    elif grant is None or grant.access_expires_at is None:
        add("grant", "warning", "not authorized yet", f"run `linkctl authorize {name}`")
    return found
