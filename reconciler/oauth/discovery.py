"""Authorization server metadata: OpenID Connect Discovery 1.0 and RFC 8414.

Pure functions only (no HTTP): where to look for a metadata document
(:func:`discovery_urls`), how to read and check one (:func:`parse_metadata`,
which refuses a document whose ``issuer`` differs from the one asked for), and
how to fill a link's missing endpoints from it (:func:`apply_metadata`).

:meth:`reconciler.oauth.client.TokenClient.discover` fetches the documents;
``linkctl doctor`` and the flows call it for custom links that declare only an
``issuer``. Caching metadata in the store (table ``provider_metadata``) is a
later step: a cache would sit between ``TokenClient.discover`` and its callers
and store :meth:`ProviderMetadata.to_json` output keyed by issuer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from reconciler.errors import ProviderConfigError

if TYPE_CHECKING:
    from reconciler.domain.tokens import ClientConfig

OIDC_SUFFIX = "/.well-known/openid-configuration"
RFC8414_SUFFIX = "/.well-known/oauth-authorization-server"


METADATA_MAX_AGE = 24 * 3600.0  # discovery documents change rarely; refetch daily


class MetadataCache(Protocol):
    """Where discovery documents are cached across processes (the store implements it)."""

    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        """A cached metadata document and when it was fetched."""

    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        """Cache a metadata document."""


@dataclasses.dataclass(frozen=True)
class ProviderMetadata:
    """The fields of an authorization server's metadata that linkctl uses."""

    issuer: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    revocation_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    introspection_endpoint: str | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    authorization_response_iss_parameter_supported: bool = False
    source_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (the shape a store cache would keep)."""
        return dataclasses.asdict(self)


def discovery_urls(issuer: str) -> list[str]:
    """Metadata URLs to try, in order: OIDC Discovery, then RFC 8414 (path-inserted)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = urlunsplit((parts.scheme, parts.netloc, path + OIDC_SUFFIX, "", ""))
    # RFC 8414 §3.1: the well-known suffix goes between host and the issuer's path.
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, RFC8414_SUFFIX + path, "", ""))
    return [oidc, rfc8414] if oidc != rfc8414 else [oidc]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(str(v) for v in value)
    return ()


def _optional_url(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    return value if isinstance(value, str) and value else None


def parse_metadata(
    issuer: str, document: Mapping[str, Any], *, source_url: str | None = None
) -> ProviderMetadata:
    """Check and read a metadata document; its ``issuer`` must equal ``issuer`` exactly."""
    found = document.get("issuer")
    if found != issuer:
        # OIDC Discovery §4.3 / RFC 8414 §3.3: a mismatch means the document is not for this
        # issuer (misconfiguration or an impersonation attempt); never use its endpoints.
        raise ProviderConfigError(
            f"discovery for issuer {issuer} returned metadata for issuer {found!r}",
            hint="set spec.issuer to the provider's exact issuer URL (scheme, host, path, trailing slash)",
        )
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=_optional_url(document, "authorization_endpoint"),
        token_endpoint=_optional_url(document, "token_endpoint"),
        revocation_endpoint=_optional_url(document, "revocation_endpoint"),
        device_authorization_endpoint=_optional_url(document, "device_authorization_endpoint"),
        introspection_endpoint=_optional_url(document, "introspection_endpoint"),
        token_endpoint_auth_methods_supported=_strings(document.get("token_endpoint_auth_methods_supported")),
        code_challenge_methods_supported=_strings(document.get("code_challenge_methods_supported")),
        grant_types_supported=_strings(document.get("grant_types_supported")),
        scopes_supported=_strings(document.get("scopes_supported")),
        authorization_response_iss_parameter_supported=bool(
            document.get("authorization_response_iss_parameter_supported", False)
        ),
        source_url=source_url,
    )


def apply_metadata(config: ClientConfig, metadata: ProviderMetadata) -> ClientConfig:
    """``config`` with endpoints it lacks taken from ``metadata`` (declared values win)."""
    return dataclasses.replace(
        config,
        issuer=config.issuer or metadata.issuer,
        authorization_endpoint=config.authorization_endpoint or metadata.authorization_endpoint,
        token_endpoint=config.token_endpoint or metadata.token_endpoint,
        revocation_endpoint=config.revocation_endpoint or metadata.revocation_endpoint,
        device_authorization_endpoint=config.device_authorization_endpoint
        or metadata.device_authorization_endpoint,
    )


def needs_discovery(config: ClientConfig, *, revoking: bool = False) -> bool:
    """True when a link declares an issuer but lacks an endpoint the grant (or revocation) needs."""
    if not config.issuer:
        return False
    if config.token_endpoint is None or (revoking and config.revocation_endpoint is None):
        return True
    if config.grant == "authorization_code":
        return config.authorization_endpoint is None
    if config.grant == "device_code":
        return config.device_authorization_endpoint is None
    return False
