"""The access log: one line per request on stderr, as text or JSON (``--log-format json``).

A pure ASGI middleware (``linkctl serve`` folds it into :class:`~reconciler.server.edge.Edge`,
which writes through :class:`AccessLines`). Never logs a header, a body or a query value other than the few
harmless ones named in :data:`SHOWN_PARAMS`: codes, states, keys and cookies never reach
the log. The API key of a request is named by its id (set by :mod:`reconciler.server.auth`).
Lines are written straight to the stream (no ``logging`` record per request): at thousands
of requests a second the logging machinery cost more than answering a token.
"""

from __future__ import annotations

import asyncio
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


_MAX_PENDING = 256  # lines held at most: a turn of the loop that long writes early


class StderrLines:
    """Access lines to stderr, written together once per turn of the event loop.

    Under load many requests finish in one turn of the loop: their lines leave in one
    ``write`` instead of one each (a system call per request was a tenth of a token
    answer's cost). Nothing waits longer than the current turn, and outside a running loop
    a line is written at once. Lines still buffered when the process exits are written by
    :meth:`flush` (the server's shutdown calls it).
    """

    def __init__(self) -> None:
        self._pending: list[str] = []

    def __call__(self, line: str) -> None:
        """Queue ``line`` for the end of this turn of the loop (or write it now, without a loop)."""
        pending = self._pending
        pending.append(line)
        if len(pending) > 1:
            if len(pending) >= _MAX_PENDING:
                self.flush()
            return  # a flush is already scheduled for this turn
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every queued line (one ``write``) and flush stderr."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        stream = sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()


class AccessLines:
    """Formats and writes access lines (text or JSON); :meth:`record` is one answered request."""

    def __init__(self, *, log_format: str = "text", write: Callable[[str], None] | None = None) -> None:
        self.json = log_format == "json"
        self.write = StderrLines() if write is None else write
        self._second = -1
        self._stamp = ""

    def flush(self) -> None:
        """Write out lines the writer still holds (at shutdown)."""
        flush = getattr(self.write, "flush", None)
        if flush is not None:
            flush()

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
