"""Status webhooks end to end: a grant revoked at the real oracle, a real HTTP receiver, real stores.

A healthy link whose refresh token the provider revoked turns ``needs_authorization`` in
the keeper; the notifier enqueues that change once and POSTs it signed (HMAC-SHA256 over
``timestamp.body``); a receiver that fails at first gets it again after backoff; one that
never recovers is given up with an audit event; two keeper processes announce a change once.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from reconciler import keeper
from reconciler.domain.grants import GrantStatus
from reconciler.domain.notify import NotifyTargetDecl, target_origin
from reconciler.oauth.client import TokenClient
from reconciler.oauth.webhook import WebhookSender
from reconciler.secrets import Secret
from reconciler.services.notify import Notifier, NotifyPolicy, verify
from reconciler.store.base import Store
from tests.support.fakes import FakeClock, add_links, link_write
from tests.support.oracle import OidcServer
from tests.support.oracle_links import (
    add_authorized_links,
    open_store,
    revoke_refresh_token,
    spawn,
    state_env,
)
from tests.support.webhooks import Receiver

KEY = "webhook-signing-key-for-tests-0001"


def _targets(store: Store, receiver: Receiver) -> None:
    decl = NotifyTargetDecl(url=Secret(receiver.url), secret=Secret(KEY), origin=target_origin(receiver.url))
    store.put_notify_targets([decl], actor="test", now=time.time())


class Offset:
    """Real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_a_grant_revoked_at_the_provider_is_announced_signed_once(
    oracle: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    registered = add_authorized_links(oracle, store, ["crm"], client)
    outcomes: list[str] = []
    with Receiver().running() as receiver, WebhookSender(timeout=5) as sender:
        _targets(store, receiver)
        clock = Offset()
        notifier = Notifier(store, sender, actor="test", clock=clock, observe=outcomes.append)
        assert notifier.detect() == []  # healthy is the baseline: nothing to tell
        grant = store.get_grant("crm", with_tokens=True)
        assert grant is not None and grant.refresh_token is not None
        revoke_refresh_token(oracle, registered, grant.refresh_token)
        clock.offset += 61  # the 60 s access token is due
        report = keeper.Keeper(store, client, clock=clock, rng=random.Random(1)).run_once()
        assert "crm" in report.failed
        assert store.get_grant("crm").status == GrantStatus.NEEDS_AUTHORIZATION  # type: ignore[union-attr]
        assert [c.new for c in notifier.detect()] == ["needs_authorization"]
        assert notifier.detect() == []
        assert notifier.deliver() == 1
        (post,) = receiver.wait_for(1)
    assert post.path == "/hooks/linkctl-secret-path"
    assert verify(
        KEY, post.headers["X-Linkctl-Timestamp"], post.body, post.headers["X-Linkctl-Signature"], now=clock()
    )
    assert not verify(
        "another-key-000000000000",
        post.headers["X-Linkctl-Timestamp"],
        post.body,
        post.headers["X-Linkctl-Signature"],
        now=clock(),
    )
    assert post.headers["X-Linkctl-Event"] == "link.status_changed"
    body = post.json
    assert body["id"] == post.headers["X-Linkctl-Delivery"]
    assert (body["link"], body["old_status"], body["new_status"]) == ("crm", "healthy", "needs_authorization")
    assert body["provider"] == "custom" and body["changed_at"].endswith("Z")
    assert "invalid_grant" in body["reason"] and "linkctl authorize crm" in body["fix"]
    assert registered.client_secret is not None
    for secret in (registered.client_secret.reveal(), grant.refresh_token.reveal(), KEY):
        assert secret not in post.body.decode()
    assert outcomes == ["delivered"]
    event = next(e for e in store.list_events(link="crm") if e.action == "notify.delivered")
    assert event.detail["target"] == target_origin(receiver.url) and "secret-path" not in json.dumps(
        event.detail
    )
    store.close()


def _changed_store(tmp_path: Path, receiver: Receiver) -> tuple[dict[str, str], Store, FakeClock]:
    env = state_env(tmp_path)
    store = open_store(env)
    clock = FakeClock(time.time())
    add_links(store, link_write("a"))
    _targets(store, receiver)
    Notifier(store, None, actor="t", clock=clock).detect()  # baseline: needs_authorization
    from tests.support.fakes import response

    store.save_authorization("a", response(at=clock()), clock_now=clock())
    return env, store, clock


def test_a_failing_receiver_gets_the_change_again_after_backoff(tmp_path: Path) -> None:
    outcomes: list[str] = []
    with Receiver(fail_first=2, retry_after="1").running() as receiver, WebhookSender(timeout=5) as sender:
        _, store, clock = _changed_store(tmp_path, receiver)
        policy = NotifyPolicy(retry_base=10, retry_cap=60, jitter=0)
        notifier = Notifier(store, sender, actor="t", clock=clock, policy=policy, observe=outcomes.append)
        assert [c.new for c in notifier.detect()] == ["healthy"]
        assert notifier.deliver() == 1
        assert notifier.deliver() == 0  # not due yet
        clock.advance(9)
        assert notifier.deliver() == 0
        clock.advance(1)  # 10 s: the first retry
        assert notifier.deliver() == 1
        clock.advance(19)
        assert notifier.deliver() == 0  # 20 s the second time
        clock.advance(1)
        assert notifier.deliver() == 1
        posts = receiver.wait_for(3)
    assert [p.answered for p in posts] == [503, 503, 204]
    assert len({p.json["id"] for p in posts}) == 1  # one change, delivered at least once, deduplicable
    assert len({p.headers["X-Linkctl-Timestamp"] for p in posts}) == 3  # signed at each send
    assert outcomes == ["retry", "retry", "delivered"]
    assert store.delivery_backlog() == 0
    store.close()


def test_a_receiver_that_never_recovers_is_given_up_visibly(tmp_path: Path) -> None:
    outcomes: list[str] = []
    with Receiver(fail_first=99, fail_status=500).running() as receiver, WebhookSender(timeout=5) as sender:
        _, store, clock = _changed_store(tmp_path, receiver)
        policy = NotifyPolicy(retry_base=1, retry_cap=1, jitter=0, max_attempts=3)
        notifier = Notifier(store, sender, actor="t", clock=clock, policy=policy, observe=outcomes.append)
        notifier.detect()
        for _ in range(3):
            assert notifier.deliver() == 1
            clock.advance(1)
        assert notifier.deliver() == 0
        receiver.wait_for(3)
    assert outcomes == ["retry", "retry", "given_up"]
    assert store.delivery_backlog() == 0
    event = store.list_events(link="a")[0]
    assert event.action == "notify.given_up"
    assert event.detail["attempts"] == 3 and "HTTP 500" in str(event.detail["error"])
    assert "secret-path" not in json.dumps(event.detail)
    store.close()


def test_two_keeper_processes_announce_a_change_once(tmp_path: Path) -> None:
    with Receiver().running() as receiver:
        env, store, _ = _changed_store(tmp_path, receiver)
        env["LINKCTL_NOTIFY_INTERVAL"] = "0.1"
        keepers = [spawn(env, "keeper", "--poll-interval", "0.2") for _ in range(2)]
        try:
            receiver.wait_for(1)
            time.sleep(1.0)  # both notifiers have looked several times meanwhile
        finally:
            for process in keepers:
                process.terminate()
            outputs = [process.communicate(timeout=20) for process in keepers]
        assert [p.returncode for p in keepers] == [0, 0], outputs
        assert len(receiver.received) == 1
        assert receiver.received[0].json["new_status"] == "healthy"
    assert store.delivery_backlog() == 0
    store.close()
