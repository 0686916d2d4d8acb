"""Wake-ups of an idle keeper on PostgreSQL (LISTEN/NOTIFY), and polling as the source of truth.

A keeper with nothing scheduled sleeps ``--poll-interval`` (here 60 s). A new authorization
(stored by another process's store) sends a NOTIFY: the keeper looks again at once, sees the
new link due in 2.25 s (a 3 s token at the oracle) and refreshes it then, not a minute
later. Then the server ends the keeper's LISTEN session (``pg_terminate_backend``): the
listener reconnects with backoff and looks again, so the next authorization is kept fresh
too (a lost notification would only have delayed it to the next poll).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.store.base import Store
from tests.support.cluster import authorized_links, open_env_store
from tests.support.oracle import OidcServer
from tests.support.oracle_links import state_env

POLL = 60.0
LISTEN_SQL = (
    "SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN linkctl_work' AND pid <> pg_backend_pid()"
)


def _listeners(url: str) -> set[int]:
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        return {row[0] for row in conn.execute(LISTEN_SQL)}


def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def running_keeper(state_url: Callable[[str], str], tmp_path: Path) -> Iterator[tuple[dict[str, str], Store]]:
    """A keeper (in a thread of this process) polling every 60 s on a fresh PostgreSQL store."""
    env = {**state_env(tmp_path), "LINKCTL_STATE": state_url("postgresql")}
    store = open_env_store(env)
    client = TokenClient(timeout=5)
    runner = keeper.Keeper(
        store,
        client,
        store_factory=lambda: open_env_store(env),
        workers=2,
        policy=keeper.KeeperPolicy(poll_interval=POLL, lease_ttl=12, http_timeout=4),
        rng=random.Random(3),
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield env, store
    finally:
        stop.set()
        thread.join(timeout=30)
        client.close()
        store.close()


def test_a_new_authorization_wakes_an_idle_keeper_and_a_dropped_listen_only_reconnects(
    short_ttl_oracle: OidcServer, running_keeper: tuple[dict[str, str], Store]
) -> None:
    env, _ = running_keeper
    url = env["LINKCTL_STATE"]
    _wait_for(lambda: bool(_listeners(url)), 10)
    time.sleep(0.5)  # the keeper has looked (nothing scheduled) and sleeps for POLL seconds
    other = open_env_store(env)  # "another machine": its own store and pool
    try:
        with TokenClient(timeout=5) as client:
            authorized_links(short_ttl_oracle, other, ["wake-a"], client)
            first = _wait_for(lambda: _version(other, "wake-a") >= 2, 15)
            # The server ends the LISTEN session; the listener reconnects and looks again.
            before = _listeners(url)
            with psycopg.connect(url.split("?")[0], autocommit=True) as admin:
                for pid in before:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            _wait_for(lambda: bool(_listeners(url) - before), 20)
            time.sleep(0.5)
            authorized_links(short_ttl_oracle, other, ["wake-b"], client)
            second = _wait_for(lambda: _version(other, "wake-b") >= 2, 15)
    finally:
        other.close()
    print(f"WAKE-UPS refreshed after {first:.1f} s, after a dropped LISTEN {second:.1f} s (poll {POLL:g} s)")
    assert first < POLL / 4 and second < POLL / 4


def _version(store: Store, name: str) -> int:
    grant = store.get_grant(name)
    return 0 if grant is None else grant.token_version
