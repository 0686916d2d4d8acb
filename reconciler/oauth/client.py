"""The token endpoint client: the only code that talks HTTP to OAuth providers.

Every request goes through :class:`TokenClient`; every failure leaves it as one
of the classified errors of :mod:`reconciler.errors` (transient / response lost /
needs authorization / configuration error), explained with the preset's error
table. Tokens arrive wrapped in :class:`~reconciler.secrets.Secret`.

Called by ``oauth.flows`` (first tokens), ``reconciler.keeper`` (refresh) and
``linkctl doctor``.

Why one module of about 650 lines: it is the one HTTP boundary the layer contract names
("only oauth.client talks HTTP to providers"), and its parts (sending, telling a lost
response from an unsent one, classifying provider errors, scrubbing secrets from what
they echo) share the request trace and the secrets of each call; split, each part would
need the others' internals.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import email.utils
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol
from urllib.parse import quote_plus, urlsplit

import httpx

from reconciler.domain.tokens import ClientConfig, DeviceAuthorization, TokenResponse
from reconciler.errors import (
    GrantError,
    ProviderConfigError,
    ProviderError,
    ResponseLost,
    TransientProviderError,
)
from reconciler.oauth import discovery, providers
from reconciler.oauth.discovery import ProviderMetadata
from reconciler.secrets import REDACTED, Secret, reveal

__all__ = [
    "ClientConfig",
    "DeviceAuthorization",
    "Probe",
    "ProviderMetadata",
    "TokenClient",
    "TokenResponse",
    "parse_retry_after",
]


METADATA_MAX_AGE = 24 * 3600.0  # discovery documents change rarely; refetch daily


class MetadataCache(Protocol):
    """Where discovery documents are cached across processes (the store implements it)."""

    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        """A cached metadata document and when it was fetched."""

    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        """Cache a metadata document."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a plain GET of an endpoint showed (for ``linkctl doctor``)."""

    url: str
    status_code: int | None  # None: no HTTP answer
    server_time: float | None  # from the Date header
    error: str | None = None  # connection/TLS problem, in words
    tls_error: bool = False
    location: str | None = None  # where a redirect points
    body: str = ""  # the first few KiB of the answer, for error pages


PROBE_BODY_CHARS = 8192  # enough to find an error code on a provider's error page
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_DEVICE_INTERVAL = 5.0  # RFC 8628 §3.2
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5
DESCRIPTION_LIMIT = 200
# Idle pooled connections are dropped after this many seconds (``keepalive=True`` only):
# well below common server idle timeouts (Node 5 s, nginx 75 s), so a connection is
# rarely reused at the very moment the server closes it.
KEEPALIVE_EXPIRY = 2.0
# httpcore trace events (``extensions={"trace": ...}``) that tell how far a request got.
_SENT_EVENT = "http11.send_request_body.complete"
_CONNECT_PREFIX = "connection.connect_tcp."

# OAuth error codes -> what the caller should do (when the preset says nothing more precise).
_GRANT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# Response fields never copied into TokenResponse.extra: they are, or may be, credentials.
_SECRET_FIELD_MARKERS = ("token", "secret", "code", "password", "assertion", "key")
_SAFE_TOKEN_FIELDS = frozenset({"token_type"})


def _is_safe_extra(key: str, value: Any) -> bool:
    """Keep a response field in ``extra`` only when it cannot carry a credential."""
    if not isinstance(value, (int, float, bool, type(None))) and not isinstance(value, str):
        return False
    lowered = key.lower()
    if lowered in _SAFE_TOKEN_FIELDS or lowered.endswith("expires_in") or lowered.endswith("expires_on"):
        return (isinstance(value, (int, float, str)) and not isinstance(value, bool)) or value is None
    return not any(marker in lowered for marker in _SECRET_FIELD_MARKERS)


def _scrub(text: str, secrets: Sequence[str]) -> str:
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


def _recorder(events: list[str]) -> Callable[[str, Mapping[str, Any]], None]:
    """An httpcore ``trace`` callback that records event names (never their payloads)."""

    def trace(name: str, info: Mapping[str, Any]) -> None:
        events.append(name)

    return trace


def _request_sent(events: Sequence[str]) -> bool | None:
    """Whether the request body was completely written (None: the transport reported nothing).

    Only HTTP/1.1 events are understood; anything else (no events: a custom or mock
    transport; HTTP/2) is unknown, and callers then assume the request was sent.
    """
    if not any(e.startswith("http11.") or e.startswith(_CONNECT_PREFIX) for e in events):
        return None
    if any(e.startswith("http2.") for e in events):
        return None
    return _SENT_EVENT in events


def _number(value: Any) -> float | None:
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


# A body that cannot be decoded (bad gzip, wrong charset) arrives after the provider acted:
# it is a lost response like a dropped connection, not an internal error.
_NETWORK_ERRORS = (httpx.TransportError, httpx.DecodingError)


class TokenClient:
    """HTTP client for token, device authorization, revocation and discovery endpoints.

    Strategies are injected (``transport`` for tests, ``clock``); every failure is one of
    the classified :mod:`reconciler.errors`. Example::

        client = TokenClient()
        response = client.refresh(config, grant.refresh_token)
    """

    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        verify: bool | str = True,
        keepalive: bool = False,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        max_connections: int = 32,
        metadata_cache: MetadataCache | None = None,
        metadata_max_age: float = METADATA_MAX_AGE,
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self._metadata: dict[str, ProviderMetadata] = {}
        self._metadata_cache = metadata_cache
        self._metadata_max_age = metadata_max_age
        self._keepalive = keepalive
        common: dict[str, Any] = {
            "transport": transport,
            "timeout": httpx.Timeout(timeout),
            "verify": verify,
            "follow_redirects": False,
            "headers": {"Accept": "application/json", "User-Agent": "linkctl"},
        }
        # By default no keep-alive: a pooled connection that the server closed while idle
        # fails as "disconnected without a response", which would be misread as a lost
        # refresh response. Token requests are rare, so a fresh connection each time is cheap.
        # ``keepalive=True`` (the keeper, thousands of refreshes) pools connections and
        # tells the two cases apart with httpcore's trace events; see :meth:`_post`.
        self._fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), **common)
        self._http = self._fresh
        if keepalive:
            self._http = httpx.Client(
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_connections,
                    keepalive_expiry=keepalive_expiry,
                ),
                **common,
            )

    # -- grants --------------------------------------------------------------------
    def refresh(self, config: ClientConfig, refresh_token: Secret) -> TokenResponse:
        """RFC 6749 §6: exchange a refresh token; a rotated one is in the response."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        return self._token_request(config, form, what="token refresh", sent=[refresh_token.reveal()])

    def client_credentials(self, config: ClientConfig) -> TokenResponse:
        """RFC 6749 §4.4: obtain an access token for the client itself."""
        form = {"grant_type": "client_credentials"}
        scope = providers.join_scopes(config.provider, config.scopes)
        if scope:
            form["scope"] = scope
        return self._token_request(config, form, what="client credentials grant", sent=[])

    def exchange_code(
        self, config: ClientConfig, *, code: str, code_verifier: str, redirect_uri: str
    ) -> TokenResponse:
        """RFC 6749 §4.1.3 + RFC 7636 §4.5: exchange an authorization code."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": code_verifier,
            "redirect_uri": redirect_uri,
        }
        return self._token_request(config, form, what="code exchange", sent=[code, code_verifier])

    def device_authorize(self, config: ClientConfig) -> DeviceAuthorization:
        """RFC 8628 §3.1-3.2: start a device authorization (user code + verification URI)."""
        config = self.with_endpoints(config)
        endpoint = self._endpoint(config, config.device_authorization_endpoint, "deviceAuthorizationEndpoint")
        form: dict[str, str] = {}
        scope = providers.join_scopes(config.provider, config.scopes)
        if scope:
            form["scope"] = scope
        what = "device authorization"
        response = self._post(config, endpoint, form, what=what, sent=[])
        data = self._json_or_error(config, response, what=what, sent=[])
        device_code = data.get("device_code")
        user_code = data.get("user_code")
        # Google still answers verification_url (a pre-RFC name).
        uri = data.get("verification_uri") or data.get("verification_url")
        if not isinstance(device_code, str) or not isinstance(user_code, str) or not isinstance(uri, str):
            raise TransientProviderError(
                f"{what} for link {config.link!r}: the response lacks device_code, user_code "
                "or verification_uri",
                status_code=response.status_code,
            )
        complete = data.get("verification_uri_complete")
        return DeviceAuthorization(
            device_code=Secret(device_code),
            user_code=user_code,
            verification_uri=uri,
            verification_uri_complete=complete if isinstance(complete, str) else None,
            expires_in=_number(data.get("expires_in")) or 600.0,
            interval=_number(data.get("interval")) or DEFAULT_DEVICE_INTERVAL,
            received_at=self._clock(),
        )

    def poll_device(
        self,
        config: ClientConfig,
        device: DeviceAuthorization,
        *,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
    ) -> TokenResponse:
        """RFC 8628 §3.4-3.5: poll until approved; ``slow_down`` adds 5 s to every later wait."""
        interval = device.interval
        stop_at = device.expires_at if deadline is None else min(deadline, device.expires_at)
        form = {"grant_type": DEVICE_CODE_GRANT, "device_code": device.device_code.reveal()}
        sent = [device.device_code.reveal()]
        while True:
            if self._clock() + interval > stop_at:
                raise GrantError(
                    f"device authorization for link {config.link!r} was not approved in time",
                    hint=f"run `linkctl authorize {config.link} --device` again and approve sooner",
                    oauth_error="expired_token",
                )
            sleep(interval)
            try:
                return self._token_request(config, form, what="device code poll", sent=sent)
            except ResponseLost:
                raise
            except TransientProviderError as error:
                # Keep polling through outages; honour Retry-After for the next wait only.
                if error.oauth_error == "slow_down":
                    interval += SLOW_DOWN_STEP
                elif error.retry_after is not None:
                    sleep(max(0.0, error.retry_after - interval))
            except ProviderError as error:
                if error.oauth_error == "authorization_pending":
                    continue
                if error.oauth_error in ("access_denied", "expired_token"):
                    reason = "was denied" if error.oauth_error == "access_denied" else "expired"
                    raise GrantError(
                        f"device authorization for link {config.link!r} {reason}",
                        hint=f"run `linkctl authorize {config.link} --device` again",
                        oauth_error=error.oauth_error,
                        status_code=error.status_code,
                    ) from None
                raise

    # -- other endpoints ---------------------------------------------------------------
    def revoke(self, config: ClientConfig, token: Secret, *, token_type_hint: str = "refresh_token") -> None:
        """RFC 7009: revoke a token (the provider answers 200 for unknown tokens too)."""
        config = self.with_endpoints(config, revoking=True)
        if not config.revocation_endpoint:
            raise ProviderConfigError(
                f"link {config.link!r}: provider {config.provider} has no revocation endpoint",
                hint="revoke the grant in the provider's console (e.g. Microsoft: My Apps or "
                "revokeSignInSessions), or set spec.revocationEndpoint",
            )
        what = "token revocation"
        form = {"token": token.reveal(), "token_type_hint": token_type_hint}
        response = self._post(config, config.revocation_endpoint, form, what=what, sent=[token.reveal()])
        if response.is_success:
            return
        self._raise_for_error(config, response, what=what, sent=[token.reveal()])

    def discover(self, issuer: str) -> ProviderMetadata:
        """Fetch metadata by OIDC Discovery, then RFC 8414; the issuer must match exactly."""
        if issuer in self._metadata:
            return self._metadata[issuer]
        cached = self._metadata_cache.get_provider_metadata(issuer) if self._metadata_cache else None
        if cached is not None and self._clock() - cached[1] < self._metadata_max_age:
            stored, _ = cached
            metadata = discovery.parse_metadata(issuer, stored, source_url=stored.get("source_url"))
            self._metadata[issuer] = metadata
            return metadata
        tried: list[str] = []
        for url in discovery.discovery_urls(issuer):
            tried.append(url)
            try:
                response = self._http.get(url)
            except _NETWORK_ERRORS as error:
                raise self._transport_error(
                    f"discovery for issuer {issuer}", url, error, sent=False
                ) from None
            if response.status_code in (404, 405, 410):
                continue
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientProviderError(
                    f"discovery for issuer {issuer}: {url} answered HTTP {response.status_code}",
                    status_code=response.status_code,
                    retry_after=parse_retry_after(response.headers.get("retry-after"), self._clock()),
                )
            try:
                document = response.json()
            except ValueError:
                document = None
            if not response.is_success or not isinstance(document, dict):
                raise ProviderConfigError(
                    f"discovery for issuer {issuer}: {url} answered HTTP {response.status_code} "
                    "without a JSON metadata document",
                    hint="check spec.issuer, or declare authorizationEndpoint and tokenEndpoint",
                    status_code=response.status_code,
                )
            metadata = discovery.parse_metadata(issuer, document, source_url=url)
            self._metadata[issuer] = metadata
            if self._metadata_cache is not None:
                self._metadata_cache.put_provider_metadata(
                    issuer, {**document, "source_url": url}, fetched_at=self._clock()
                )
            return metadata
        raise ProviderConfigError(
            f"no metadata document for issuer {issuer} (tried {', '.join(tried)})",
            hint="check spec.issuer, or declare authorizationEndpoint and tokenEndpoint",
        )

    def probe(self, url: str) -> Probe:
        """GET ``url`` once: reachable? TLS valid? the provider's clock (Date header)?"""
        try:
            response = self._http.get(url)
        except httpx.ConnectError as error:
            tls = "certificate" in str(error).lower() or "ssl" in str(error).lower()
            what = "TLS verification failed" if tls else "cannot connect"
            return Probe(url, None, None, error=f"{what} ({type(error).__name__})", tls_error=tls)
        except httpx.HTTPError as error:
            return Probe(url, None, None, error=type(error).__name__)
        server_time = None
        header = response.headers.get("date")
        if header:
            try:
                server_time = email.utils.parsedate_to_datetime(header).timestamp()
            except (TypeError, ValueError):
                server_time = None
        return Probe(
            url,
            response.status_code,
            server_time,
            location=response.headers.get("location"),
            body=response.text[:PROBE_BODY_CHARS] if not response.is_success or response.is_redirect else "",
        )

    def close(self) -> None:
        """Close connections."""
        self._http.close()
        if self._fresh is not self._http:
            self._fresh.close()

    def __enter__(self) -> TokenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------
    def with_endpoints(self, config: ClientConfig, *, revoking: bool = False) -> ClientConfig:
        """``config`` with endpoints discovered from its issuer when it lacks some it needs."""
        if discovery.needs_discovery(config, revoking=revoking):
            assert config.issuer is not None
            return discovery.apply_metadata(config, self.discover(config.issuer))
        return config

    @staticmethod
    def _endpoint(config: ClientConfig, url: str | None, field: str) -> str:
        if not url:
            raise ProviderConfigError(
                f"link {config.link!r} has no {field}",
                hint=f"declare spec.{field}, or spec.issuer so that endpoints can be discovered",
            )
        return url

    def _token_request(
        self, config: ClientConfig, form: dict[str, str], *, what: str, sent: list[str]
    ) -> TokenResponse:
        config = self.with_endpoints(config)
        endpoint = self._endpoint(config, config.token_endpoint, "tokenEndpoint")
        # Protocol fields win over declared extras; sealed extras are opened only here.
        body = {**{k: reveal(v) for k, v in config.token_params.items()}, **form}
        response = self._post(config, endpoint, body, what=what, sent=sent)
        data = self._json_or_error(config, response, what=what, sent=sent)
        return self._token_response(config, data, what=what, status=response.status_code)

    def _post(
        self, config: ClientConfig, url: str, form: dict[str, str], *, what: str, sent: list[str]
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        body = dict(form)
        secret = config.client_secret.reveal() if config.client_secret else None
        client_id = reveal(config.client_id) if config.client_id else None
        if config.client_auth == "client_secret_basic" and client_id and secret is not None:
            # RFC 6749 §2.3.1: form-urlencode id and secret before joining and base64.
            pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif config.client_auth == "client_secret_post" and client_id and secret is not None:
            body["client_id"] = client_id
            body["client_secret"] = secret
        elif client_id:
            body["client_id"] = client_id
        if not self._keepalive:
            try:
                return self._http.post(url, data=body, headers=headers)
            except _NETWORK_ERRORS as error:
                raise self._transport_error(
                    f"{what} for link {config.link!r}", url, error, sent=True
                ) from None
        # Keep-alive: httpcore reports each step of the request. A failure before the
        # request body was completely written cannot have been acted on (the provider
        # needs the whole form); on a reused pooled connection that is the idle-close race,
        # so the request is sent once more on a fresh connection (never after a timeout).
        # A failure after the body was written stays ResponseLost, even on a reused
        # connection: we cannot know whether the provider processed it, and a refresh is
        # not idempotent.
        events: list[str] = []
        try:
            return self._http.post(url, data=body, headers=headers, extensions={"trace": _recorder(events)})
        except _NETWORK_ERRORS as error:
            delivered = _request_sent(events)
            fresh_connection = any(e.startswith(_CONNECT_PREFIX) for e in events)
            # A timeout is not the idle-close race, and retrying it could double the time
            # the request holds its lease: it is classified as before, never retried.
            if delivered is not False or fresh_connection or isinstance(error, httpx.TimeoutException):
                raise self._transport_error(
                    f"{what} for link {config.link!r}", url, error, sent=delivered is not False
                ) from None
        retry: list[str] = []
        try:
            return self._fresh.post(url, data=body, headers=headers, extensions={"trace": _recorder(retry)})
        except _NETWORK_ERRORS as error:
            raise self._transport_error(
                f"{what} for link {config.link!r}", url, error, sent=_request_sent(retry) is not False
            ) from None

    def _transport_error(
        self, what: str, url: str, error: httpx.TransportError | httpx.DecodingError, *, sent: bool
    ) -> ProviderError:
        host = urlsplit(url).netloc
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return TransientProviderError(
                f"{what}: cannot connect to {host} ({type(error).__name__})",
                hint="check network access to the provider (DNS, proxy, firewall); linkctl retries",
            )
        lost = (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.DecodingError)
        if sent and isinstance(error, lost):
            # The whole request went out: the provider may have acted on it (rotated the
            # refresh token) even though its answer never arrived.
            return ResponseLost(
                f"{what}: the request reached {host} but no response arrived ({type(error).__name__})",
                hint="the provider may have used up the refresh token; if the next refresh fails "
                "with invalid_grant, authorize the link again",
            )
        return TransientProviderError(f"{what}: network error talking to {host} ({type(error).__name__})")

    def _json_or_error(
        self, config: ClientConfig, response: httpx.Response, *, what: str, sent: list[str]
    ) -> dict[str, Any]:
        if not response.is_success:
            self._raise_for_error(config, response, what=what, sent=sent)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # The provider processed the request (a code or refresh token may be used up)
            # but the answer is unusable: as good as lost.
            raise ResponseLost(
                f"{what} for link {config.link!r}: HTTP {response.status_code} with a body that is "
                f"not a JSON object ({response.headers.get('content-type', 'no content type')})",
                hint="the provider or a proxy in front of it answered garbage; linkctl retries",
                status_code=response.status_code,
            )
        return data

    def _raise_for_error(
        self, config: ClientConfig, response: httpx.Response, *, what: str, sent: list[str]
    ) -> NoReturn:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        try:
            data = response.json()
        except ValueError:
            data = None
        code = data.get("error") if isinstance(data, dict) else None
        if not isinstance(code, str):
            if status in (404, 405, 410):
                host = urlsplit(str(response.url)).netloc
                raise ProviderConfigError(
                    f"{what} for link {config.link!r}: HTTP {status} from {host} (wrong endpoint URL?)",
                    hint="check the endpoint URLs of the link (or its issuer)",
                    status_code=status,
                )
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise TransientProviderError(
                f"{what} for link {config.link!r}: HTTP {status} with a non-OAuth body ({kind})",
                hint="the provider or a proxy in front of it failed; linkctl retries with backoff",
                status_code=status,
                retry_after=retry_after,
            )
        raw_description = data.get("error_description") if isinstance(data, dict) else None
        description = (
            _scrub(raw_description, sent + self._client_secret(config))
            if isinstance(raw_description, str)
            else None
        )
        code = _scrub(code, sent + self._client_secret(config))[:64]
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
            raise TransientProviderError(
                message, **{**common, "hint": hint or "linkctl retries with backoff"}
            )
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

    @staticmethod
    def _client_secret(config: ClientConfig) -> list[str]:
        return [config.client_secret.reveal()] if config.client_secret else []

    def _token_response(
        self, config: ClientConfig, data: Mapping[str, Any], *, what: str, status: int
    ) -> TokenResponse:
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
            expires_in=_number(data.get("expires_in")),
            scope=scope if isinstance(scope, str) else None,
            received_at=self._clock(),
            id_token=Secret(id_token) if isinstance(id_token, str) and id_token else None,
            extra={
                k: v
                for k, v in data.items()
                if k not in ("access_token", "refresh_token", "id_token", "token_type", "expires_in", "scope")
                and _is_safe_extra(k, v)
            },
        )
