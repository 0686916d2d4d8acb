"""API keys and admin sessions as use cases: create/verify/revoke/expire, patterns, the key cache, log-in.

A key is shown once and stored as its SHA-256; verification refuses missing, malformed,
unknown, revoked and expired keys with distinct reasons; an admin key logs in to the
pages and a link key does not (and vice versa on the API, see tests/integration/server);
a session ends at logout, at expiry, and when its key is revoked.
"""

from __future__ import annotations

import pytest

from reconciler.errors import LinkctlError, UsageError
from reconciler.services import apikeys, sessions
from reconciler.services.apikeys import KeyCache, KeyRefused
from reconciler.store.base import Store
from tests.support.fakes import FakeClock


def _reason(call: object) -> str:
    with pytest.raises(KeyRefused) as caught:
        call()  # type: ignore[operator]
    return caught.value.reason


def test_create_verify_revoke_expire(store: Store) -> None:
    clock = FakeClock()
    record, key = apikeys.create(
        store, patterns=["ci-*,deploy", "ci-*"], label="ci", expires_days=2, clock=clock
    )
    assert key.reveal().startswith("lk_") and len(key.reveal()) == 46
    assert record.patterns == ("ci-*", "deploy")
    stored = store.get_api_key(record.id)
    assert stored is not None and stored.key_hash == apikeys.key_hash(key.reveal()) != key.reveal()
    assert all(key.reveal() not in str(v) for v in apikeys.list_views(store, clock=clock)[0].values())
    assert apikeys.verify(store, key.reveal(), clock=clock).id == record.id
    assert apikeys.allows(record, "ci-build") and apikeys.allows(record, "deploy")
    assert not apikeys.allows(record, "CI-build") and not apikeys.allows(record, "deploy-2")

    assert _reason(lambda: apikeys.verify(store, None, clock=clock)) == "missing"
    assert _reason(lambda: apikeys.verify(store, "lk_short", clock=clock)) == "unknown"
    assert _reason(lambda: apikeys.verify(store, apikeys.new_key().reveal(), clock=clock)) == "unknown"
    clock.advance(2 * 86400)
    assert _reason(lambda: apikeys.verify(store, key.reveal(), clock=clock)) == "expired"
    assert apikeys.list_views(store, clock=clock)[0]["state"] == "expired"

    other, other_key = apikeys.create(store, patterns=["*"], clock=clock)
    apikeys.revoke(store, other.id, clock=clock)
    assert _reason(lambda: apikeys.verify(store, other_key.reveal(), clock=clock)) == "revoked"
    with pytest.raises(LinkctlError, match="no API key"):
        apikeys.revoke(store, "key_ffffffffffffffff")
    with pytest.raises(UsageError):
        apikeys.revoke(store, "../etc")


@pytest.mark.parametrize("patterns", [[], [","], ["a b"], ["x/y"], ["é"]])
def test_bad_patterns_are_usage_errors(store: Store, patterns: list[str]) -> None:
    with pytest.raises(UsageError):
        apikeys.create(store, patterns=patterns)


def test_key_cache_rereads_after_its_ttl(store: Store) -> None:
    clock = FakeClock()
    record, key = apikeys.create(store, patterns=["*"], clock=clock)
    cache = KeyCache(ttl=1.0)
    assert cache.verify(store, key.reveal(), clock()).id == record.id
    store.revoke_api_key(record.id, now=clock())
    clock.advance(0.5)
    assert cache.verify(store, key.reveal(), clock()).id == record.id  # within the TTL: cached
    clock.advance(0.5)
    assert _reason(lambda: cache.verify(store, key.reveal(), clock())) == "revoked"


def test_admin_sessions(store: Store) -> None:
    clock = FakeClock()
    admin, admin_key = apikeys.create(store, patterns=["*"], admin=True, clock=clock)
    _, link_key = apikeys.create(store, patterns=["*"], clock=clock)
    refused = pytest.raises(KeyRefused)
    with refused as caught:
        sessions.login(store, link_key.reveal(), clock=clock)
    assert caught.value.status == 403 and caught.value.reason == "not_admin"
    assert _reason(lambda: sessions.login(store, "wrong", clock=clock)) == "unknown"

    cookie, session = sessions.login(store, admin_key.reveal(), ttl=3600, clock=clock)
    assert session.api_key.id == admin.id and session.expires_at == clock() + 3600
    assert store.get_session(sessions.session_hash(cookie.reveal())) is not None
    assert store.get_session(cookie.reveal()) is None  # only the hash is the row's key
    found = sessions.lookup(store, cookie.reveal(), clock=clock)
    assert found is not None and found.csrf_secret.reveal() == session.csrf_secret.reveal()
    assert sessions.lookup(store, "nope", clock=clock) is None
    assert sessions.lookup(store, None, clock=clock) is None

    clock.advance(3600)
    assert sessions.lookup(store, cookie.reveal(), clock=clock) is None  # expired

    cookie, _ = sessions.login(store, admin_key.reveal(), clock=clock)
    assert sessions.logout(store, cookie.reveal(), clock=clock) is True
    assert sessions.lookup(store, cookie.reveal(), clock=clock) is None
    assert sessions.logout(store, cookie.reveal(), clock=clock) is False

    cookie, _ = sessions.login(store, admin_key.reveal(), clock=clock)
    apikeys.revoke(store, admin.id, clock=clock)
    assert sessions.lookup(store, cookie.reveal(), clock=clock) is None  # the key's revocation ends it


def test_session_never_outlives_its_key(store: Store) -> None:
    clock = FakeClock()
    _, key = apikeys.create(store, patterns=["*"], admin=True, expires_days=1 / 24, clock=clock)
    _, session = sessions.login(store, key.reveal(), ttl=8 * 3600, clock=clock)
    assert session.expires_at == clock() + 3600
