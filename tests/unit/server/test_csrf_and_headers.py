"""server.csrf and server.security: tokens bound to their session or cookie; the headers' policy."""

from __future__ import annotations

from typing import Any

from reconciler.secrets import Secret
from reconciler.server import csrf, security
from reconciler.server.edge import Edge
from reconciler.services.sessions import Session
from tests.support.asyncio_thread import run_in_own_loop


class _Store:
    """Only what the login token needs of a store: its derived fingerprint key."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def fingerprint_key(self) -> bytes:
        return self.key


def _session(hashed: str, secret: str) -> Session:
    return Session(hashed, None, Secret(secret), 0.0, 1.0)  # type: ignore[arg-type]


def test_a_session_token_is_worthless_in_another_session() -> None:
    one, two = _session("a" * 64, "secret-one"), _session("b" * 64, "secret-two")
    assert csrf.session_token_ok(one, csrf.session_token(one))
    assert not csrf.session_token_ok(two, csrf.session_token(one))
    assert not csrf.session_token_ok(one, None) and not csrf.session_token_ok(one, "")
    assert "secret-one" not in csrf.session_token(one)


def test_a_login_token_needs_its_cookie_and_the_servers_key() -> None:
    store, other = _Store(b"k" * 32), _Store(b"o" * 32)
    nonce = csrf.new_login_nonce()
    token = csrf.login_token(store, nonce)  # type: ignore[arg-type]
    assert csrf.login_token_ok(store, nonce, token)  # type: ignore[arg-type]
    assert not csrf.login_token_ok(store, csrf.new_login_nonce(), token)  # type: ignore[arg-type]
    assert not csrf.login_token_ok(other, nonce, token)  # type: ignore[arg-type]  # another server key
    forged = f"{nonce}.{'A' * 43}"
    assert not csrf.login_token_ok(store, nonce, forged)  # type: ignore[arg-type]
    assert not csrf.login_token_ok(store, None, token)  # type: ignore[arg-type]


def test_the_policy_forbids_inline_code_and_framing() -> None:
    policy = security.content_security_policy(["https://accounts.google.com"])
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert "form-action 'self' https://accounts.google.com;" in policy
    assert security.origin_of("https://login.example:8443/o/authorize?x=1") == "https://login.example:8443"
    for bad in ("javascript:alert(1)", "https://a.example; script-src *", "https://u:p@a.example", None, ""):
        assert security.origin_of(bad) is None


def test_the_middleware_adds_headers_and_keeps_a_pages_own_policy() -> None:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        own = [(b"content-security-policy", b"default-src 'none'; form-action 'self' https://x.example")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": own if scope["path"] == "/own" else []}
        )
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    wrapped = Edge(app)  # the one middleware: headers on every response
    for path in ("/", "/own"):
        run_in_own_loop(wrapped({"type": "http", "path": path}, receive, send))
    plain, own = (dict(m["headers"]) for m in sent if m["type"] == "http.response.start")
    assert plain[b"x-content-type-options"] == b"nosniff" and plain[b"referrer-policy"] == b"no-referrer"
    assert b"frame-ancestors 'none'" in plain[b"content-security-policy"]
    assert own[b"content-security-policy"].endswith(b"https://x.example")
    assert own[b"x-content-type-options"] == b"nosniff"
