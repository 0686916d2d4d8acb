"""Flows unit tests: PKCE, the authorization URL, callback checks, the listener, the offline check."""

from __future__ import annotations

import io
import socket
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reconciler.domain.tokens import ClientConfig, TokenResponse
from reconciler.errors import ConfigError, GrantError, ProviderConfigError, ProviderError
from reconciler.oauth import flows
from reconciler.secrets import Secret


def config(**overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "link": "mail",
        "provider": "custom",
        "client_id": "cid",
        "client_secret": Secret("sec"),
        "client_auth": "client_secret_basic",
        "token_endpoint": "https://idp.example.com/token",
        "authorization_endpoint": "https://idp.example.com/authorize?tenant=t1",
        "issuer": "https://idp.example.com",
        "scopes": ("openid", "offline_access"),
        "authorize_params": {"prompt": "consent"},
        "redirect_uri": "https://linkctl.example.com/oauth/callback/mail",
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


def response(*, refresh: bool, expires_in: float | None) -> TokenResponse:
    return TokenResponse(
        access_token=Secret("at"),
        refresh_token=Secret("rt") if refresh else None,
        token_type="Bearer",
        expires_in=expires_in,
        scope=None,
        received_at=0.0,
    )


def test_pkce_rfc7636_appendix_b_vector() -> None:
    assert flows.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_new_pkce_is_fresh_and_well_formed() -> None:
    a, b = flows.new_pkce(), flows.new_pkce()
    verifier = a.verifier.reveal()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert a.verifier != b.verifier and a.method == "S256"
    assert a.challenge == flows.pkce_challenge(verifier)
    assert verifier not in repr(a)
    with pytest.raises(ValueError):
        flows.new_pkce(16)


def test_authorization_url_merges_params_and_protects_protocol_ones() -> None:
    cfg = config(authorize_params={"prompt": "consent", "state": "evil", "login_hint": "a@b.c"})
    request = flows.build_authorization_request(cfg)
    parts = urlsplit(request.url)
    query = parse_qs(parts.query)
    assert parts.path == "/authorize" and query["tenant"] == ["t1"]
    assert query["response_type"] == ["code"] and query["client_id"] == ["cid"]
    assert query["state"] == [request.state] and request.state != "evil"
    assert query["code_challenge"] == [request.pkce.challenge] and query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["openid offline_access"]
    assert query["login_hint"] == ["a@b.c"] and query["prompt"] == ["consent"]
    assert query["redirect_uri"] == ["https://linkctl.example.com/oauth/callback/mail"]
    assert request.pkce.verifier.reveal() not in request.url


def test_google_preset_params_are_always_sent() -> None:
    cfg = config(
        provider="google",
        authorize_params={},
        authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
    )
    query = parse_qs(urlsplit(flows.build_authorization_request(cfg).url).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]


def test_authorization_request_needs_redirect_and_client_id() -> None:
    with pytest.raises(ConfigError, match="redirect URL"):
        flows.build_authorization_request(config(redirect_uri=None))
    with pytest.raises(ConfigError, match="clientId"):
        flows.build_authorization_request(config(client_id=None))


def callback(request: flows.AuthorizationRequest, **params: str) -> str:
    return "https://linkctl.example.com/oauth/callback/mail?" + "&".join(
        f"{k}={v}" for k, v in params.items()
    )


def test_parse_callback_happy_path_with_iss() -> None:
    request = flows.build_authorization_request(config())
    url = callback(request, code="the-code", state=request.state, iss="https://idp.example.com")
    assert flows.parse_callback(url, request) == "the-code"


def test_parse_callback_refuses_state_mismatch_without_echoing_the_code() -> None:
    request = flows.build_authorization_request(config())
    with pytest.raises(ProviderError, match="state does not match") as caught:
        flows.parse_callback(callback(request, code="the-code", state="other"), request)
    assert "the-code" not in f"{caught.value} {caught.value.hint}"


def test_parse_callback_refuses_another_issuer() -> None:
    request = flows.build_authorization_request(config())
    with pytest.raises(ProviderError, match=r"expected 'https://idp\.example\.com'"):
        flows.parse_callback(
            callback(request, code="c", state=request.state, iss="https://evil.example.com"), request
        )


def test_parse_callback_requires_iss_when_announced() -> None:
    request = flows.build_authorization_request(config(), require_iss=True)
    with pytest.raises(ProviderError, match="lacks it"):
        flows.parse_callback(callback(request, code="c", state=request.state), request)


def test_callback_errors_are_classified() -> None:
    request = flows.build_authorization_request(config())
    with pytest.raises(GrantError, match="access_denied"):
        flows.parse_callback(callback(request, error="access_denied", state=request.state), request)
    with pytest.raises(ProviderConfigError, match="invalid_scope"):
        flows.parse_callback(callback(request, error="invalid_scope", state=request.state), request)
    ms = flows.build_authorization_request(config(provider="microsoft"))
    url = callback(
        ms, error="invalid_request", error_description="AADSTS50011:+redirect+mismatch", state=ms.state
    )
    with pytest.raises(ProviderConfigError) as caught:
        flows.parse_callback(url, ms)
    assert "Redirect URIs" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("provider", "scopes", "params", "expected"),
    [
        ("google", (), {}, ["consent"]),
        ("microsoft", ("Mail.Read",), {}, ["offline_access"]),
        ("custom", ("openid",), {}, ["add offline_access to spec.scopes", "prompt: consent"]),
    ],
)
def test_check_offline_names_causes_and_fixes(
    provider: str, scopes: tuple[str, ...], params: dict[str, str], expected: list[str]
) -> None:
    cfg = config(provider=provider, scopes=scopes, authorize_params=params)
    if provider == "google":
        # The preset's access_type/prompt are always sent (flows merges them into any config),
        # so a missing refresh token is never blamed on them: the fix is to consent again.
        causes, _fixes = flows.offline_diagnosis(cfg)
        assert not any("access_type" in c for c in causes)
    with pytest.raises(ProviderConfigError) as caught:
        flows.check_offline(cfg, response(refresh=False, expires_in=3600))
    text = f"{caught.value} {caught.value.hint}"
    assert "no refresh token" in text
    for words in expected:
        assert words in text


def test_check_offline_accepts_refresh_or_long_lived_tokens() -> None:
    flows.check_offline(config(), response(refresh=True, expires_in=60))
    flows.check_offline(config(), response(refresh=False, expires_in=86400))
    flows.check_offline(config(grant="client_credentials"), response(refresh=False, expires_in=60))
    with pytest.raises(ProviderConfigError, match="no stated lifetime"):
        flows.check_offline(config(), response(refresh=False, expires_in=None))


@pytest.mark.parametrize(
    ("uri", "loopback"),
    [
        ("http://127.0.0.1:8080/cb", True),
        ("http://localhost/cb", True),
        ("http://[::1]:9/cb", True),
        ("https://127.0.0.1/cb", False),
        ("http://10.0.0.1/cb", False),
        ("https://linkctl.example.com/cb", False),
    ],
)
def test_is_loopback_redirect(uri: str, loopback: bool) -> None:
    assert flows.is_loopback_redirect(uri) is loopback


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_listener_receives_one_callback_and_ignores_other_paths() -> None:
    port = free_port()
    listener = flows.CallbackListener(f"http://127.0.0.1:{port}/callback")
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(listener.wait(5)))
    thread.start()
    assert httpx.get(f"http://127.0.0.1:{port}/favicon.ico").status_code == 404
    page = httpx.get(f"http://127.0.0.1:{port}/callback?code=abc&state=xyz")
    thread.join(5)
    assert page.status_code == 200 and "abc" not in page.text
    assert results == [f"http://127.0.0.1:{port}/callback?code=abc&state=xyz"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/callback")  # closed after one request


def test_listener_times_out() -> None:
    listener = flows.CallbackListener(f"http://127.0.0.1:{free_port()}/cb")
    with pytest.raises(ProviderError, match=r"within 0\.2 s"):
        listener.wait(0.2)


def test_pasted_redirect() -> None:
    prompts: list[str] = []
    assert (
        flows.read_pasted_redirect(io.StringIO(" https://x/cb?code=1 \n"), prompts.append)
        == "https://x/cb?code=1"
    )
    assert prompts and "paste" in prompts[0]
    with pytest.raises(ProviderError, match="no redirect URL"):
        flows.read_pasted_redirect(io.StringIO("\n"), prompts.append)


def test_sealed_client_id_and_params_reach_the_authorization_url() -> None:
    cfg = config(client_id=Secret("cid-sealed"), authorize_params={"login_hint": Secret("hint-sealed")})
    query = parse_qs(urlsplit(flows.build_authorization_request(cfg).url).query)
    assert query["client_id"] == ["cid-sealed"] and query["login_hint"] == ["hint-sealed"]


@pytest.mark.parametrize(
    ("provider", "scopes", "params", "prompt"),
    [
        ("custom", ("openid", "offline_access"), {}, ["consent"]),  # OIDC Core §11: implied
        ("custom", ("openid", "offline_access"), {"prompt": "login"}, ["login"]),  # the link says otherwise
        ("custom", ("openid", "offline_access"), {"prompt": ""}, [""]),  # explicitly empty: sent as is
        ("custom", ("openid",), {}, None),  # no offline_access: nothing implied
        ("microsoft", ("Mail.Read",), {}, None),  # presets decide for themselves
    ],
)
def test_offline_access_implies_prompt_consent_for_custom_links(
    provider: str, scopes: tuple[str, ...], params: dict[str, str], prompt: list[str] | None
) -> None:
    cfg = config(provider=provider, scopes=scopes, authorize_params=params)
    query = parse_qs(urlsplit(flows.build_authorization_request(cfg).url).query, keep_blank_values=True)
    assert query.get("prompt") == prompt
    causes, _fixes = flows.offline_diagnosis(cfg)
    assert any("unless prompt=consent" in c for c in causes) == (
        provider == "custom" and prompt != ["consent"]
    )
