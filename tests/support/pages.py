"""Helpers for the pages' tests: links whose redirect URL is a running server's callback, an admin browser.

- :func:`hosted_links` registers one oracle client whose redirect URIs are
  ``{base_url}/oauth/callback/{name}`` and stores the links (never authorized; issuer
  declared, endpoints too), so the
  hosted callback of a running ``linkctl serve`` receives their consents;
- :class:`Admin` is an httpx "browser" of the pages: it keeps cookies, logs in through
  the ``/login`` form (its CSRF cookie and token included), reads a page's ``csrf_token``
  and posts forms, never following redirects (tests look at each answer).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from reconciler.store.base import Store
from tests.support.oracle import OidcServer, OracleClient
from tests.support.oracle_links import link_for

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def hosted_links(server: OidcServer, store: Store, base_url: str, names: Sequence[str]) -> OracleClient:
    """Register a client redirecting to ``base_url``'s callbacks; store ``names`` (never authorized)."""
    uris = tuple(f"{base_url}/oauth/callback/{name}" for name in names)
    registered = server.register_client(redirect_uris=uris)
    with store.write(expected_serial=None, actor="test") as tx:
        for name, uri in zip(names, uris, strict=True):
            link = link_for(server, registered, name)
            # The issuer declared too: RFC 9207 iss is then expected (and required: the oracle announces it).
            spec = {**link.spec, "redirectUri": uri, "issuer": server.issuer}
            tx.put_link(dataclasses.replace(link, spec=spec))
    return registered


def csrf_of(page: str) -> str:
    """The first ``csrf_token`` of a page's forms."""
    match = _CSRF.search(page)
    assert match, f"no csrf_token on the page: {page[:300]}"
    return match.group(1)


class Admin:
    """An httpx client acting as an admin's browser on the pages (see the module docstring)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def login(self, key: str) -> httpx.Response:
        """Fill and post the ``/login`` form with ``key``."""
        form = self.http.get("/login")
        assert form.status_code == 200, form.text
        return self.http.post("/login", data={"key": key, "csrf_token": csrf_of(form.text), "next": "/"})

    def logged_in(self, key: str) -> Admin:
        """Log in, asserting it worked."""
        answer = self.login(key)
        assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
        return self

    def get(self, path: str, **kw: Any) -> httpx.Response:
        """A GET with this browser's cookies."""
        return self.http.get(path, **kw)

    def token(self, path: str = "/") -> str:
        """The ``csrf_token`` of the page at ``path``."""
        page = self.http.get(path)
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    def post(self, path: str, fields: Mapping[str, str]) -> httpx.Response:
        """Post a form exactly as given (the test decides about ``csrf_token``)."""
        return self.http.post(path, data=dict(fields))

    def press(self, name: str, button: str) -> httpx.Response:
        """Press ``button`` (authorize | refresh | revoke) on the page of link ``name``."""
        token = self.token(f"/links/{name}")
        return self.post(f"/links/{name}/{button}", {"csrf_token": token})
