"""TokenClient unit tests with an injected transport: request shapes and error classification.

Faults a real server produces are tested against oidc-provider in tests/integration; these
cover what is easier to pin down byte for byte (auth encoding, AADSTS codes, scrubbing).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from reconciler.domain.tokens import ClientConfig, DeviceAuthorization
from reconciler.errors import (
    GrantError,
    LinkctlError,
    ProviderConfigError,
    ResponseLost,
    TransientProviderError,
)
from reconciler.oauth.answers import parse_retry_after
from reconciler.oauth.client import TokenClient
from reconciler.oauth.discovery import discovery_urls
from reconciler.secrets import Secret

SECRET = "s3cr3t with spaces&:+/="
REFRESH = "rt-0123456789abcdef"
TOKEN_URL = "https://login.example.com/token"


def config(**overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "link": "mail",
        "provider": "custom",
        "client_id": "my client:id",
        "client_secret": Secret(SECRET),
        "client_auth": "client_secret_basic",
        "token_endpoint": TOKEN_URL,
        "scopes": ("openid", "offline_access"),
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


def make_client(handler: Callable[[httpx.Request], httpx.Response], now: float = 1000.0) -> TokenClient:
    return TokenClient(transport=httpx.MockTransport(handler), clock=lambda: now)


def ok(**body: object) -> httpx.Response:
    return httpx.Response(
        200, json={"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, **body}
    )


def assert_clean(error: LinkctlError, *values: str) -> None:
    text = f"{error} {error.hint}"
    for value in values:
        assert value not in text


def test_client_secret_basic_form_urlencodes_before_base64() -> None:
    seen: list[httpx.Request] = []
    client = make_client(lambda r: seen.append(r) or ok(refresh_token="rt-2"))
    response = client.refresh(config(), Secret(REFRESH))
    header = seen[0].headers["authorization"]
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert decoded == "my+client%3Aid:s3cr3t+with+spaces%26%3A%2B%2F%3D"
    form = parse_qs(seen[0].content.decode())
    assert form == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH]}
    assert response.refresh_token == Secret("rt-2")
    assert response.received_at == 1000.0


def test_client_secret_post_puts_credentials_in_the_body() -> None:
    seen: list[httpx.Request] = []
    client = make_client(lambda r: seen.append(r) or ok())
    client.client_credentials(config(client_auth="client_secret_post", token_params={"audience": "api"}))
    assert "authorization" not in seen[0].headers
    form = parse_qs(seen[0].content.decode())
    assert form["client_id"] == ["my client:id"] and form["client_secret"] == [SECRET]
    assert form["scope"] == ["openid offline_access"] and form["audience"] == ["api"]


def test_public_client_sends_only_client_id() -> None:
    seen: list[httpx.Request] = []
    client = make_client(lambda r: seen.append(r) or ok())
    client.exchange_code(
        config(client_auth="none", client_secret=None),
        code="c0de",
        code_verifier="v" * 43,
        redirect_uri="http://x/cb",
    )
    form = parse_qs(seen[0].content.decode())
    assert form["client_id"] == ["my client:id"] and "client_secret" not in form
    assert form["code_verifier"] == ["v" * 43] and form["redirect_uri"] == ["http://x/cb"]


def test_extra_never_holds_secret_fields() -> None:
    client = make_client(
        lambda r: ok(
            refresh_token="rt",
            id_token="idt",
            ext_expires_in=3600,
            refresh_token_expires_in=86400,
            session_key="k",
            issued_token_type="urn:x",
            foo="bar",
        )
    )
    response = client.refresh(config(), Secret(REFRESH))
    assert response.extra == {"ext_expires_in": 3600, "refresh_token_expires_in": 86400, "foo": "bar"}
    assert response.id_token == Secret("idt")


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (400, {"error": "invalid_grant", "error_description": "bad"}, GrantError),
        (401, {"error": "invalid_client"}, ProviderConfigError),
        (400, {"error": "unauthorized_client"}, ProviderConfigError),
        (400, {"error": "unsupported_grant_type"}, ProviderConfigError),
        (400, {"error": "invalid_scope"}, ProviderConfigError),
        (400, {"error": "redirect_uri_mismatch"}, ProviderConfigError),
        (400, {"error": "interaction_required"}, GrantError),
        (400, {"error": "temporarily_unavailable"}, TransientProviderError),
        (503, {"error": "server_error"}, TransientProviderError),
        (502, None, TransientProviderError),
        (400, None, TransientProviderError),
        (404, None, ProviderConfigError),
    ],
)
def test_classification(status: int, body: object, error_type: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="<html>oops</html>", headers={"content-type": "text/html"})
        return httpx.Response(status, json=body)

    with pytest.raises(error_type) as caught:
        make_client(handler).refresh(config(), Secret(REFRESH))
    assert type(caught.value) is error_type
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    assert_clean(caught.value, REFRESH, SECRET)  # type: ignore[arg-type]


def test_echoed_values_are_scrubbed_and_descriptions_truncated() -> None:
    description = f"refresh token {REFRESH} unknown for secret {SECRET}\n" + "x" * 500
    client = make_client(
        lambda r: httpx.Response(400, json={"error": "invalid_grant", "error_description": description})
    )
    with pytest.raises(GrantError) as caught:
        client.refresh(config(), Secret(REFRESH))
    text = str(caught.value)
    assert_clean(caught.value, REFRESH, SECRET)
    assert "***" in text and "\n" not in text and len(text) < 400
    assert "'mail'" in text and "HTTP 400 invalid_grant" in text


def test_microsoft_aadsts_codes_follow_the_preset() -> None:
    ms = config(provider="microsoft", client_auth="client_secret_post")
    expired_secret = {
        "error": "invalid_client",
        "error_description": "AADSTS7000222: The provided client secret keys are expired.",
    }
    client = make_client(lambda r: httpx.Response(401, json=expired_secret))
    with pytest.raises(ProviderConfigError) as caught:
        client.refresh(ms, Secret(REFRESH))
    assert "client secret has expired" in str(caught.value)
    assert "Certificates & secrets" in (caught.value.hint or "")
    inactive = {
        "error": "invalid_grant",
        "error_description": "AADSTS700082: The refresh token has expired due to inactivity.",
    }
    client = make_client(lambda r: httpx.Response(400, json=inactive))
    with pytest.raises(GrantError, match="90 days of inactivity"):
        client.refresh(ms, Secret(REFRESH))


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", 0) == 120
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30) == 30
    assert parse_retry_after("garbage", 0) is None
    assert parse_retry_after(None, 0) is None
    client = make_client(
        lambda r: httpx.Response(429, headers={"retry-after": "9"}, json={"error": "slow_down"})
    )
    with pytest.raises(TransientProviderError) as caught:
        client.refresh(config(), Secret(REFRESH))
    assert caught.value.retry_after == 9


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>proxy login</html>"),
        httpx.Response(200, json={"token_type": "Bearer"}),
        httpx.Response(200, json=["not", "an", "object"]),
    ],
)
def test_unusable_success_is_lost_not_ok(response: httpx.Response) -> None:
    with pytest.raises(ResponseLost):
        make_client(lambda r: response).refresh(config(), Secret(REFRESH))


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (httpx.ConnectError("refused"), TransientProviderError),
        (httpx.ConnectTimeout("slow"), TransientProviderError),
        (httpx.ReadTimeout("no answer"), ResponseLost),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), ResponseLost),
    ],
)
def test_transport_failures(exc: Exception, error_type: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(error_type) as caught:
        make_client(handler).refresh(config(), Secret(REFRESH))
    assert type(caught.value) is error_type


@pytest.mark.parametrize("keepalive", [False, True])
def test_an_undecodable_body_is_a_lost_response(keepalive: bool) -> None:
    # The provider answered (and may have rotated the refresh token), but the body is
    # declared gzip and is not: httpx raises DecodingError while reading it.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip at all")

    client = TokenClient(transport=httpx.MockTransport(handler), keepalive=keepalive)
    with pytest.raises(ResponseLost) as caught:
        client.refresh(config(), Secret(REFRESH))
    assert "DecodingError" in str(caught.value)
    assert_clean(caught.value, SECRET, REFRESH)


def device(interval: float = 5.0, expires_in: float = 600.0) -> DeviceAuthorization:
    return DeviceAuthorization(
        Secret("dc-secret"), "ABCD-EFGH", "https://x/device", None, expires_in, interval, 1000.0
    )


def test_device_polling_honours_pending_and_slow_down() -> None:
    answers = [
        httpx.Response(400, json={"error": "authorization_pending"}),
        httpx.Response(400, json={"error": "slow_down"}),
        httpx.Response(400, json={"error": "authorization_pending"}),
        ok(refresh_token="rt"),
    ]
    now = [1000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    client = TokenClient(transport=httpx.MockTransport(lambda r: answers.pop(0)), clock=lambda: now[0])
    response = client.poll_device(config(grant="device_code"), device(), sleep=sleep)
    assert waits == [5.0, 5.0, 10.0, 10.0]
    assert response.refresh_token is not None


@pytest.mark.parametrize(("error", "words"), [("access_denied", "denied"), ("expired_token", "expired")])
def test_device_polling_stops(error: str, words: str) -> None:
    client = make_client(lambda r: httpx.Response(400, json={"error": error}))
    with pytest.raises(GrantError, match=words) as caught:
        client.poll_device(config(grant="device_code"), device(), sleep=lambda s: None)
    assert_clean(caught.value, "dc-secret")


def test_device_polling_gives_up_at_the_deadline() -> None:
    client = make_client(lambda r: httpx.Response(400, json={"error": "authorization_pending"}))
    with pytest.raises(GrantError, match="not approved in time"):
        client.poll_device(config(grant="device_code"), device(), sleep=lambda s: None, deadline=1003.0)


def test_device_authorize_defaults_interval_and_accepts_verification_url() -> None:
    body = {
        "device_code": "dc",
        "user_code": "WXYZ",
        "verification_url": "https://g.co/device",
        "expires_in": 1800,
    }
    seen: list[httpx.Request] = []
    client = make_client(lambda r: seen.append(r) or httpx.Response(200, json=body))
    result = client.device_authorize(config(device_authorization_endpoint="https://login.example.com/device"))
    assert result.interval == 5.0 and result.verification_uri == "https://g.co/device"
    assert result.expires_at == 2800.0 and result.device_code == Secret("dc")
    assert "dc" not in repr(result.device_code)


def test_revoke_without_endpoint_is_a_configuration_error() -> None:
    client = make_client(lambda r: ok())
    with pytest.raises(ProviderConfigError, match="no revocation endpoint"):
        client.revoke(config(provider="microsoft"), Secret(REFRESH))


def test_discovery_falls_back_to_rfc8414_and_checks_issuer() -> None:
    issuer = "https://auth.example.com/tenant1"
    assert discovery_urls(issuer) == [
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
    ]
    document = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "authorization_endpoint": f"{issuer}/auth",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if "openid-configuration" in request.url.path:
            return httpx.Response(404)
        return httpx.Response(200, content=json.dumps(document))

    metadata = make_client(handler).discover(issuer)
    assert metadata.token_endpoint == f"{issuer}/token"
    assert metadata.source_url is not None and "oauth-authorization-server" in metadata.source_url
    other = make_client(
        lambda r: httpx.Response(200, json={**document, "issuer": "https://evil.example.com"})
    )
    with pytest.raises(ProviderConfigError, match="returned metadata for issuer"):
        other.discover(issuer)


def test_issuer_only_config_is_completed_by_discovery() -> None:
    issuer = "https://auth.example.com"
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json={"issuer": issuer, "token_endpoint": f"{issuer}/oauth/token"})
        return ok()

    client = make_client(handler)
    cfg = config(token_endpoint=None, issuer=issuer, grant="client_credentials")
    client.client_credentials(cfg)
    client.client_credentials(cfg)
    assert calls == ["/.well-known/openid-configuration", "/oauth/token", "/oauth/token"]  # cached


# -- keep-alive (TokenClient(keepalive=True), used by the keeper) ---------------------------
CONNECT = ("connection.connect_tcp.started", "connection.connect_tcp.complete")
HEADERS_FAILED = ("http11.send_request_headers.started", "http11.send_request_headers.failed")
BODY_SENT = (
    "http11.send_request_headers.started",
    "http11.send_request_headers.complete",
    "http11.send_request_body.started",
    "http11.send_request_body.complete",
    "http11.receive_response_headers.started",
    "http11.receive_response_headers.failed",
)


class TracedTransport(httpx.BaseTransport):
    """Emits httpcore-style trace events, then fails (scripted) or answers 200."""

    def __init__(self, script: list[tuple[tuple[str, ...], Exception | None]]) -> None:
        self.script = script
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        events, error = self.script.pop(0) if self.script else ((), None)
        trace = request.extensions.get("trace")
        for name in events:
            if trace is not None:
                trace(name, {})
        if error is not None:
            raise error
        return ok(refresh_token="rt-new")


def keepalive_client(transport: httpx.BaseTransport) -> TokenClient:
    return TokenClient(transport=transport, clock=lambda: 1000.0, keepalive=True)


def test_keepalive_stale_reused_connection_before_sending_is_retried_once_on_a_fresh_one() -> None:
    transport = TracedTransport([(HEADERS_FAILED, httpx.RemoteProtocolError("Server disconnected"))])
    response = keepalive_client(transport).refresh(config(), Secret(REFRESH))
    assert transport.calls == 2 and response.refresh_token is not None


def test_keepalive_failure_after_the_request_was_sent_stays_response_lost_and_is_not_retried() -> None:
    transport = TracedTransport([(BODY_SENT, httpx.RemoteProtocolError("Server disconnected"))])
    with pytest.raises(ResponseLost):
        keepalive_client(transport).refresh(config(), Secret(REFRESH))
    assert transport.calls == 1


def test_keepalive_fresh_connection_failing_before_sending_is_transient_not_retried() -> None:
    transport = TracedTransport([(CONNECT + HEADERS_FAILED, httpx.ReadError("reset"))])
    with pytest.raises(TransientProviderError) as caught:
        keepalive_client(transport).refresh(config(), Secret(REFRESH))
    assert not isinstance(caught.value, ResponseLost) and transport.calls == 1


def test_keepalive_timeout_is_never_retried() -> None:
    transport = TracedTransport([(HEADERS_FAILED, httpx.WriteTimeout("slow"))])
    with pytest.raises(TransientProviderError):
        keepalive_client(transport).refresh(config(), Secret(REFRESH))
    assert transport.calls == 1


def test_keepalive_retry_that_also_fails_after_sending_is_response_lost() -> None:
    transport = TracedTransport(
        [
            (HEADERS_FAILED, httpx.RemoteProtocolError("Server disconnected")),
            (CONNECT + BODY_SENT, httpx.ReadTimeout("timeout")),
        ]
    )
    with pytest.raises(ResponseLost):
        keepalive_client(transport).refresh(config(), Secret(REFRESH))
    assert transport.calls == 2


def test_keepalive_without_trace_events_is_classified_as_before() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    client = TokenClient(transport=httpx.MockTransport(handler), keepalive=True)
    with pytest.raises(ResponseLost):
        client.refresh(config(), Secret(REFRESH))


def test_keepalive_real_socket_server_reset_idle_connection_is_retried() -> None:
    """A server that resets a kept-alive connection between requests: the refresh still succeeds."""
    import socket
    import struct
    import threading

    from httpcore._sync.http11 import HTTP11Connection

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    answered: list[int] = []
    closed = [threading.Event(), threading.Event()]  # set once the server has answered and closed

    def serve() -> None:
        for index in range(2):
            conn, _ = listener.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            while len(body) < length:
                body += conn.recv(65536)
            payload = json.dumps({"access_token": f"at-{index}", "refresh_token": f"rt-{index}"}).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            answered.append(index)
            if index == 0:  # then reset the idle kept-alive connection (RST, not FIN)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            closed[index].set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = TokenClient(timeout=5, keepalive=True)
    url = f"http://127.0.0.1:{port}/token"
    original = HTTP11Connection.has_expired
    HTTP11Connection.has_expired = lambda self: False  # type: ignore[method-assign]  # lose the pre-check race
    try:
        first = client.refresh(config(token_endpoint=url), Secret(REFRESH))
        import time

        # The client reads the answer before the server thread resets the connection: on a
        # loaded machine that thread may not run for a while, so wait for it, not a guess.
        assert closed[0].wait(10), "the server never reset the first connection"
        time.sleep(0.2)  # the RST has arrived: the pooled connection is dead
        second = client.refresh(config(token_endpoint=url), Secret("rt-0"))
        assert closed[1].wait(10), "the server never finished the second answer"
    finally:
        HTTP11Connection.has_expired = original  # type: ignore[method-assign]
        client.close()
        listener.close()
    assert first.access_token.reveal() == "at-0" and second.access_token.reveal() == "at-1"
    assert answered == [0, 1]


def test_sealed_spec_fields_are_opened_only_for_the_request() -> None:
    spec = {
        "provider": "custom",
        "clientId": {"$secret": "clientId"},
        "clientAuth": "client_secret_post",
        "tokenEndpoint": TOKEN_URL,
        "tokenParams": {"client_assertion": {"$secret": "tokenParams.client_assertion"}, "audience": "api"},
    }
    sealed = {"clientId": Secret("id-canary"), "tokenParams.client_assertion": Secret("jwt-canary")}
    cfg = ClientConfig.from_spec("mail", spec, Secret(SECRET), sealed.get)
    assert "canary" not in repr(cfg)
    seen: list[httpx.Request] = []
    make_client(lambda r: seen.append(r) or ok()).client_credentials(cfg)
    form = parse_qs(seen[0].content.decode())
    assert form["client_id"] == ["id-canary"] and form["client_assertion"] == ["jwt-canary"]
    assert form["audience"] == ["api"]
    with pytest.raises(LinkctlError, match=r"tokenParams\.client_assertion"):
        ClientConfig.from_spec("mail", spec, None, {"clientId": Secret("x")}.get)
