"""Reading a provider's answers: error codes classified, echoed secrets scrubbed, token fields.

Pure functions over an answer's status, headers and decoded JSON, used by
:class:`reconciler.oauth.client.TokenClient`, which sends the requests (this module does
no HTTP). The classification here is what the keeper's statuses rest on ("errors
classified" in docs/testing.md).
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from reconciler.domain.tokens import ClientConfig, TokenResponse
from reconciler.errors import (
    GrantError,
    ProviderConfigError,
    ProviderError,
    ResponseLost,
    TransientProviderError,
)
from reconciler.oauth import providers
from reconciler.secrets import REDACTED, Secret

__all__ = ["is_safe_extra", "number", "parse_retry_after", "raise_for_error", "scrub", "token_response"]

DESCRIPTION_LIMIT = 200  # characters of a provider's error description kept in messages

# OAuth error codes -> what the caller should do (when the preset says nothing more precise).
_GRANT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# Response fields never copied into TokenResponse.extra: they are, or may be, credentials.
_SECRET_FIELD_MARKERS = ("token", "secret", "code", "password", "assertion", "key")
_SAFE_TOKEN_FIELDS = frozenset({"token_type"})


def is_safe_extra(key: str, value: Any) -> bool:
    """Keep a response field in ``extra`` only when it cannot carry a credential."""
    if not isinstance(value, (int, float, bool, type(None))) and not isinstance(value, str):
        return False
    lowered = key.lower()
    if lowered in _SAFE_TOKEN_FIELDS or lowered.endswith("expires_in") or lowered.endswith("expires_on"):
        return (isinstance(value, (int, float, str)) and not isinstance(value, bool)) or value is None
    return not any(marker in lowered for marker in _SECRET_FIELD_MARKERS)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Replace every value we sent (tokens, codes, secrets) and truncate provider text."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    text = " ".join(text.split())  # no control characters or newlines from the provider
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 1] + "…"
    return text


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delta-seconds or HTTP-date; RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def number(value: Any) -> float | None:
    """A JSON number, or a string holding one (some providers quote ``expires_in``); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def raise_for_error(
    config: ClientConfig,
    *,
    status: int,
    headers: Mapping[str, str],
    url: str,
    data: Any,
    now: float,
    what: str,
    secrets: Sequence[str],
) -> NoReturn:
    """Raise the classified error for a failed answer (``data``: its decoded JSON, if any).

    Values in ``secrets`` (what was sent, the client secret) are scrubbed from what the
    provider echoes; the preset's error table explains the code.
    """
    retry_after = parse_retry_after(headers.get("retry-after"), now)
    code = data.get("error") if isinstance(data, dict) else None
    if not isinstance(code, str):
        if status in (404, 405, 410):
            host = urlsplit(url).netloc
            raise ProviderConfigError(
                f"{what} for link {config.link!r}: HTTP {status} from {host} (wrong endpoint URL?)",
                hint="check the endpoint URLs of the link (or its issuer)",
                status_code=status,
            )
        kind = headers.get("content-type", "no content type").split(";")[0]
        raise TransientProviderError(
            f"{what} for link {config.link!r}: HTTP {status} with a non-OAuth body ({kind})",
            hint="the provider or a proxy in front of it failed; linkctl retries with backoff",
            status_code=status,
            retry_after=retry_after,
        )
    raw_description = data.get("error_description") if isinstance(data, dict) else None
    description = scrub(raw_description, secrets) if isinstance(raw_description, str) else None
    code = scrub(code, secrets)[:64]
    preset = providers.find_preset(config.provider)
    meaning = preset.explain(code, raw_description) if preset else None
    message = f"{what} for link {config.link!r}: HTTP {status} {code}"
    if meaning:
        message += f": {meaning.meaning}"
    if description:
        message += f" (provider says: {description})"
    hint = meaning.fix if meaning else None
    common: dict[str, Any] = {
        "hint": hint,
        "oauth_error": code,
        "status_code": status,
        "retry_after": retry_after,
    }
    if status >= 500 or status == 429 or code in _TRANSIENT_ERRORS or code == "slow_down":
        raise TransientProviderError(message, **{**common, "hint": hint or "linkctl retries with backoff"})
    error_class = meaning.error_class if meaning else None
    if error_class == "transient":
        raise TransientProviderError(message, **common)
    if error_class == "needs_authorization" or (error_class is None and code in _GRANT_ERRORS):
        raise GrantError(message, **{**common, "hint": hint or f"run `linkctl authorize {config.link}`"})
    if code in ("authorization_pending", "access_denied", "expired_token"):
        raise ProviderError(message, **common)
    raise ProviderConfigError(
        message, **{**common, "hint": hint or "check the link's client registration and spec"}
    )


def token_response(
    config: ClientConfig, data: Mapping[str, Any], *, what: str, status: int, received_at: float
) -> TokenResponse:
    """A successful token answer as a :class:`TokenResponse`; no access token is a lost response."""
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise ResponseLost(
            f"{what} for link {config.link!r}: HTTP {status} without an access_token",
            hint="the provider answered an incomplete token response; linkctl retries",
            status_code=status,
        )
    refresh = data.get("refresh_token")
    id_token = data.get("id_token")
    token_type = data.get("token_type")
    scope = data.get("scope")
    return TokenResponse(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        token_type=token_type if isinstance(token_type, str) else None,
        expires_in=number(data.get("expires_in")),
        scope=scope if isinstance(scope, str) else None,
        received_at=received_at,
        id_token=Secret(id_token) if isinstance(id_token, str) and id_token else None,
        extra={
            k: v
            for k, v in data.items()
            if k not in ("access_token", "refresh_token", "id_token", "token_type", "expires_in", "scope")
            and is_safe_extra(k, v)
        },
    )
