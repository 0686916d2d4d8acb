"""The access log: one line per request on stderr, as text or JSON (``--log-format json``).

A pure ASGI middleware (``linkctl serve`` folds it into :class:`~reconciler.server.edge.Edge`,
which writes through :class:`AccessLines`). Never logs a header, a body or a query value other than the few
harmless ones named in :data:`SHOWN_PARAMS`: codes, states, keys and cookies never reach
the log. The API key of a request is named by its id (set by :mod:`reconciler.server.auth`).
Lines are written straight to the stream (no ``logging`` record per request): at thousands
of requests a second the logging machinery cost more than answering a token.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.types import Scope

SHOWN_PARAMS = frozenset({"min_valid", "status", "provider", "page"})
SCRUBBED = "***"
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._\-]{0,40}$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._\-~]{0,300}$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._\-\[\]]")


_PLAIN_QUERIES: dict[bytes, str] = {}  # queries that scrubbing left unchanged (so: no secret in them)


def scrub_query(query: bytes) -> str:
    """A query string with every value but :data:`SHOWN_PARAMS`' (when plain) replaced by ``***``."""
    if not query:
        return ""
    plain = _PLAIN_QUERIES.get(query)
    if plain is not None:
        return plain
    scrubbed = _scrub(query)
    if scrubbed.encode("latin-1") == query and len(_PLAIN_QUERIES) < 1024:
        _PLAIN_QUERIES[query] = scrubbed  # only shown names with plain values: nothing to hide
    return scrubbed


def _scrub(query: bytes) -> str:
    parts = []
    for pair in query.decode("latin-1").split("&")[:50]:
        name, sep, value = pair.partition("=")
        name = _UNSAFE_NAME.sub("_", name[:40])
        shown = value if name in SHOWN_PARAMS and _SAFE_VALUE.match(value) else SCRUBBED
        parts.append(f"{name}={shown}" if sep else name)
    return "&".join(parts)


def _stderr_line(line: str) -> None:
    stream = sys.stderr
    stream.write(line + "\n")
    stream.flush()


class AccessLines:
    """Formats and writes access lines (text or JSON); :meth:`record` is one answered request."""

    def __init__(self, *, log_format: str = "text", write: Callable[[str], None] = _stderr_line) -> None:
        self.json = log_format == "json"
        self.write = write
        self._second = -1
        self._stamp = ""

    def _now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._stamp

    def record(self, scope: Scope, status: int, size: int, seconds: float) -> None:
        """Write the line of one answered request."""
        try:
            client = scope.get("client")
            state = scope.get("state") or {}
            query = scrub_query(scope.get("query_string", b""))
            # The decoded path only: the raw path and the query may carry what a client should not send.
            path = scope.get("path", "")
            if not _SAFE_PATH.match(path):
                path = quote(path[:300], safe="/-._~!$'()*+,;=:@")
            key_id = state.get("api_key_id")
            remote = client[0] if client else None
            ms = round(seconds * 1000, 2)
            if self.json:
                record: dict[str, Any] = {
                    "time": self._now(),
                    "remote": remote,
                    "method": scope.get("method"),
                    "path": path,
                    "query": query or None,
                    "status": status,
                    "bytes": size,
                    "ms": ms,
                    "key_id": key_id,
                }
                self.write(json.dumps(record, separators=(",", ":")))
                return
            target = path + (f"?{query}" if query else "")
            key = f" key={key_id}" if key_id else ""
            self.write(
                f'{self._now()} {remote} "{scope.get("method")} {target}" {status} {size}B {ms}ms{key}'
            )
        except Exception:  # a log line must never turn an answered request into an error
            pass
