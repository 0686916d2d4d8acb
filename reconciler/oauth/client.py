"""The token endpoint client: the only code that talks HTTP to OAuth providers.

Every request goes through :class:`TokenClient`; every failure leaves it as one
of the classified errors of :mod:`reconciler.errors` (transient / response lost /
needs authorization / configuration error), explained with the preset's error
table. Tokens arrive wrapped in :class:`~reconciler.secrets.Secret`.

Called by ``oauth.flows`` (first tokens), ``reconciler.keeper`` (refresh) and
``linkctl doctor``.

It sends; :mod:`reconciler.oauth.answers` reads what comes back (classification,
scrubbing, token fields) and :mod:`reconciler.oauth.discovery` holds the metadata types.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn
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
from reconciler.oauth import answers, discovery, pooled, providers, request_trace
from reconciler.oauth.discovery import METADATA_MAX_AGE, MetadataCache, ProviderMetadata
from reconciler.secrets import Secret, reveal

__all__ = [
    "ClientConfig",
    "DeviceAuthorization",
    "Probe",
    "ProviderMetadata",
    "TokenClient",
    "TokenResponse",
]


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
# Idle pooled connections are dropped after this many seconds (``keepalive=True`` only):
# well below common server idle timeouts (Node 5 s, nginx 75 s), so a connection is
# rarely reused at the very moment the server closes it.
KEEPALIVE_EXPIRY = 2.0
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
            expires_in=answers.number(data.get("expires_in")) or 600.0,
            interval=answers.number(data.get("interval")) or DEFAULT_DEVICE_INTERVAL,
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
                    retry_after=answers.parse_retry_after(response.headers.get("retry-after"), self._clock()),
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
            return pooled.post_form(self._http, url, body, headers, trace=request_trace.recorder(events))
        except _NETWORK_ERRORS as error:
            delivered = request_trace.request_sent(events)
            fresh_connection = request_trace.opened_connection(events)
            # A timeout is not the idle-close race, and retrying it could double the time
            # the request holds its lease: it is classified as before, never retried.
            if delivered is not False or fresh_connection or isinstance(error, httpx.TimeoutException):
                raise self._transport_error(
                    f"{what} for link {config.link!r}", url, error, sent=delivered is not False
                ) from None
        retry: list[str] = []
        try:
            return self._fresh.post(
                url, data=body, headers=headers, extensions={"trace": request_trace.recorder(retry)}
            )
        except _NETWORK_ERRORS as error:
            raise self._transport_error(
                f"{what} for link {config.link!r}",
                url,
                error,
                sent=request_trace.request_sent(retry) is not False,
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
        try:
            data = response.json()
        except ValueError:
            data = None
        answers.raise_for_error(
            config,
            status=response.status_code,
            headers=response.headers,
            url=str(response.url),
            data=data,
            now=self._clock(),
            what=what,
            secrets=sent + self._client_secret(config),
        )

    @staticmethod
    def _client_secret(config: ClientConfig) -> list[str]:
        return [config.client_secret.reveal()] if config.client_secret else []

    def _token_response(
        self, config: ClientConfig, data: Mapping[str, Any], *, what: str, status: int
    ) -> TokenResponse:
        return answers.token_response(config, data, what=what, status=status, received_at=self._clock())
