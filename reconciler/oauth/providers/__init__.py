"""Provider presets as data: one YAML file per provider in this folder.

A preset fills endpoints, required authorize parameters and scopes, the
client-auth method, and says what provider error codes mean. Validation,
planning and the OAuth client all read presets through :func:`get_preset`
and :func:`resolve`; no code branches on a provider's name elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent
PROVIDERS = ("google", "microsoft", "custom")


@dataclasses.dataclass(frozen=True)
class ErrorMeaning:
    """What a provider error code means and what to do about it."""

    error_class: str  # needs_authorization | configuration_error | transient
    meaning: str
    fix: str


@dataclasses.dataclass(frozen=True)
class Preset:
    """A provider preset, as loaded from its YAML file."""

    name: str
    display_name: str
    issuer: str | None
    authorization_endpoint: str | None
    token_endpoint: str | None
    revocation_endpoint: str | None
    device_authorization_endpoint: str | None
    authorize_params: Mapping[str, str]
    required_scopes: Sequence[str]
    scope_separator: str
    client_auth: str
    rotates_refresh_tokens: bool | None
    refresh_token_inactivity_days: int | None
    redirect_require_https: bool
    redirect_allow_private_ip: bool
    hosts: Sequence[str]
    errors: Mapping[str, ErrorMeaning]
    clouds: Mapping[str, str]
    default_tenant: str | None

    def explain(self, code: str | None, description: str | None = None) -> ErrorMeaning | None:
        """Meaning of an error code; AADSTS codes inside the description win."""
        if description:
            for token in description.replace(":", " ").split():
                if token.startswith("AADSTS") and token in self.errors:
                    return self.errors[token]
        if code and code in self.errors:
            return self.errors[code]
        return None


@dataclasses.dataclass(frozen=True)
class ResolvedEndpoints:
    """Endpoints and parameters of one link after applying its preset."""

    authorization_endpoint: str | None
    token_endpoint: str | None
    revocation_endpoint: str | None
    device_authorization_endpoint: str | None
    issuer: str | None
    scopes: tuple[str, ...]
    added_scopes: tuple[str, ...]  # scopes the preset added (shown by plan)
    authorize_params: Mapping[str, str]  # preset params merged with declared extras
    added_authorize_params: Mapping[str, str]
    client_auth: str


def find_preset(name: str) -> Preset | None:
    """The preset of a provider name, or None for an unknown one (a hand-built config)."""
    return get_preset(name) if name in PROVIDERS else None


def join_scopes(provider: str, scopes: Iterable[str]) -> str:
    """Scopes joined as the provider expects them (a space unless its preset says otherwise)."""
    preset = find_preset(provider)
    return (preset.scope_separator if preset else " ").join(scopes)


@functools.cache
def get_preset(name: str) -> Preset:
    """Load a preset by provider name (``KeyError`` for an unknown one)."""
    if name not in PROVIDERS:
        raise KeyError(name)
    raw: dict[str, Any] = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return Preset(
        name=raw["name"],
        display_name=raw.get("displayName", name),
        issuer=raw.get("issuer"),
        authorization_endpoint=raw.get("authorizationEndpoint"),
        token_endpoint=raw.get("tokenEndpoint"),
        revocation_endpoint=raw.get("revocationEndpoint"),
        device_authorization_endpoint=raw.get("deviceAuthorizationEndpoint"),
        authorize_params=dict(raw.get("authorizeParams") or {}),
        required_scopes=tuple(raw.get("requiredScopes") or ()),
        scope_separator=raw.get("scopeSeparator", " "),
        client_auth=raw.get("clientAuth", "client_secret_basic"),
        rotates_refresh_tokens=raw.get("rotatesRefreshTokens"),
        refresh_token_inactivity_days=raw.get("refreshTokenInactivityDays"),
        redirect_require_https=bool(raw.get("redirect", {}).get("requireHttps", True)),
        redirect_allow_private_ip=bool(raw.get("redirect", {}).get("allowPrivateIp", True)),
        hosts=tuple(raw.get("hosts") or ()),
        errors={
            code: ErrorMeaning(error_class=v["class"], meaning=v["meaning"], fix=v["fix"])
            for code, v in (raw.get("errors") or {}).items()
        },
        clouds=dict(raw.get("clouds") or {}),
        default_tenant=raw.get("defaultTenant"),
    )


def _fill(template: str | None, values: Mapping[str, str]) -> str | None:
    return template.format(**values) if template else None


_RESOLVE_KEYS = (
    "provider",
    "cloud",
    "tenant",
    "clientAuth",
    "authorizationEndpoint",
    "tokenEndpoint",
    "revocationEndpoint",
    "deviceAuthorizationEndpoint",
    "issuer",
)


def resolve(spec: Mapping[str, Any]) -> ResolvedEndpoints:
    """Apply a link's preset to its declared spec (camelCase keys as in the YAML)."""
    # Thousands of links share a handful of shapes: resolve each shape once.
    return _resolve(
        tuple(map(spec.get, _RESOLVE_KEYS)),
        tuple(spec.get("scopes") or ()),
        tuple(sorted((spec.get("authorizeParams") or {}).items())),
    )


@functools.lru_cache(maxsize=4096)
def _resolve(
    fields: tuple[Any, ...], scopes: tuple[str, ...], params: tuple[tuple[str, str], ...]
) -> ResolvedEndpoints:
    spec = dict(zip(_RESOLVE_KEYS, fields, strict=True))
    spec["scopes"] = scopes
    spec["authorizeParams"] = dict(params)
    preset = get_preset(spec.get("provider") or "custom")
    values = {
        "host": preset.clouds.get(spec.get("cloud") or "global", ""),
        "tenant": spec.get("tenant") or preset.default_tenant or "",
    }
    declared_scopes = tuple(spec.get("scopes") or ())
    added_scopes = tuple(s for s in preset.required_scopes if s not in declared_scopes)
    declared_params = dict(spec.get("authorizeParams") or {})
    added_params = {k: v for k, v in preset.authorize_params.items() if k not in declared_params}
    return ResolvedEndpoints(
        authorization_endpoint=spec.get("authorizationEndpoint")
        or _fill(preset.authorization_endpoint, values),
        token_endpoint=spec.get("tokenEndpoint") or _fill(preset.token_endpoint, values),
        revocation_endpoint=spec.get("revocationEndpoint") or _fill(preset.revocation_endpoint, values),
        device_authorization_endpoint=spec.get("deviceAuthorizationEndpoint")
        or _fill(preset.device_authorization_endpoint, values),
        issuer=spec.get("issuer") or _fill(preset.issuer, values),
        scopes=declared_scopes + added_scopes,
        added_scopes=added_scopes,
        authorize_params={**added_params, **declared_params},
        added_authorize_params=added_params,
        client_auth=spec.get("clientAuth") or preset.client_auth,
    )
