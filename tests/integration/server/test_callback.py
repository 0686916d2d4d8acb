"""The hosted OAuth callback against the real oidc-provider oracle, through a real ``linkctl serve``.

Authorize (a page's POST) answers 303 to the provider with a state bound to the admin's
session; the oracle's login and consent send the browser back to
``/oauth/callback/{name}``. The rightful callback stores the tokens through the path of
``linkctl authorize`` and returns to the link page; a missing state, a state from another
session, no session at all, a code for another link, a replayed state, a forged ``iss``
or a provider error is a 4xx page that says why — and stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.support.oracle import OidcServer
from tests.support.oracle_links import open_store, state_env
from tests.support.pages import Admin, hosted_links
from tests.support.server import Served, create_key, serve

NAMES = ("cb-one", "cb-two", "cb-iss", "cb-denied")


@pytest.fixture(scope="module")
def site(oidc_server: OidcServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A ``linkctl serve`` whose links redirect to its own callback, and an admin key."""
    env = state_env(tmp_path_factory.mktemp("callback-store"))
    admin_key = create_key(env, "--admin", "--links", "*")
    with serve(env) as served:
        with open_store(env) as store:
            hosted_links(oidc_server, store, served.base_url, NAMES)
        yield {"served": served, "env": env, "admin": admin_key, "oracle": oidc_server}


def _stored(site: dict[str, Any], name: str) -> tuple[bool, int, int]:
    """(has a refresh token, token version, grant.authorized events) of a link."""
    with open_store(site["env"]) as store:
        grant = store.get_grant(name)
        events = [e for e in store.list_events(link=name) if e.action == "grant.authorized"]
    assert grant is not None
    return grant.has_refresh_token, grant.token_version, len(events)


def _callback(site: dict[str, Any], admin: Admin, name: str) -> str:
    """Press Authorize, consent at the oracle; the path + query the provider sends the browser to."""
    started = admin.press(name, "authorize")
    assert started.status_code == 303, started.text
    final = site["oracle"].login_and_consent(started.headers["location"])
    parts = urlsplit(final)
    assert final.startswith(site["served"].base_url + f"/oauth/callback/{name}?"), final
    return f"{parts.path}?{parts.query}"


def _refused(answer: Any, status: int, *phrases: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    text = answer.text.replace("&#39;", "'")
    for phrase in phrases:
        assert phrase in text, (phrase, text[:1500])
    assert "code=" not in text and "state=" not in text  # never echoed


def test_abuse_is_refused_with_a_reason_and_stores_nothing(site: dict[str, Any]) -> None:
    served: Served = site["served"]
    nothing = _stored(site, "cb-one")
    assert nothing[0] is False and nothing[2] == 0
    with (
        Admin(served.base_url).logged_in(site["admin"]) as admin,
        Admin(served.base_url).logged_in(site["admin"]) as intruder,
    ):
        callback = _callback(site, admin, "cb-one")
        query = parse_qs(urlsplit(callback).query)
        assert set(query) >= {"code", "state", "iss"}  # the oracle announces RFC 9207 iss

        no_state = urlencode({"code": query["code"][0], "iss": query["iss"][0]})
        _refused(
            admin.get(f"/oauth/callback/cb-one?{no_state}"), 400, "carries no state", "nothing was stored"
        )
        _refused(served.get(callback), 403, "no admin session", "nothing was stored")
        _refused(intruder.get(callback), 400, "another browser session", "browser that started it")
        other_link = callback.replace("/oauth/callback/cb-one?", "/oauth/callback/cb-two?")
        _refused(admin.get(other_link), 400, "callback is for link 'cb-two'", "link 'cb-one'")
        assert _stored(site, "cb-one") == nothing and _stored(site, "cb-two")[2] == 0

        # The rightful callback (still possible after all that) stores the tokens once.
        done = admin.get(callback)
        assert done.status_code == 303 and done.headers["location"] == "/links/cb-one?done=authorized"
        page = admin.get(done.headers["location"])
        assert "Authorized" in page.text and 'id="status">healthy' in page.text
        authorized = _stored(site, "cb-one")
        assert authorized[0] is True and authorized[2] == 1

        _refused(admin.get(callback), 400, "already finished", "press Authorize")
        assert _stored(site, "cb-one") == authorized
        forged = callback.replace(query["state"][0], "not-a-state-we-made")
        _refused(admin.get(forged), 400, "no authorization was started with this state")
        assert _stored(site, "cb-one") == authorized
        with open_store(site["env"]) as store:
            [event] = [e for e in store.list_events(link="cb-one") if e.action == "grant.authorized"]
        assert event.actor.startswith("serve:key_")


def test_a_callback_from_another_issuer_is_refused(site: dict[str, Any]) -> None:
    with Admin(site["served"].base_url).logged_in(site["admin"]) as admin:
        callback = _callback(site, admin, "cb-iss")
        forged = callback.replace("iss=", "iss=https%3A%2F%2Fmix-up.example&was=")
        _refused(admin.get(forged), 400, "from issuer 'https://mix-up.example'", "Fix:")
        assert _stored(site, "cb-iss")[0] is False and _stored(site, "cb-iss")[2] == 0
        _refused(admin.get(callback), 400, "already finished")  # single use: the state is spent
        assert _stored(site, "cb-iss")[2] == 0


def test_a_provider_error_is_shown_with_its_fix(site: dict[str, Any]) -> None:
    served: Served = site["served"]
    oracle: OidcServer = site["oracle"]
    with Admin(served.base_url).logged_in(site["admin"]) as admin:
        started = admin.press("cb-denied", "authorize")
        state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
        denied = urlencode(
            {
                "error": "access_denied",
                "error_description": "End-User aborted",
                "state": state,
                "iss": oracle.issuer,
            }
        )
        answer = admin.get(f"/oauth/callback/cb-denied?{denied}")
        _refused(answer, 400, "refused the authorization: access_denied", "End-User aborted", "approve")
        assert 'action="/links/cb-denied/authorize"' in answer.text  # "Authorize again", with a csrf_token
        assert _stored(site, "cb-denied")[2] == 0


def test_refresh_now_goes_through_the_keepers_lease(site: dict[str, Any]) -> None:
    with Admin(site["served"].base_url).logged_in(site["admin"]) as admin:
        if not _stored(site, "cb-two")[0]:
            assert admin.get(_callback(site, admin, "cb-two")).status_code == 303
        _, version, _ = _stored(site, "cb-two")
        answer = admin.press("cb-two", "refresh")
        assert answer.status_code == 303 and answer.headers["location"] == "/links/cb-two?done=refreshed"
        assert _stored(site, "cb-two")[1] == version + 1  # one fenced token write
        assert "Tokens refreshed now." in admin.get(answer.headers["location"]).text
        with open_store(site["env"]) as store:
            grant = store.get_grant("cb-two")
        assert grant is not None and grant.lease_owner is None and grant.status == "healthy"


def test_one_server_starts_the_authorization_another_finishes_it(site: dict[str, Any]) -> None:
    # Two `serve` processes on one store: sessions and pending states live in the store.
    with serve(site["env"]) as replica, Admin(site["served"].base_url).logged_in(site["admin"]) as admin:
        with open_store(site["env"]) as store:
            hosted_links(site["oracle"], store, site["served"].base_url, ["cb-replica"])
        callback = _callback(site, admin, "cb-replica")
        # The same browser (cookies are per host, not per port) comes back through the replica.
        done = admin.http.get(replica.base_url + callback)
        assert done.status_code == 303 and done.headers["location"] == "/links/cb-replica?done=authorized"
        assert _stored(site, "cb-replica")[0] is True


def test_no_refresh_token_is_shown_with_its_fix_and_stores_nothing(site: dict[str, Any]) -> None:
    # Without offline_access the oracle issues no refresh token, and a 60 s access token:
    # a link that would stop within the hour is refused, as `linkctl authorize` refuses it.
    import dataclasses

    from tests.support.oracle_links import link_for

    with open_store(site["env"]) as store:
        registered = hosted_links(site["oracle"], store, site["served"].base_url, ["cb-offline"])
        link = store.get_link("cb-offline")
        assert link is not None
        spec = {**link.spec, "scopes": ["openid", "api:read"]}
        with store.write(expected_serial=None, actor="test") as tx:
            tx.put_link(dataclasses.replace(link_for(site["oracle"], registered, "cb-offline"), spec=spec))
    with Admin(site["served"].base_url).logged_in(site["admin"]) as admin:
        answer = admin.get(_callback(site, admin, "cb-offline"))
        _refused(answer, 400, "returned no refresh token", "offline_access", "Authorize again")
    has_refresh_token, _, authorized_events = _stored(site, "cb-offline")
    assert not has_refresh_token and authorized_events == 0


def test_an_https_base_url_makes_the_cookies_secure(
    oidc_server: OidcServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = state_env(tmp_path_factory.mktemp("secure-store"))
    with serve(env) as served:
        with open_store(env) as store:
            hosted_links(oidc_server, store, "https://linkctl.example", ["tls-one"])
        form = served.get("/login")
        assert "; Secure" in form.headers["set-cookie"] or "Secure;" in form.headers["set-cookie"]
        assert 'id="insecure"' in form.text  # reached over plain http: the page says why log-in would fail
