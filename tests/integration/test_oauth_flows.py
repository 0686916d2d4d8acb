"""The OAuth client and flows against a real server (oidc-provider) and its fault-injecting front.

Every failure test checks the classification the keeper relies on ("errors classified" in
docs/testing.md) and that no secret, token, code or verifier value appears in the error
text or hint.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterable

import pytest

from reconciler.domain.tokens import ClientConfig, TokenResponse
from reconciler.errors import (
    GrantError,
    LinkctlError,
    ProviderConfigError,
    ProviderError,
    ResponseLost,
    TransientProviderError,
)
from reconciler.oauth import flows
from reconciler.oauth.client import TokenClient
from reconciler.secrets import Secret
from tests.support.oracle import OidcServer, OracleClient


def assert_no_secrets(error: LinkctlError, *values: Secret | str | None) -> None:
    """Neither message nor hint may contain any of ``values``."""
    text = f"{error} {error.hint or ''} {error!r}"
    for value in values:
        if value is None:
            continue
        plain = value.reveal() if isinstance(value, Secret) else value
        assert plain not in text, "a secret value leaked into an error message"


def authorize(server: OidcServer, client: TokenClient, config: ClientConfig) -> TokenResponse:
    request = flows.build_authorization_request(config, require_iss=True)
    callback = server.login_and_consent(request.url)
    code = flows.parse_callback(callback, request)
    response = client.exchange_code(
        config, code=code, code_verifier=request.pkce.verifier.reveal(), redirect_uri=request.redirect_uri
    )
    flows.check_offline(config, response)
    return response


def secrets_of(registered: OracleClient, *responses: TokenResponse) -> Iterable[Secret | None]:
    yield registered.client_secret
    for response in responses:
        yield response.access_token
        yield response.refresh_token


# -- discovery ------------------------------------------------------------------------


def test_discovery_reads_endpoints(oracle: OidcServer, client: TokenClient) -> None:
    metadata = client.discover(oracle.issuer)
    assert metadata.issuer == oracle.issuer
    assert metadata.token_endpoint == f"{oracle.issuer}/token"
    assert metadata.device_authorization_endpoint == f"{oracle.issuer}/device/auth"
    assert metadata.revocation_endpoint == f"{oracle.issuer}/token/revocation"
    assert "S256" in metadata.code_challenge_methods_supported


def test_discovery_rejects_issuer_mismatch(oracle: OidcServer, client: TokenClient) -> None:
    # A trailing slash is a different issuer (OIDC Discovery §4.3: exact match).
    with pytest.raises(ProviderConfigError, match="returned metadata for issuer"):
        client.discover(oracle.issuer + "/")


def test_issuer_only_link_discovers_endpoints(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_machine_client()
    config = dataclasses.replace(
        oracle.machine_config(registered),
        token_endpoint=None,
        authorization_endpoint=None,
        revocation_endpoint=None,
        device_authorization_endpoint=None,
    )
    response = client.client_credentials(config)
    assert response.access_token


# -- authorization code + PKCE ----------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_code_flow_with_pkce(oracle: OidcServer, client: TokenClient, auth_method: str) -> None:
    registered = oracle.register_client(auth_method=auth_method)
    config = oracle.client_config(registered)
    response = authorize(oracle, client, config)
    assert response.refresh_token is not None
    assert response.token_type == "Bearer"
    assert response.expires_in == 60
    assert "offline_access" in (response.scope or "")
    assert "id_token" not in response.extra and response.id_token is not None
    seen = [r for r in oracle.requests() if r["grant_type"] == "authorization_code"]
    assert [r["auth_method"] for r in seen] == [auth_method]
    assert seen[0]["status"] == 200


def test_wrong_client_auth_method_is_a_configuration_error(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_client(auth_method="client_secret_post")
    config = oracle.client_config(registered, client_auth="client_secret_basic")
    with pytest.raises(ProviderConfigError) as caught:
        authorize(oracle, client, config)
    assert caught.value.oauth_error == "invalid_client"
    assert caught.value.status_code == 401
    assert "registered for client_secret_post" in str(caught.value)
    assert_no_secrets(caught.value, registered.client_secret)


def test_offline_access_sends_prompt_consent_by_default_and_gets_a_refresh_token(
    oracle: OidcServer, client: TokenClient
) -> None:
    registered = oracle.register_client()
    config = oracle.client_config(registered, authorize_params={})  # no prompt declared
    assert "prompt=consent" in flows.build_authorization_request(config).url
    response = authorize(oracle, client, config)
    assert response.refresh_token is not None and "offline_access" in (response.scope or "").split()
    refreshed = client.refresh(config, response.refresh_token)
    assert refreshed.access_token.reveal() != response.access_token.reveal()


def test_missing_prompt_consent_yields_no_refresh_token_and_a_clear_error(
    oracle: OidcServer, client: TokenClient
) -> None:
    registered = oracle.register_client()
    # The link says otherwise (an explicit prompt): it is sent as declared, and diagnosed.
    config = oracle.client_config(registered, authorize_params={"prompt": "login"})
    assert "prompt=login" in flows.build_authorization_request(config).url
    with pytest.raises(ProviderConfigError) as caught:
        authorize(oracle, client, config)
    text = f"{caught.value} {caught.value.hint}"
    assert "no refresh token" in text
    assert "prompt=consent" in text and "prompt: consent" in text


def test_missing_offline_access_is_diagnosed(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_client()
    config = oracle.client_config(registered, scopes=("openid", "api:read"))
    with pytest.raises(ProviderConfigError) as caught:
        authorize(oracle, client, config)
    assert "add offline_access to spec.scopes" in (caught.value.hint or "")


def test_reused_code_is_a_grant_error(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_client()
    config = oracle.client_config(registered)
    request = flows.build_authorization_request(config)
    code = flows.parse_callback(oracle.login_and_consent(request.url), request)
    verifier = request.pkce.verifier.reveal()
    client.exchange_code(config, code=code, code_verifier=verifier, redirect_uri=request.redirect_uri)
    with pytest.raises(GrantError) as caught:
        client.exchange_code(config, code=code, code_verifier=verifier, redirect_uri=request.redirect_uri)
    assert_no_secrets(caught.value, code, verifier, registered.client_secret)


def test_wrong_pkce_verifier_is_refused(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_client()
    config = oracle.client_config(registered)
    request = flows.build_authorization_request(config)
    code = flows.parse_callback(oracle.login_and_consent(request.url), request)
    wrong = flows.new_pkce().verifier.reveal()
    with pytest.raises(GrantError) as caught:
        client.exchange_code(config, code=code, code_verifier=wrong, redirect_uri=request.redirect_uri)
    assert_no_secrets(caught.value, code, wrong, registered.client_secret)


# -- refresh, rotation, revocation ----------------------------------------------------------


def test_refresh_rotates_and_the_old_token_is_dead(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_client()
    config = oracle.client_config(registered)
    first = authorize(oracle, client, config)
    assert first.refresh_token is not None
    second = client.refresh(config, first.refresh_token)
    assert second.refresh_token is not None
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    # Replaying the rotated-out token: invalid_grant, and (RFC 9700 reuse detection) the
    # whole grant is revoked, so even the newest refresh token is dead now.
    with pytest.raises(GrantError) as caught:
        client.refresh(config, first.refresh_token)
    assert caught.value.oauth_error == "invalid_grant"
    assert "authorize" in (caught.value.hint or "")
    assert_no_secrets(caught.value, *secrets_of(registered, first, second))
    with pytest.raises(GrantError):
        client.refresh(config, second.refresh_token)


def test_revocation_kills_the_refresh_token(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_client()
    config = oracle.client_config(registered)
    tokens = authorize(oracle, client, config)
    assert tokens.refresh_token is not None
    client.revoke(config, tokens.refresh_token)
    client.revoke(config, tokens.refresh_token)  # RFC 7009 §2.2: unknown tokens answer 200 too
    with pytest.raises(GrantError):
        client.refresh(config, tokens.refresh_token)


# -- client credentials and the device flow ---------------------------------------------------


def test_client_credentials(oracle: OidcServer, client: TokenClient) -> None:
    registered = oracle.register_machine_client()
    config = oracle.machine_config(registered)
    response = client.client_credentials(config)
    assert response.access_token and response.refresh_token is None
    assert response.scope == "api:read"


def test_client_credentials_with_wrong_secret_is_a_configuration_error(
    oracle: OidcServer, client: TokenClient
) -> None:
    registered = oracle.register_machine_client()
    wrong = Secret("not-the-secret-" + "x" * 20)
    config = dataclasses.replace(
        oracle.machine_config(registered),
        client_secret=wrong,
    )
    with pytest.raises(ProviderConfigError) as caught:
        client.client_credentials(config)
    assert caught.value.oauth_error == "invalid_client"
    assert "clientSecret" in (caught.value.hint or "")
    assert_no_secrets(caught.value, wrong, registered.client_secret)


def device_client(oracle: OidcServer) -> OracleClient:
    return oracle.register_client(
        auth_method="client_secret_post",
        grant_types=("urn:ietf:params:oauth:grant-type:device_code", "refresh_token"),
    )


def test_device_flow(oracle: OidcServer, client: TokenClient) -> None:
    registered = device_client(oracle)
    config = oracle.client_config(registered, grant="device_code")
    device = client.device_authorize(config)
    assert device.interval == 5.0  # oidc-provider 8.8.1 omits interval: RFC 8628 default
    assert device.verification_uri.startswith(oracle.issuer)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            oracle.approve_device(device.user_code)

    response = client.poll_device(config, device, sleep=sleep)
    assert waits == [5.0, 5.0]  # the first poll was authorization_pending
    assert response.refresh_token is not None
    flows.check_offline(config, response)


def test_device_flow_denied_is_a_grant_error(oracle: OidcServer, client: TokenClient) -> None:
    registered = device_client(oracle)
    config = oracle.client_config(registered, grant="device_code")
    device = client.device_authorize(config)
    oracle.deny_device(device.user_code)
    with pytest.raises(GrantError, match="denied") as caught:
        client.poll_device(config, device, sleep=lambda _s: None)
    assert_no_secrets(caught.value, device.device_code, registered.client_secret)


# -- faults through the fault-injecting front ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refreshable:
    config: ClientConfig
    tokens: TokenResponse
    refresh_token: Secret
    registered: OracleClient


@pytest.fixture
def refreshable(oracle: OidcServer, client: TokenClient) -> Refreshable:
    registered = oracle.register_client()
    config = oracle.client_config(registered)
    tokens = authorize(oracle, client, config)
    assert tokens.refresh_token is not None
    return Refreshable(config, tokens, tokens.refresh_token, registered)


def test_503_with_retry_after_is_transient(
    oracle: OidcServer, client: TokenClient, refreshable: Refreshable
) -> None:
    config, tokens, registered = refreshable.config, refreshable.tokens, refreshable.registered
    oracle.fault("unavailable", retry_after=7)
    with pytest.raises(TransientProviderError) as caught:
        client.refresh(config, refreshable.refresh_token)
    assert type(caught.value) is TransientProviderError
    assert caught.value.status_code == 503 and caught.value.retry_after == 7
    assert_no_secrets(caught.value, *secrets_of(registered, tokens))
    assert client.refresh(config, refreshable.refresh_token).access_token  # the token was not used up


def test_429_with_http_date_retry_after_is_transient(oracle: OidcServer, refreshable: Refreshable) -> None:
    config, tokens, registered = refreshable.config, refreshable.tokens, refreshable.registered
    now = 1_800_000_000.0
    client = TokenClient(timeout=5, clock=lambda: now)
    try:
        oracle.fault("rate_limited", retry_after="Fri, 15 Jan 2027 08:00:30 GMT")
        with pytest.raises(TransientProviderError) as caught:
            client.refresh(config, refreshable.refresh_token)
    finally:
        client.close()
    assert type(caught.value) is TransientProviderError
    assert caught.value.status_code == 429
    assert caught.value.retry_after == pytest.approx(1_800_000_000 - now + 30)
    assert_no_secrets(caught.value, *secrets_of(registered, tokens))


def test_500_html_is_transient(oracle: OidcServer, client: TokenClient, refreshable: Refreshable) -> None:
    config, tokens, registered = refreshable.config, refreshable.tokens, refreshable.registered
    oracle.fault("server_error_html")
    with pytest.raises(TransientProviderError) as caught:
        client.refresh(config, refreshable.refresh_token)
    assert type(caught.value) is TransientProviderError
    assert "text/html" in str(caught.value) and "<html" not in str(caught.value)
    assert_no_secrets(caught.value, *secrets_of(registered, tokens))


def test_dropped_connection_is_response_lost(
    oracle: OidcServer, client: TokenClient, refreshable: Refreshable
) -> None:
    config, tokens, registered = refreshable.config, refreshable.tokens, refreshable.registered
    oracle.fault("drop")
    with pytest.raises(ResponseLost) as caught:
        client.refresh(config, refreshable.refresh_token)
    assert_no_secrets(caught.value, *secrets_of(registered, tokens))


def test_response_delayed_after_rotation_is_lost_and_the_token_consumed(
    oracle: OidcServer,
    refreshable: Refreshable,
) -> None:
    config, tokens, registered = refreshable.config, refreshable.tokens, refreshable.registered
    client = TokenClient(timeout=0.5)
    try:
        oracle.fault("delay_after", delay_ms=6000)
        started = time.monotonic()
        with pytest.raises(ResponseLost) as caught:
            client.refresh(config, refreshable.refresh_token)
        assert time.monotonic() - started < 5  # gave up at the client timeout, not the delay
        assert_no_secrets(caught.value, *secrets_of(registered, tokens))
        assert "invalid_grant" in (caught.value.hint or "")
        # The server did rotate: the refresh token we still hold is spent.
        assert [r["status"] for r in oracle.requests() if r["grant_type"] == "refresh_token"] == [200]
        with pytest.raises(GrantError):
            client.refresh(config, refreshable.refresh_token)
    finally:
        client.close()


def test_connection_refused_is_transient_not_lost(client: TokenClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ClientConfig(
        link="nowhere",
        provider="custom",
        client_id="id",
        client_secret=Secret("s3cr3t-value"),
        client_auth="client_secret_basic",
        token_endpoint=f"http://127.0.0.1:{port}/token",
    )
    with pytest.raises(TransientProviderError) as caught:
        client.refresh(config, Secret("refresh-token-value"))
    assert not isinstance(caught.value, ResponseLost)
    assert "cannot connect" in str(caught.value)
    assert_no_secrets(caught.value, "s3cr3t-value", "refresh-token-value")


def test_invalid_refresh_token_is_a_grant_error(
    oracle: OidcServer, client: TokenClient, refreshable: Refreshable
) -> None:
    config, tokens, registered = refreshable.config, refreshable.tokens, refreshable.registered
    bogus = Secret("bogus-refresh-token-" + "y" * 20)
    with pytest.raises(GrantError) as caught:
        client.refresh(config, bogus)
    assert caught.value.status_code == 400
    assert_no_secrets(caught.value, bogus, *secrets_of(registered, tokens))
    assert isinstance(caught.value, ProviderError)
