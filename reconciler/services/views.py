"""Link views: the data ``linkctl list``/``show`` (and the coming links page) render.

Never a secret value: sealed spec fields show as :data:`SEALED`.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import iso_time
from reconciler.errors import LinkctlError

if TYPE_CHECKING:
    from reconciler.store.base import Store, StoredLink
    from reconciler.store.grants import Grant

SEALED = "(stored, encrypted)"


def sealed_view(value: Any) -> Any:
    """A spec value as shown: each ``{"$secret": field}`` marker says it is sealed, never the value."""
    if isinstance(value, dict):
        return SEALED if "$secret" in value else {k: sealed_view(v) for k, v in value.items()}
    return value


def authorized_scopes(grant: Any) -> Any:
    """The scopes a grant was consented to, as recorded at authorization (None: unknown)."""
    return None if grant is None else grant.details.get("authorized_scopes")


def link_view(link: StoredLink, grant: Grant | None) -> dict[str, Any]:
    """One link's row: provider, status, source, redirect URL, grant timing, scopes to re-consent."""
    view: dict[str, Any] = {
        "name": link.name,
        "provider": link.provider,
        "status": grant.status if grant else "unknown",
        "source": f"{link.source_file}:{link.source_line}" if link.source_file else None,
        "redirect_url": link.spec.get("redirectUri"),
        "grant": link.spec.get("grant"),
        "client_id": sealed_view(link.spec.get("clientId")),
        "scopes": list(link.spec.get("scopes") or ()),
        "generation": link.generation,
        "updated_at": iso_time(link.updated_at, zulu=True),
    }
    if grant is not None:
        view.update(
            {
                "last_refresh_at": iso_time(grant.last_refresh_at, zulu=True),
                "access_token_expires_at": iso_time(grant.access_expires_at, zulu=True),
                "next_refresh_at": iso_time(grant.next_refresh_at, zulu=True),
                "retry_at": iso_time(grant.retry_at, zulu=True),
                "has_refresh_token": grant.has_refresh_token,
                "last_error": grant.last_error,
                "error_class": grant.error_class,
            }
        )
    from reconciler.plan import missing_scopes

    # The grant keeps working with what was consented; new scopes need a new consent.
    view["reauthorize_scopes"] = list(missing_scopes(view["scopes"], authorized_scopes(grant)))
    return view


def link_views(store: Store) -> list[dict[str, Any]]:
    """Every stored link's view, ordered by name."""
    grants = {g.link_name: g for g in store.list_grants()}
    return [link_view(link, grants.get(link.name)) for link in store.list_links()]


def status_text(view: dict[str, Any]) -> str:
    """The status column: the grant's status, and new scopes that need a new consent."""
    missing = view.get("reauthorize_scopes")
    if missing:
        return f"{view['status']}; needs re-authorization for new scopes: {', '.join(missing)}"
    return str(view["status"])


def stored_link(store: Store, name: str) -> StoredLink:
    """A stored link by name; ``LinkctlError`` with the closest name as a hint when absent."""
    link = store.get_link(name)
    if link is None:
        known = [link.name for link in store.list_links()]
        close = difflib.get_close_matches(name, known, n=1)
        raise LinkctlError(
            f"no stored link named {name!r}",
            hint=f"did you mean {close[0]!r}?" if close else "see `linkctl list`",
        )
    return link


def detailed_view(store: Store, link: StoredLink) -> dict[str, Any]:
    """``show``'s data: the link's view plus its spec with every secret shown as sealed."""
    view = link_view(link, store.get_grant(link.name))
    spec = {k: sealed_view(v) for k, v in link.spec.items() if k not in ("clientSecret", "presetAdded")}
    spec["clientSecret"] = SEALED if link.secret_fingerprints.get("clientSecret") else None
    view["spec"] = spec
    return view
