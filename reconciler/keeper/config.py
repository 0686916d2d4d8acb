"""The token client the keeper needs, and the one builder of a link's ClientConfig from the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from reconciler.domain.links import uses_client_credentials
from reconciler.domain.tokens import ClientConfig

if TYPE_CHECKING:
    from reconciler.domain.tokens import TokenResponse
    from reconciler.secrets import Secret
    from reconciler.store.base import Store, StoredLink

__all__ = ["TokenClientLike", "client_config", "is_client_credentials"]


class TokenClientLike(Protocol):
    """What the keeper needs of :class:`reconciler.oauth.client.TokenClient`."""

    def refresh(self, config: ClientConfig, refresh_token: Secret) -> TokenResponse:
        """Refresh grant (RFC 6749 §6)."""

    def client_credentials(self, config: ClientConfig) -> TokenResponse:
        """Client credentials grant (RFC 6749 §4.4)."""

    def revoke(self, config: ClientConfig, token: Secret, *, token_type_hint: str = "refresh_token") -> None:
        """Token revocation (RFC 7009)."""

    def with_endpoints(self, config: ClientConfig, *, revoking: bool = False) -> ClientConfig:
        """``config`` with endpoints discovered from its issuer when it lacks some."""


def client_config(store: Store, link: StoredLink) -> ClientConfig:
    """The token-request configuration of a stored link (secrets decrypted from the store)."""
    ref = link.spec.get("clientSecret")
    secret = None
    if isinstance(ref, dict) and "$secret" in ref:
        secret = store.read_secret(link.name, str(ref["$secret"]))
    return ClientConfig.from_spec(
        link.name, link.spec, secret, lambda field: store.read_secret(link.name, field)
    )


def is_client_credentials(link: StoredLink) -> bool:
    """Whether a link obtains its tokens without a human (the client-credentials grant)."""
    return uses_client_credentials(link.spec)
