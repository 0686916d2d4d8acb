"""The keeper's pooled token POST (reconciler.oauth.pooled): the same request as Client.post, cheaper.

TokenClient(keepalive=True) sends its token requests through the transport directly; these
tests pin down that what reaches the transport (and the wire) is what Client.post sent,
that the client's timeout still bounds every request (the lease must outlive it), and that
the requests which need the client's own machinery still go through it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from reconciler.domain.tokens import ClientConfig
from reconciler.oauth import pooled
from reconciler.oauth.client import TokenClient
from reconciler.secrets import Secret

TOKEN_URL = "https://login.example.com/token"
SECRET = "s3cr3t with spaces&:+/="


def config(**overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "link": "mail",
        "provider": "custom",
        "client_id": "my client:id",
        "client_secret": Secret(SECRET),
        "client_auth": "client_secret_basic",
        "token_endpoint": TOKEN_URL,
        "token_params": {"audience": "api ü", "resource": "https://api.example.com/"},
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


class Recording(httpx.BaseTransport):
    """Answers a token response and keeps every request it was handed."""

    def __init__(self, answer: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answer is not None:
            return self.answer
        return httpx.Response(200, json={"access_token": "at-1", "refresh_token": "rt-2", "expires_in": 60})


def sent(keepalive: bool, cfg: ClientConfig | None = None, timeout: float = 10.0) -> httpx.Request:
    transport = Recording()
    with TokenClient(transport=transport, keepalive=keepalive, timeout=timeout) as client:
        client.refresh(cfg or config(), Secret("rt-1"))
    [request] = transport.requests
    return request


@pytest.mark.parametrize(
    "cfg",
    [config(), config(client_auth="client_secret_post"), config(client_auth="none", client_secret=None)],
    ids=["basic", "post", "public"],
)
def test_the_pooled_request_is_the_one_client_post_sent(cfg: ClientConfig) -> None:
    before, after = sent(False, cfg), sent(True, cfg)
    assert after.method == before.method == "POST"
    assert after.url == before.url
    assert after.content == before.content
    # Same header names and values in the same order (Host and Content-Length included).
    assert after.headers.multi_items() == before.headers.multi_items()
    assert after.extensions["timeout"] == before.extensions["timeout"]


def test_every_pooled_request_carries_the_clients_timeout() -> None:
    # Invariant 3: a request never outlives its lease, because it is bounded by http_timeout.
    request = sent(True, timeout=3.5)
    assert request.extensions["timeout"] == httpx.Timeout(3.5).as_dict()


def test_the_pooled_path_passes_httpcores_trace_callback() -> None:
    events: list[str] = []
    transport = Recording()
    client = httpx.Client(transport=transport)
    pooled.post_form(client, TOKEN_URL, {"a": "b"}, {}, trace=lambda name, info: events.append(name))
    trace = transport.requests[0].extensions["trace"]
    trace("http11.send_request_body.complete", {})
    assert events == ["http11.send_request_body.complete"]


def test_answers_on_the_pooled_path_keep_no_cookies() -> None:
    answer = httpx.Response(200, headers={"set-cookie": "sticky=1; Path=/"}, json={"access_token": "at"})
    client = httpx.Client(transport=Recording(answer))
    pooled.post_form(client, TOKEN_URL, {"a": "b"}, {}, trace=lambda name, info: None)
    assert not client.cookies


def test_cookies_the_client_already_holds_are_sent_as_before() -> None:
    transport = Recording()
    client = httpx.Client(transport=transport, cookies={"sticky": "1"})
    pooled.post_form(client, TOKEN_URL, {"a": "b"}, {}, trace=lambda name, info: None)
    assert transport.requests[0].headers["cookie"] == "sticky=1"


def test_credentials_in_the_url_go_through_the_client_and_are_not_cached() -> None:
    transport = Recording()
    client = httpx.Client(transport=transport)
    url = "https://user:pw@login.example.com/token"
    pooled.post_form(client, url, {"a": "b"}, {}, trace=lambda name, info: None)
    assert transport.requests[0].headers["authorization"].startswith("Basic ")  # httpx's URL auth
    cached = pooled._parsed.cache_info().currsize
    pooled.post_form(client, url, {"a": "b"}, {}, trace=lambda name, info: None)
    assert pooled._parsed.cache_info().currsize == cached


def test_a_closed_client_refuses_as_client_post_does() -> None:
    client = httpx.Client(transport=Recording())
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        pooled.post_form(client, TOKEN_URL, {"a": "b"}, {}, trace=lambda name, info: None)


class _Token(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.peers.append(self.client_address)
        body = json.dumps({"access_token": "at", "refresh_token": "rt", "expires_in": 60}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def token_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Token)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Token.peers = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


def test_each_answer_is_read_and_its_connection_returned_to_the_pool(token_server: str) -> None:
    # With one pooled connection, an answer left unread would hold it: the next request
    # would wait for the pool and fail (PoolTimeout) instead of reusing the connection.
    client = TokenClient(timeout=2, keepalive=True, max_connections=1)
    try:
        for _ in range(5):
            response = client.refresh(config(token_endpoint=token_server, token_params={}), Secret("rt"))
            assert response.access_token.reveal() == "at"
    finally:
        client.close()
    assert len(_Token.peers) == 5 and len(set(_Token.peers)) == 1  # one kept-alive connection
