"""The pages over HTTP, through a real ``linkctl serve``: log-in, sessions, CSRF, security headers.

Lean checks with httpx (the browser test drives the same pages in chromium): every page
but /login and the callback sends a visitor without a session to /login; /login takes
only an admin key, through a form whose CSRF token is a signed double-submit cookie; the
session cookie is HttpOnly and SameSite=Lax; a session ends at /logout (POST with its
csrf_token) and when it expires; a POST without this session's csrf_token is refused
with 403 and changes nothing; every response — pages, callback, API, errors — carries
the security headers.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.services import sessions
from tests.support.oracle import OidcServer
from tests.support.oracle_links import open_store, state_env
from tests.support.pages import Admin, csrf_of, hosted_links
from tests.support.server import Served, create_key, serve

NAMES = ("web-one", "web-two")


@pytest.fixture(scope="module")
def site(oidc_server: OidcServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A ``linkctl serve`` whose links redirect to its own callback; an admin key and a link key."""
    env = state_env(tmp_path_factory.mktemp("pages-store"))
    admin_key = create_key(env, "--admin", "--links", "*", "--name", "pages-admin")
    link_key = create_key(env, "--links", "web-*")
    with serve(env) as served:
        with open_store(env) as store:
            hosted_links(oidc_server, store, served.base_url, NAMES)
        yield {"served": served, "env": env, "admin": admin_key, "link_key": link_key}


def _admin(site: dict[str, Any]) -> Admin:
    return Admin(site["served"].base_url).logged_in(site["admin"])


def _check_headers(answer: Any) -> None:
    csp = answer.headers.get("content-security-policy", "")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
    assert answer.headers.get("x-content-type-options") == "nosniff"
    assert answer.headers.get("referrer-policy") == "no-referrer"


def test_security_headers_on_every_response(site: dict[str, Any]) -> None:
    served: Served = site["served"]
    anonymous = [
        ("GET", "/"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/links/web-one"),
        ("POST", "/links/web-one/refresh"),
        ("GET", "/oauth/callback/web-one"),
        ("GET", "/static/app.css"),
        ("GET", "/static/copy.js"),
        ("GET", "/no/such/page"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/links"),
        ("GET", "/v1/links/web-one/token"),
        ("DELETE", "/v1/links"),
    ]
    for method, path in anonymous:
        _check_headers(served.request(method, path))
    _check_headers(served.get("/v1/links", key=site["link_key"]))
    with _admin(site) as admin:
        for path in ("/", "/links/web-one", "/links/nope", "/logout", "/?status=bogus"):
            answer = admin.get(path)
            assert answer.status_code in (200, 400, 404), (path, answer.status_code)
            _check_headers(answer)
            assert "<script>" not in answer.text and " on" + "click=" not in answer.text
        # The link page allows its Authorize form to go on to the provider, and nowhere else.
        csp = admin.get("/links/web-one").headers["content-security-policy"]
        origin = re.match(r"https?://[^/]+", served.base_url)
        assert origin and "form-action 'self' http://127.0.0.1:" in csp


def test_every_page_but_login_and_callback_sends_a_visitor_to_login(site: dict[str, Any]) -> None:
    served: Served = site["served"]
    for method, path in [
        ("GET", "/"),
        ("GET", "/links/web-one"),
        ("GET", "/links/no-such-link"),
        ("GET", "/logout"),
        ("POST", "/links/web-one/authorize"),
        ("POST", "/links/web-one/refresh"),
        ("POST", "/links/web-one/revoke"),
    ]:
        answer = served.request(method, path, data={"csrf_token": "x"})
        assert answer.status_code == 303, (method, path, answer.status_code)
        assert answer.headers["location"].startswith("/login"), answer.headers["location"]
    assert served.get("/links/web-one").headers["location"] == "/login?next=%2Flinks%2Fweb-one"
    assert served.get("/login").status_code == 200
    assert served.get("/oauth/callback/web-one").status_code == 400  # no state: said so, not a redirect


def test_login_takes_an_admin_key_through_its_csrf_checked_form(site: dict[str, Any]) -> None:
    served: Served = site["served"]
    with Admin(served.base_url) as visitor:
        form = visitor.get("/login")
        cookie = form.headers["set-cookie"]
        assert "linkctl_login_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        token = csrf_of(form.text)
        # No token, a token from another form, a token without its cookie: 403, no session.
        for fields in ({"key": site["admin"]}, {"key": site["admin"], "csrf_token": token[:-2] + "xx"}):
            answer = visitor.post("/login", fields)
            assert answer.status_code == 403 and "linkctl_session" not in answer.headers.get("set-cookie", "")
        with Admin(served.base_url) as other:
            answer = other.post("/login", {"key": site["admin"], "csrf_token": token})
            assert answer.status_code == 403
        # Wrong key, link key: refused, with the reason, never the key on the page.
        for key, status, says in (
            ("lk_" + "A" * 43, 401, "not logged in"),
            (site["link_key"], 403, "admin"),
            ("", 401, "not logged in"),
        ):
            answer = visitor.post("/login", {"key": key, "csrf_token": csrf_of(visitor.get("/login").text)})
            assert answer.status_code == status and says in answer.text, answer.text
            assert site["link_key"] not in answer.text
        answer = visitor.login(site["admin"])
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("linkctl_session="))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # http://127.0.0.1: the Instance's baseUrl is not https
        page = visitor.get("/")
        assert page.status_code == 200 and "web-one" in page.text and site["admin"] not in page.text


def test_login_returns_to_the_page_asked_for_and_only_on_this_site(site: dict[str, Any]) -> None:
    for target, lands in (
        ("/links/web-two", "/links/web-two"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
    ):
        with Admin(site["served"].base_url) as visitor:
            form = visitor.get("/login", params={"next": target}).text
            sent_back = re.search(r'name="next" value="([^"]*)"', form)
            assert sent_back is not None
            fields = {"key": site["admin"], "csrf_token": csrf_of(form), "next": html.unescape(sent_back[1])}
            answer = visitor.post("/login", fields)
            assert answer.status_code == 303 and answer.headers["location"] == lands, target
        with Admin(site["served"].base_url) as visitor:  # a forged next in the form itself
            fields = {"key": site["admin"], "csrf_token": csrf_of(visitor.get("/login").text), "next": target}
            assert visitor.post("/login", fields).headers["location"] == lands


def test_logout_ends_the_session_everywhere(site: dict[str, Any]) -> None:
    admin = _admin(site)
    cookie = admin.http.cookies["linkctl_session"]
    assert admin.post("/logout", {}).status_code == 403  # no csrf_token: still logged in
    assert admin.get("/").status_code == 200
    answer = admin.post("/logout", {"csrf_token": admin.token("/")})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert admin.get("/").status_code == 303
    # The old cookie, replayed by anyone: the session is over in the store.
    replay = site["served"].get("/", cookies={"linkctl_session": cookie})
    assert replay.status_code == 303 and replay.headers["location"] == "/login"
    admin.close()


def test_an_expired_session_sends_back_to_login(site: dict[str, Any]) -> None:
    with open_store(site["env"]) as store:
        # A session made by the real log-in path nine hours ago (sessions last eight).
        cookie, _ = sessions.login(store, site["admin"], clock=lambda: time.time() - 9 * 3600)
    answer = site["served"].get("/", cookies={"linkctl_session": cookie.reveal()})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"


def test_a_post_without_this_sessions_csrf_token_is_refused(site: dict[str, Any]) -> None:
    admin, other = _admin(site), _admin(site)
    stolen = other.token("/")
    with open_store(site["env"]) as store:
        before = store.get_grant("web-one")
        events = len(store.list_events(link="web-one"))
    for button in ("authorize", "refresh", "revoke"):
        for fields in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}, {"csrf_token": stolen}):
            answer = admin.post(f"/links/web-one/{button}", fields)
            assert answer.status_code == 403, (button, fields, answer.status_code)
            assert "csrf_token" in answer.text and "nothing was changed" in answer.text
    assert admin.post("/logout", {"csrf_token": stolen}).status_code == 403
    with open_store(site["env"]) as store:
        assert store.get_grant("web-one") == before
        assert len(store.list_events(link="web-one")) == events
    # The right token goes through (Authorize: 303 to the provider).
    answer = admin.press("web-one", "authorize")
    assert answer.status_code == 303 and answer.headers["location"].startswith("http://127.0.0.1:")
    admin.close()
    other.close()


def test_the_list_filters_and_says_what_needs_attention(site: dict[str, Any]) -> None:
    with _admin(site) as admin:
        page = admin.get("/").text
        assert page.index("web-one") < page.index("web-two")
        assert page.count('class="attention status-needs_authorization"') == 2
        assert "needs authorization" in page and "managed in git" in page and "links/it.yaml:1" in page
        assert "web-one" not in admin.get("/?status=healthy").text.split("<tbody>")[-1]
        assert "web-two" in admin.get("/?provider=custom&status=needs_authorization").text
        bad = admin.get("/?status=bogus")
        assert bad.status_code == 400 and "choose one of" in bad.text
        assert admin.get("/?provider=nope").status_code == 400
        assert admin.get("/?page=2").status_code == 400
        assert admin.get("/?page=x").status_code == 400


def test_the_link_page_puts_the_redirect_url_first(site: dict[str, Any], tmp_path: Path) -> None:
    served: Served = site["served"]
    with _admin(site) as admin:
        page = admin.get("/links/web-one").text
        url = f"{served.base_url}/oauth/callback/web-one"
        assert page.index(url) < page.index("Scopes") < page.index("Recent events")
        assert 'data-copy="redirect-url"' in page and '<script src="/static/copy.js"' in page
        for action in ("authorize", "refresh", "revoke"):
            assert f'action="/links/web-one/{action}"' in page
        assert page.count('name="csrf_token"') == 4  # the three buttons and log-out
        missing = admin.get("/links/web-three")
        assert missing.status_code == 404 and "did you mean" in missing.text
