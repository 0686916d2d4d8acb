"""The keeper's token POST on a kept-alive connection, without httpx.Client's per-request work.

``TokenClient(keepalive=True)`` (``linkctl keeper``) sends thousands of token requests in a
row. ``httpx.Client.post`` spends about a third of each request's CPU time on machinery a
token request does not use: merging the URL and cookies, the auth and redirect generators,
event hooks, persisting the answer's cookies, parsing the same URL again (measured 2026-12-02:
0.40-0.44 ms of CPU per request through ``Client.post``, 0.26 ms through the transport).
:func:`post_form` builds the same request (the client's default headers, ``Host``,
``Content-Length``, the form encoded by httpx, the client's timeout) and hands
it to the transport the client itself would use for that URL (its mounts and environment
proxies), then reads the whole answer. Failures are therefore the same httpx exceptions,
raised from the same layers, and httpcore's trace events are the same.

A request that needs the client's machinery (credentials in the URL, client-level auth or
event hooks, cookies the client holds from an earlier answer, a closed client, an httpx
without the transport lookup) goes through ``Client.post`` exactly as before. Answers on
the pooled path keep no cookies: a token endpoint has no use for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import httpx

__all__ = ["post_form"]

Trace = Callable[[str, Mapping[str, Any]], None]


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """An endpoint URL parsed once (immutable; parsing is a third of building a request)."""
    return httpx.URL(url)


def post_form(
    client: httpx.Client,
    url: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    trace: Trace,
) -> httpx.Response:
    """POST ``form`` to ``url`` through ``client``'s transport; the answer is read in full."""
    # A URL with credentials in it is not kept in the cache (no cache holds a secret).
    parsed = httpx.URL(url) if "@" in url else _parsed(url)
    route = getattr(client, "_transport_for_url", None)
    if route is None or _needs_client(client, parsed):
        return client.post(parsed, data=form, headers=headers, extensions={"trace": trace})
    merged = client.headers.copy()
    merged.update(headers)
    request = httpx.Request(
        "POST",
        parsed,
        headers=merged,
        data=form,  # encoded (and Content-Type, Content-Length set) by httpx, as in Client.post
        extensions={"timeout": client.timeout.as_dict(), "trace": trace},
    )
    transport: httpx.BaseTransport = route(parsed)
    response = transport.handle_request(request)
    response.request = request
    try:
        response.read()
    finally:
        response.close()
    return response


def _needs_client(client: httpx.Client, url: httpx.URL) -> bool:
    """Whether the request needs something only ``Client.post`` does (then it goes that way)."""
    return bool(
        client.is_closed  # Client.post raises the right error
        or url.userinfo  # Basic auth from the URL
        or client.auth is not None
        or client.cookies  # cookies an earlier answer (e.g. discovery) set are sent, as before
        or client.event_hooks["request"]
        or client.event_hooks["response"]
    )
