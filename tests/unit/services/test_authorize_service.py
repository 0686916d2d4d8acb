"""services.authorize: start persists the pending state, finish consumes it exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.errors import AuthorizationStateError, ProviderError
from reconciler.oauth import flows
from reconciler.services import authorize
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import Store
from reconciler.store.sqlite import sqlite_path


def _start(store: Store, client: Any, *, now: float = 1_000.0) -> authorize.StartedAuthorization:
    config = authorize.load_client_config(store, "crm")
    return authorize.start(store, client, config, clock=lambda: now)


def _callback(started: authorize.StartedAuthorization, code: str = "code-1") -> str:
    return f"{started.redirect_uri}?code={code}&state={started.state}"


def _finish(store: Store, client: Any, state: str, callback: str, *, now: float = 1_010.0) -> Any:
    return authorize.finish(store, client, state, callback, actor="alice@host", clock=lambda: now)


def test_start_persists_and_finish_exchanges_with_the_sealed_verifier(store: Store, client: Any) -> None:
    started = _start(store, client)
    query = parse_qs(urlsplit(started.url).query)
    assert query["state"] == [started.state] and started.expires_at == 1_000.0 + authorize.PENDING_TTL
    config, response = _finish(store, client, started.state, _callback(started))
    assert config.link == "crm" and response.refresh_token is not None
    [exchange] = client.exchanges
    assert flows.pkce_challenge(exchange["code_verifier"]) == query["code_challenge"][0]
    assert exchange["redirect_uri"] == started.redirect_uri and exchange["code"] == "code-1"
    grant = store.get_grant("crm", with_tokens=True)
    assert grant is not None and grant.access_token is not None
    assert grant.access_token.reveal() == "access-canary"
    [event] = [e for e in store.list_events(link="crm") if e.action == "grant.authorized"]
    assert event.actor == "alice@host" and event.detail["refresh_token"] is True


def test_a_second_finish_with_the_same_state_fails_cleanly(store: Store, client: Any) -> None:
    started = _start(store, client)
    _finish(store, client, started.state, _callback(started))
    with pytest.raises(AuthorizationStateError, match="already finished") as info:
        _finish(store, client, started.state, _callback(started, "code-2"))
    assert info.value.hint and "linkctl authorize crm" in info.value.hint
    assert len(client.exchanges) == 1


def test_unknown_state_is_a_clear_error(store: Store, client: Any) -> None:
    _start(store, client)
    with pytest.raises(AuthorizationStateError, match="no authorization was started"):
        _finish(store, client, "not-a-state", "https://linkctl.example/callback/crm?code=x&state=not-a-state")
    assert client.exchanges == []


def test_an_expired_authorization_cannot_be_finished(store: Store, client: Any) -> None:
    started = _start(store, client, now=1_000.0)
    late = 1_000.0 + authorize.PENDING_TTL
    with pytest.raises(AuthorizationStateError, match="expired"):
        _finish(store, client, started.state, _callback(started), now=late)
    assert client.exchanges == []
    with pytest.raises(AuthorizationStateError, match="already finished"):  # still single use
        _finish(store, client, started.state, _callback(started), now=1_001.0)


def test_a_longer_expiry_covers_a_longer_wait(store: Store, client: Any) -> None:
    # `linkctl authorize --timeout 1200` waits 20 minutes: its pending state must outlive that.
    config = authorize.load_client_config(store, "crm")
    started = authorize.start(store, client, config, clock=lambda: 1_000.0, ttl=1_260.0)
    _finish(store, client, started.state, _callback(started), now=1_000.0 + 1_200.0)
    assert len(client.exchanges) == 1


def test_a_finished_authorization_keeps_no_verifier(store: Store, client: Any) -> None:
    started = _start(store, client)
    _finish(store, client, started.state, _callback(started))
    taken_again = store.consume_pending_authorization(started.state, now=1_001.0)
    assert taken_again is not None and taken_again.consumed_before
    assert taken_again.code_verifier.reveal() == ""


def test_expired_rows_are_dropped_when_the_next_authorization_starts(store: Store, client: Any) -> None:
    old = _start(store, client, now=1_000.0)
    _start(store, client, now=1_000.0 + authorize.PENDING_TTL + 1)
    with pytest.raises(AuthorizationStateError, match="no authorization was started"):
        _finish(store, client, old.state, _callback(old))


def test_another_process_finishes_what_one_started(
    open_: Callable[[], Store], store: Store, client: Any
) -> None:
    started = _start(store, client)
    replica = open_()  # a second connection to the same file, as a server replica would hold
    config, _ = _finish(replica, client, started.state, _callback(started))
    assert config.link == "crm"
    grant = store.get_grant("crm")
    assert grant is not None and grant.has_refresh_token


def test_concurrent_finishes_consume_the_state_once(store: Store, client: Any, settings: Settings) -> None:
    started = _start(store, client)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def finish() -> None:
        with open_store(settings, notice=lambda _: None) as replica:  # one connection per thread
            barrier.wait()
            try:
                _finish(replica, client, started.state, _callback(started))
                results.append("ok")
            except AuthorizationStateError:
                results.append("refused")

    threads = [threading.Thread(target=finish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
    assert len(client.exchanges) == 1


def test_a_callback_for_another_state_is_refused_as_before(store: Store, client: Any) -> None:
    started = _start(store, client)
    with pytest.raises(ProviderError, match="state does not match"):
        _finish(store, client, started.state, f"{started.redirect_uri}?code=c&state=forged")
    assert client.exchanges == []


def test_deleting_the_link_drops_its_pending_authorization(store: Store, client: Any) -> None:
    started = _start(store, client)
    with store.write(expected_serial=None, actor="test") as tx:
        tx.delete_link("crm")
    with pytest.raises(AuthorizationStateError, match="no authorization was started"):
        _finish(store, client, started.state, _callback(started))


def test_neither_verifier_nor_state_is_in_the_store_files(
    store: Store, client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[flows.AuthorizationRequest] = []
    build = flows.build_authorization_request

    def spy(*args: Any, **kwargs: Any) -> flows.AuthorizationRequest:
        seen.append(build(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(flows, "build_authorization_request", spy)
    started = _start(store, client)
    [request] = seen
    verifier = request.pkce.verifier.reveal()
    path = sqlite_path(settings.state_url)
    data = b"".join(p.read_bytes() for p in sorted(Path(path).parent.glob(path.name + "*")))
    assert data, "the store files are empty"
    assert verifier.encode() not in data
    assert started.state.encode() not in data
    assert b"client-secret-canary" not in data
