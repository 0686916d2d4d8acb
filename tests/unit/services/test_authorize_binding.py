"""services.authorize: a page-started authorization is bound to its session and link.

A callback from another session, naming another link, or finishing a CLI-started
authorization is refused before the state is taken: nothing is exchanged or stored,
and the rightful callback still finishes it.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.errors import AuthorizationStateError
from reconciler.services import authorize
from reconciler.store.base import LinkWrite, Store
from tests.unit.services.conftest import LINK_SPEC

MINE = "a" * 64
THEIRS = "b" * 64


def _start(store: Store, client: Any, *, session: str | None = MINE) -> authorize.StartedAuthorization:
    config = authorize.load_client_config(store, "crm")
    return authorize.start(store, client, config, clock=lambda: 1_000.0, session_hash=session)


def _finish(store: Store, client: Any, started: authorize.StartedAuthorization, **bind: Any) -> Any:
    callback = f"{started.redirect_uri}?code=c&state={started.state}"
    return authorize.finish(
        store, client, started.state, callback, actor="web", clock=lambda: 1_010.0, **bind
    )


def _no_tokens(store: Store, client: Any) -> None:
    grant = store.get_grant("crm")
    assert client.exchanges == [] and (grant is None or not grant.has_refresh_token)


def test_the_session_that_started_it_finishes_it(store: Store, client: Any) -> None:
    started = _start(store, client)
    config, _ = _finish(store, client, started, link="crm", session_hash=MINE)
    assert config.link == "crm" and len(client.exchanges) == 1


def test_another_session_is_refused_and_the_state_stays_usable(store: Store, client: Any) -> None:
    started = _start(store, client)
    with pytest.raises(AuthorizationStateError, match="another browser session") as info:
        _finish(store, client, started, link="crm", session_hash=THEIRS)
    assert info.value.hint and "browser that started it" in info.value.hint
    _no_tokens(store, client)
    _finish(store, client, started, link="crm", session_hash=MINE)  # still there for its owner
    assert len(client.exchanges) == 1


def test_a_callback_naming_another_link_is_refused(store: Store, client: Any) -> None:
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(
            LinkWrite(
                name="other",
                provider="custom",
                spec={**LINK_SPEC, "redirectUri": "https://linkctl.example/oauth/callback/other"},
                spec_hash="h2",
                secrets={},
                secret_fingerprints={},
                source_file="links/other.yaml",
                source_line=1,
            )
        )
    started = _start(store, client)
    with pytest.raises(AuthorizationStateError, match=r"callback is for link 'other'.*link 'crm'"):
        _finish(store, client, started, link="other", session_hash=MINE)
    _no_tokens(store, client)
    other = store.get_grant("other")
    assert other is None or not other.has_refresh_token


def test_a_cli_started_authorization_is_not_finished_by_the_server(store: Store, client: Any) -> None:
    started = _start(store, client, session=None)
    with pytest.raises(AuthorizationStateError, match="started with `linkctl authorize`") as info:
        _finish(store, client, started, link="crm", session_hash=MINE)
    assert info.value.hint and "terminal" in info.value.hint
    _no_tokens(store, client)
    _finish(store, client, started)  # the CLI's own finish still works
    assert len(client.exchanges) == 1


def test_a_replayed_state_is_refused_with_a_page_hint(store: Store, client: Any) -> None:
    started = _start(store, client)
    _finish(store, client, started, link="crm", session_hash=MINE)
    with pytest.raises(AuthorizationStateError, match="already finished") as info:
        _finish(store, client, started, link="crm", session_hash=MINE)
    assert info.value.hint and "press Authorize" in info.value.hint
    assert len(client.exchanges) == 1


def test_the_binding_is_persisted_for_any_replica(store: Store, client: Any) -> None:
    started = _start(store, client)
    pending = store.consume_pending_authorization(started.state, now=1_001.0, session_hash=THEIRS)
    assert pending is not None and pending.refused == "session" and pending.session_hash == MINE
    assert pending.code_verifier.reveal() == "" and not pending.consumed_before
