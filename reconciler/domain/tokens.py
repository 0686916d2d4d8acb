"""Token-request data: a link's client configuration and the provider's answers.

Plain frozen dataclasses, produced by :mod:`reconciler.oauth.client` and read by the
store (which persists :class:`TokenResponse`), the flows and the keeper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.errors import StateError
from reconciler.secrets import Secret

__all__ = ["ClientConfig", "DeviceAuthorization", "TokenResponse"]


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """What a token request needs to know about one link (from its stored spec)."""

    link: str
    provider: str
    client_id: str | Secret | None  # a Secret when it was encrypted in the file
    client_secret: Secret | None
    client_auth: str  # client_secret_basic | client_secret_post | none
    token_endpoint: str | None
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    issuer: str | None = None
    scopes: tuple[str, ...] = ()
    authorize_params: Mapping[str, str | Secret] = dataclasses.field(default_factory=dict)
    token_params: Mapping[str, str | Secret] = dataclasses.field(default_factory=dict)
    redirect_uri: str | None = None
    grant: str = "authorization_code"

    @classmethod
    def from_spec(
        cls,
        name: str,
        spec: Mapping[str, Any],
        client_secret: Secret | None,
        read_secret: Callable[[str], Secret | None] | None = None,
    ) -> ClientConfig:
        """Build from a stored link spec (``StoredLink.spec``); ``read_secret`` opens sealed fields."""

        def opened(value: Any) -> Any:
            if not (isinstance(value, Mapping) and "$secret" in value):
                return value
            field = str(value["$secret"])
            secret = read_secret(field) if read_secret is not None else None
            if secret is None:
                raise StateError(
                    f"link {name!r}: the sealed value of {field} is missing from the store",
                    hint="apply the link again to store it",
                )
            return secret

        return cls(
            link=name,
            provider=spec.get("provider", "custom"),
            client_id=opened(spec.get("clientId")),
            client_secret=client_secret,
            client_auth=spec.get("clientAuth") or "client_secret_basic",
            token_endpoint=spec.get("tokenEndpoint"),
            authorization_endpoint=spec.get("authorizationEndpoint"),
            revocation_endpoint=spec.get("revocationEndpoint"),
            device_authorization_endpoint=spec.get("deviceAuthorizationEndpoint"),
            issuer=spec.get("issuer"),
            scopes=tuple(spec.get("scopes") or ()),
            authorize_params={k: opened(v) for k, v in (spec.get("authorizeParams") or {}).items()},
            token_params={k: opened(v) for k, v in (spec.get("tokenParams") or {}).items()},
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


@dataclasses.dataclass(frozen=True)
class DeviceAuthorization:
    """An RFC 8628 device authorization response (§3.2); ``device_code`` stays secret."""

    device_code: Secret
    user_code: str  # shown to the user, so not a Secret
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float  # seconds between polls (RFC 8628 default 5 when absent)
    received_at: float

    @property
    def expires_at(self) -> float:
        """Clock time after which the device code is useless."""
        return self.received_at + self.expires_in
