"""What the server's pages show: the links list (attention first, filters, pages) and one link's detail.

Built on :mod:`reconciler.services.views` (the rows ``linkctl list``/``show`` print) and
the same fixes ``linkctl doctor`` gives (:func:`reconciler.services.doctor.last_error_fix`),
so a page and a command never disagree. Pure data: :mod:`reconciler.server.pages`
renders it. Never a secret: sealed fields show as sealed, tokens only as expiry times.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import Clock, iso_time
from reconciler.domain.grants import GrantStatus
from reconciler.errors import UsageError
from reconciler.services import views

if TYPE_CHECKING:
    from reconciler.store.base import Store, StoredLink
    from reconciler.store.grants import Grant

PAGE_SIZE = 200

# What each status reads as on a page, and how urgently it needs a human (0 first).
STATUS_LABELS = {
    GrantStatus.CONFIGURATION_ERROR: "configuration error",
    GrantStatus.NEEDS_AUTHORIZATION: "needs authorization",
    GrantStatus.TRANSIENT_ERROR: "transient error",
    GrantStatus.PENDING_CREDENTIALS: "pending credentials",
    GrantStatus.REFRESHING: "refreshing",
    GrantStatus.HEALTHY: "healthy",
}
_RANK = {status: rank for rank, status in enumerate(STATUS_LABELS)}
ATTENTION = frozenset(
    {
        GrantStatus.CONFIGURATION_ERROR,
        GrantStatus.NEEDS_AUTHORIZATION,
        GrantStatus.TRANSIENT_ERROR,
        GrantStatus.PENDING_CREDENTIALS,
    }
)
_ENDPOINTS = (
    ("authorization endpoint", "authorizationEndpoint"),
    ("token endpoint", "tokenEndpoint"),
    ("revocation endpoint", "revocationEndpoint"),
    ("device authorization endpoint", "deviceAuthorizationEndpoint"),
    ("issuer (discovery)", "issuer"),
)


def effective_status(view: dict[str, Any]) -> GrantStatus:
    """A row's status; a link without a grant row is pending credentials or needs authorization."""
    status = view.get("status")
    if status in STATUS_LABELS:
        return GrantStatus(status)
    return GrantStatus.PENDING_CREDENTIALS if not view.get("client_id") else GrantStatus.NEEDS_AUTHORIZATION


def _row(view: dict[str, Any]) -> dict[str, Any]:
    status = effective_status(view)
    label = STATUS_LABELS[status]
    if status is GrantStatus.TRANSIENT_ERROR and view.get("retry_at"):
        label += f", next retry {view['retry_at']}"
    attention = status in ATTENTION or bool(view.get("reauthorize_scopes"))
    return {
        **view,
        "status": status.value,
        "status_label": label,
        "attention": attention,
        "rank": _RANK[status],
    }


@dataclasses.dataclass(frozen=True)
class LinksPage:
    """One page of the links list, with what its filters and summary need."""

    rows: list[dict[str, Any]]
    total: int  # links matching the filters
    all_links: int
    attention: int  # links (of all) needing a human
    counts: dict[str, int]  # links (of all) per status value
    providers: list[str]
    status: str | None
    provider: str | None
    page: int
    pages: int
    page_size: int


def _choice(value: str | None, allowed: list[str], what: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise UsageError(f"unknown {what} {value[:40]!r}", hint=f"choose one of: {', '.join(allowed)}")
    return value


@dataclasses.dataclass(frozen=True)
class _Triage:
    """What sorting, filtering and counting need of one link (cheap: no times formatted)."""

    attention: bool
    rank: int
    name: str
    provider: str
    status: str
    link: StoredLink
    grant: Grant | None


def _triage(link: StoredLink, grant: Grant | None) -> _Triage:
    from reconciler.plan import missing_scopes

    spec = link.spec
    if grant is not None and grant.status in _RANK:
        status = GrantStatus(grant.status)
    else:
        status = GrantStatus.NEEDS_AUTHORIZATION if spec.get("clientId") else GrantStatus.PENDING_CREDENTIALS
    missing = missing_scopes(list(spec.get("scopes") or ()), views.authorized_scopes(grant))
    attention = status in ATTENTION or bool(missing)
    return _Triage(attention, _RANK[status], link.name, link.provider, status.value, link, grant)


def links_page(
    store: Store,
    *,
    status: str | None = None,
    provider: str | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> LinksPage:
    """Links needing attention first (then by name), filtered by status and provider, one page of them.

    Every link is triaged (status, attention) for the order and the counts; only the rows
    of the page shown are built in full (times formatted, the view of ``linkctl list``).
    """
    grants = {g.link_name: g for g in store.list_grants()}
    triaged = [_triage(link, grants.get(link.name)) for link in store.list_links()]
    triaged.sort(key=lambda t: (not t.attention, t.rank, t.name))
    providers = sorted({t.provider for t in triaged})
    status = _choice(status, [*(s.value for s in STATUS_LABELS), "attention"], "status")
    provider = _choice(provider, providers, "provider") if provider else None
    chosen = [
        t
        for t in triaged
        if (status is None or t.status == status or (status == "attention" and t.attention))
        and (provider is None or t.provider == provider)
    ]
    pages = max(1, -(-len(chosen) // page_size))
    if page < 1 or page > pages:
        raise UsageError(f"page {page} does not exist", hint=f"pages run from 1 to {pages}")
    shown = chosen[(page - 1) * page_size : page * page_size]
    return LinksPage(
        rows=[_row(views.link_view(t.link, t.grant)) for t in shown],
        total=len(chosen),
        all_links=len(triaged),
        attention=sum(1 for t in triaged if t.attention),
        counts=dict(Counter(t.status for t in triaged)),
        providers=providers,
        status=status,
        provider=provider,
        page=page,
        pages=pages,
        page_size=page_size,
    )


def link_page(store: Store, name: str, *, events: int = 20, clock: Clock = time.time) -> dict[str, Any]:
    """One link's detail: its view, endpoints, what to do next, the last error's fix, recent events."""
    from reconciler.services.doctor import last_error_fix

    link = views.stored_link(store, name)
    detail = _row(views.detailed_view(store, link))
    spec = detail["spec"]
    detail["endpoints"] = [(label, spec.get(key)) for label, key in _ENDPOINTS if spec.get(key)]
    detail["client_auth"] = spec.get("clientAuth")
    detail["has_client_secret"] = spec.get("clientSecret") == views.SEALED
    status = GrantStatus(detail["status"])
    detail["fix"] = None
    if detail.get("last_error"):
        detail["fix"] = last_error_fix(link.provider, str(detail["last_error"]))
    detail["next_step"] = _next_step(detail, status)
    detail["can_authorize"] = detail.get("grant") == "authorization_code" and bool(spec.get("clientId"))
    machine = detail.get("grant") == "client_credentials"
    detail["can_refresh"] = bool(detail.get("has_refresh_token")) or machine
    detail["can_revoke"] = bool(detail.get("has_refresh_token") or detail.get("access_token_expires_at"))
    detail["events"] = [
        {
            "at": iso_time(event.at, zulu=True),
            "action": event.action,
            "actor": event.actor,
            "detail": ", ".join(f"{k}={v}" for k, v in sorted(event.detail.items()) if v is not None),
        }
        for event in store.list_events(link=name, limit=events)
    ]
    detail["checked_at"] = iso_time(clock(), zulu=True)
    return detail


def _next_step(detail: dict[str, Any], status: GrantStatus) -> str | None:
    """The seed's order of work: register the redirect URL, declare the credentials, then authorize."""
    name = detail["name"]
    if not detail.get("redirect_url") and detail.get("grant") == "authorization_code":
        return "declare an Instance with spec.baseUrl in git and apply: the redirect URL derives from it"
    if status is GrantStatus.PENDING_CREDENTIALS:
        return (
            "register the redirect URL above at the provider, then declare the client ID and secret"
            " it gives you in git (SOPS-encrypted) and apply"
        )
    if detail.get("reauthorize_scopes"):
        return "new scopes were declared: press Re-authorize so the provider asks for them"
    if status is GrantStatus.NEEDS_AUTHORIZATION:
        if detail.get("grant") == "device_code":
            return f"run `linkctl authorize {name}` (device flow) on a terminal"
        return "press Authorize and consent at the provider"
    if status is GrantStatus.CONFIGURATION_ERROR:
        return "fix the client registration or secret (see the fix below), apply, then Refresh now"
    return None


def instance_base_url(store: Store) -> str | None:
    """The Instance's baseUrl as the stored redirect URLs show it (None: no link has one)."""
    from reconciler.validate.urls import REDIRECT_PATH

    for link in store.list_links():
        redirect = link.spec.get("redirectUri")
        suffix = REDIRECT_PATH.format(name=link.name)
        if isinstance(redirect, str) and redirect.endswith(suffix):
            return redirect[: -len(suffix)]
    return None


def authorization_origin_hint(store: Store, spec: dict[str, Any]) -> str | None:
    """Where Authorize will send the browser: the declared, cached or issuer's authorization endpoint."""
    endpoint = spec.get("authorizationEndpoint")
    issuer = spec.get("issuer")
    if not endpoint and issuer:
        cached = store.get_provider_metadata(str(issuer))
        endpoint = (cached[0].get("authorization_endpoint") if cached else None) or issuer
    return str(endpoint) if endpoint else None
