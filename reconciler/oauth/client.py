"""The token endpoint client: the only code that talks HTTP to OAuth providers.

Every request goes through :class:`TokenClient`; every failure leaves it as one
of the classified errors of :mod:`reconciler.errors` (transient / response lost /
needs authorization / configuration error), explained with the preset's error
table. Tokens arrive wrapped in :class:`~reconciler.secrets.Secret`.

Called by ``oauth.flows`` (first tokens), ``oauth.keeper`` (refresh) and
``linkctl doctor``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from reconciler.secrets import Secret


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """What a token request needs to know about one link (from its stored spec)."""

    link: str
    provider: str
    client_id: str | None
    client_secret: Secret | None
    client_auth: str  # client_secret_basic | client_secret_post | none
    token_endpoint: str | None
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    issuer: str | None = None
    scopes: tuple[str, ...] = ()
    authorize_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    token_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    redirect_uri: str | None = None
    grant: str = "authorization_code"

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], client_secret: Secret | None) -> ClientConfig:
        """Build from a stored link spec (``StoredLink.spec``, effective values)."""
        return cls(
            link=name,
            provider=spec.get("provider", "custom"),
            client_id=spec.get("clientId"),
            client_secret=client_secret,
            client_auth=spec.get("clientAuth") or "client_secret_basic",
            token_endpoint=spec.get("tokenEndpoint"),
            authorization_endpoint=spec.get("authorizationEndpoint"),
            revocation_endpoint=spec.get("revocationEndpoint"),
            device_authorization_endpoint=spec.get("deviceAuthorizationEndpoint"),
            issuer=spec.get("issuer"),
            scopes=tuple(spec.get("scopes") or ()),
            authorize_params=dict(spec.get("authorizeParams") or {}),
            token_params=dict(spec.get("tokenParams") or {}),
            redirect_uri=spec.get("redirectUri"),
            grant=spec.get("grant") or "authorization_code",
        )


@dataclasses.dataclass(frozen=True)
class TokenResponse:
    """A successful token response; ``refresh_token`` is None when the provider sent none."""

    access_token: Secret
    refresh_token: Secret | None
    token_type: str | None
    expires_in: float | None  # seconds, as sent (None when absent)
    scope: str | None
    received_at: float  # clock time when the response arrived
    id_token: Secret | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # non-secret fields only
