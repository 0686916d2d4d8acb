"""server.edge: the one middleware — headers, the /v1/ count and the access line on both lanes."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from reconciler.server.access_log import AccessLines
from reconciler.server.edge import Edge, with_security_headers
from reconciler.server.security import HEADERS
from tests.support.asyncio_thread import run_in_own_loop


class _Counter:
    """What Edge needs of Operations: one call per counted answer."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    def observe_request(self, status: int) -> None:
        self.statuses.append(status)


class _Answering:
    """A plain ASGI app (as the token endpoint is) that notes which lane reached it."""

    def __init__(self, label: bytes, calls: list[bytes]) -> None:
        self.label, self.calls = label, calls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(self.label)
        scope.setdefault("state", {})["api_key_id"] = "key_1234"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-lane", self.label)]})
        await send({"type": "http.response.body", "body": b"{}"})


def _request(edge: Edge, path: str, method: str = "GET") -> dict[bytes, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"min_valid=60&code=s3cr3t",
        "headers": [(b"authorization", b"Bearer lk_do-not-log-me")],
        "client": ("127.0.0.1", 1),
    }
    run_in_own_loop(edge(scope, receive, send))
    return dict(next(m for m in sent if m["type"] == "http.response.start")["headers"])


def test_both_lanes_get_headers_count_and_one_line_without_secrets() -> None:
    calls: list[bytes] = []
    lines: list[str] = []
    counter = _Counter()
    fast = Route("/v1/links/{name}/token", _Answering(b"fast", calls), methods=["GET"])
    edge = Edge(
        _Answering(b"stack", calls),
        operations=counter,  # type: ignore[arg-type]
        access_log=AccessLines(write=lines.append),
        fast_route=fast,
    )
    token = _request(edge, "/v1/links/a/token")
    other = _request(edge, "/v1/links/a")
    head = _request(edge, "/v1/links/a/token", method="HEAD")
    page = _request(edge, "/")
    assert calls == [b"fast", b"stack", b"stack", b"stack"]  # only a GET of the token route skips the stack
    for headers in (token, other, head, page):
        assert all(headers[name] == value for name, value in HEADERS)
    assert counter.statuses == [200, 200, 200]  # /v1/ answers only
    assert len(lines) == 4 and all("key=key_1234" in line for line in lines)
    assert "GET /v1/links/a/token?min_valid=60&code=***" in lines[0]
    assert not any("s3cr3t" in line or "do-not-log-me" in line for line in lines)


def test_a_responses_own_policy_wins() -> None:
    own = (b"content-security-policy", b"default-src 'none'; form-action 'self' https://x.example")
    merged = dict(with_security_headers([own]))
    assert merged[b"content-security-policy"] == own[1]
    assert merged[b"x-content-type-options"] == b"nosniff"
    assert len(with_security_headers([own])) == len(HEADERS)
