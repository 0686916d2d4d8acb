"""Invariant 4, by behaviour: the rotated refresh token is committed before the lease is released.

Whoever takes the lease next must send the refresh token the provider issued last.
The store below is the real SQLite store; after each call that can end a lease it lets
"another process" (a second store on the same file) take the lease at once, as a
competing keeper would, and records the refresh token that process would send. A lease
released before the commit lets it read the consumed token.
"""

from __future__ import annotations

import random
import time
from typing import Any, cast

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.secrets import Secret
from reconciler.store.base import Store
from tests.support.oracle import OidcServer
from tests.support.oracle_links import (
    add_authorized_links,
    introspect_active,
    open_store,
    state_env,
)

LEASE_ENDING = (
    "release_lease",
    "commit_tokens",
    "commit_tokens_many",
    "record_failure",
    "record_failures_many",
)


class NextHolderWatch:
    """Delegates to a real store; right after a lease may have ended, a rival takes it and looks."""

    def __init__(self, store: Store, rival: Store, names: list[str]) -> None:
        self._store = store
        self._rival = rival
        self._names = names
        self.seen: list[tuple[str, str, Secret | None]] = []  # (after which call, link, refresh token)

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._store, attr)
        if attr not in LEASE_ENDING:
            return target

        def watched(*args: Any, **kwargs: Any) -> Any:
            result = target(*args, **kwargs)
            for name in self._names:
                now = time.time() + 120  # the rival's clock is at least as far on as the keeper's
                taken = self._rival.acquire_lease(name, owner="rival", ttl=30, now=now)
                if taken is not None:
                    self.seen.append((attr, name, taken.refresh_token))
                    self._rival.release_lease(name, owner="rival")
            return result

        return watched


def _assert_next_holder_sends_the_newest_token(
    watch: NextHolderWatch,
    store: Store,
    names: list[str],
    old: dict[str, Secret],
    oracle: OidcServer,
    registered: Any,
) -> None:
    assert watch.seen, "no lease ended during the refresh: the watch saw nothing"
    for name in names:
        final = store.get_grant(name, with_tokens=True)
        assert final is not None and final.refresh_token is not None
        assert final.refresh_token != old[name], f"{name}: the rotated refresh token was not stored"
        assert introspect_active(oracle, registered, final.refresh_token)
        stale = [call for call, link, token in watch.seen if link == name and token != final.refresh_token]
        assert not stale, (
            f"{name}: a process that took the lease after {stale} read the consumed refresh token"
        )


def test_token_path_commits_the_rotated_refresh_token_before_releasing_the_lease(
    oracle: OidcServer, client: TokenClient, tmp_path: Any
) -> None:
    env = state_env(tmp_path)
    store, rival = open_store(env), open_store(env)
    registered = add_authorized_links(oracle, store, ["tok"], client)
    before = store.get_grant("tok", with_tokens=True)
    assert before is not None and before.refresh_token is not None
    watch = NextHolderWatch(store, rival, ["tok"])
    fresh = keeper.fresh_token(cast(Store, watch), "tok", min_valid=60, client=client)  # 60 s tokens
    assert fresh.access_token is not None and fresh.token_version > before.token_version
    _assert_next_holder_sends_the_newest_token(
        watch, store, ["tok"], {"tok": before.refresh_token}, oracle, registered
    )
    rival.close()
    store.close()


def test_batch_path_commits_the_rotated_refresh_tokens_before_releasing_the_leases(
    oracle: OidcServer, client: TokenClient, tmp_path: Any
) -> None:
    env = state_env(tmp_path)
    store, rival = open_store(env), open_store(env)
    names = ["b1", "b2"]
    registered = add_authorized_links(oracle, store, names, client)
    old = {}
    for name in names:
        grant = store.get_grant(name, with_tokens=True)
        assert grant is not None and grant.refresh_token is not None
        old[name] = grant.refresh_token
    watch = NextHolderWatch(store, rival, names)
    outcomes = keeper.refresh_batch(
        cast(Store, watch),
        client,
        names,
        owner=keeper.new_owner("keeper"),
        policy=keeper.KeeperPolicy(),
        clock=lambda: time.time() + 61,  # 60 s tokens: both are due
        rng=random.Random(1),
    )
    assert [o.result for o in outcomes] == [keeper.REFRESHED, keeper.REFRESHED]
    _assert_next_holder_sends_the_newest_token(watch, store, names, old, oracle, registered)
    rival.close()
    store.close()
