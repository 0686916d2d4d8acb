"""The access log: one line per request, as text or JSON (``--log-format json``).

A pure ASGI middleware. Never logs a header, a body or a query value other than the few
harmless ones named in :data:`SHOWN_PARAMS`: codes, states, keys and cookies never reach
the log. The API key of a request is named by its id (set by :mod:`reconciler.server.auth`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SHOWN_PARAMS = frozenset({"min_valid", "status", "provider", "page"})
SCRUBBED = "***"
log = logging.getLogger("linkctl.access")


def scrub_query(query: bytes) -> str:
    """A query string with every value but :data:`SHOWN_PARAMS`' replaced by ``***``."""
    if not query:
        return ""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return "&".join(
        f"{quote(k[:40], safe='')}={quote(v[:40], safe='') if k in SHOWN_PARAMS else SCRUBBED}"
        for k, v in pairs
    )


class AccessLog:
    """ASGI middleware writing one access-log line per HTTP request when its answer is sent."""

    def __init__(self, app: ASGIApp, *, log_format: str = "text") -> None:
        self.app = app
        self.json = log_format == "json"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        size = 0

        async def recording_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self._write(scope, status, size, time.perf_counter() - start)

    def _write(self, scope: Scope, status: int, size: int, seconds: float) -> None:
        client = scope.get("client")
        state = scope.get("state") or {}
        query = scrub_query(scope.get("query_string", b""))
        # The path only: raw_path and the query may carry what a client should not have sent.
        path = quote(scope.get("path", ""), safe="/-._~!$'()*+,;=:@")[:300]
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "remote": client[0] if client else None,
            "method": scope.get("method"),
            "path": path,
            "query": query or None,
            "status": status,
            "bytes": size,
            "ms": round(seconds * 1000, 2),
            "key_id": state.get("api_key_id"),
        }
        if self.json:
            log.info(json.dumps(record, separators=(",", ":")))
            return
        target = path + (f"?{query}" if query else "")
        key = f" key={record['key_id']}" if record["key_id"] else ""
        log.info(f'{record["remote"]} "{record["method"]} {target}" {status} {size}B {record["ms"]}ms{key}')
