"""The store contract: what every backend does, run against each backend of ``store_backend``.

Only the :class:`~reconciler.store.base.Store` interface and ``open_store`` by URL are used
here (no SQL, no file bytes); SQLite-only behaviour is in tests/unit/store/test_sqlite_only.py.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.errors import StalePlan, StateError
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store.base import Event, Store
from tests.support.stores import PYTHON, child_env, link

OpenStore = Callable[..., Store]


# -- declared state round trips ------------------------------------------------------------
def test_put_list_get_round_trip(store: Store) -> None:
    with store.write(expected_serial=0, actor="alice") as tx:
        stored = tx.put_link(link("b-link"))
        tx.put_link(link("a-link", client_id=None, secret=None))
    assert store.state_serial() == 1
    assert [lk.name for lk in store.list_links()] == ["a-link", "b-link"]
    got = store.get_link("b-link")
    assert got == stored
    assert got is not None
    assert got.generation == 1
    assert got.spec["clientSecret"] == {"$secret": "clientSecret"}
    assert got.secret_fingerprints == {"clientSecret": "fp-b-link"}
    assert got.source_file == "links/main.yaml" and got.source_line == 1
    assert got.managed_by == "linkctl" and got.deletion_policy == "delete"
    assert got.created_at == got.updated_at
    assert len(got.uid) == 32
    assert store.get_link("missing") is None
    assert store.read_secret("b-link", "clientSecret") == Secret("s3cret")
    assert store.read_secret("a-link", "clientSecret") is None
    assert store.read_secret("missing", "clientSecret") is None


def test_update_bumps_generation_and_keeps_uid_and_created_at(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        first = tx.put_link(link("x"))
    time.sleep(0.01)
    with store.write(expected_serial=1, actor="a") as tx:
        second = tx.put_link(dataclasses.replace(link("x", scopes=["write"]), deletion_policy="retain"))
    assert second.uid == first.uid
    assert second.generation == 2
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert store.get_link("x") == second
    assert store.get_link("x").spec["scopes"] == ["write"]  # type: ignore[union-attr]
    assert store.state_serial() == 2


def test_secret_update_and_removal(store: Store) -> None:
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("x", secret="one"))
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("x", secret="two"))
    assert store.read_secret("x", "clientSecret") == Secret("two")
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(dataclasses.replace(link("x", secret=None), secrets={"unrelated": None}))
    assert store.read_secret("x", "clientSecret") == Secret("two")  # absent from the mapping: kept
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(dataclasses.replace(link("x", secret=None), secrets={"clientSecret": None}))
    assert store.read_secret("x", "clientSecret") is None


def test_rename_keeps_uid_secrets_and_grant(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        old = tx.put_link(link("old", secret="keep-me"))
    with store.write(expected_serial=1, actor="a") as tx:
        tx.rename_link("old", "new")
    assert store.get_link("old") is None
    new = store.get_link("new")
    assert new is not None
    assert new.uid == old.uid
    assert new.generation == 2
    assert store.read_secret("new", "clientSecret") == Secret("keep-me")
    grant = store.get_grant("new")
    assert grant is not None and grant.link_uid == old.uid and grant.link_name == "new"


def test_rename_errors_roll_back(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("a"))
        tx.put_link(link("b"))
    with pytest.raises(StateError, match="already exists"), store.write(expected_serial=1, actor="a") as tx:
        tx.put_link(link("c"))
        tx.rename_link("a", "b")
    with pytest.raises(StateError, match="no such link"), store.write(expected_serial=1, actor="a") as tx:
        tx.rename_link("zzz", "y")
    assert [lk.name for lk in store.list_links()] == ["a", "b"]
    assert store.state_serial() == 1


# -- serials, staleness, atomicity ---------------------------------------------------------
def test_stale_plan_is_refused(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("x"))
    with pytest.raises(StalePlan) as info, store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("y"))
    assert str(info.value) == "the plan was computed against state serial 0 but the store is at 1"
    assert info.value.hint == "run `linkctl plan` again"
    assert store.get_link("y") is None
    assert store.state_serial() == 1
    with store.write(expected_serial=None, actor="a"):
        pass  # None skips the check; an empty write still counts as an apply
    assert store.state_serial() == 2


def test_exception_rolls_back_everything(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("keep", secret="v1"))
    before = (store.list_links(), store.list_grants(), store.list_events(), store.state_serial())

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.write(expected_serial=1, actor="a") as tx:
        tx.put_link(link("keep", secret="v2"))
        tx.put_link(link("new"))
        tx.rename_link("keep", "renamed")
        tx.add_event(Event(action="link.created", link="new", actor="a"))
        raise Boom
    assert (store.list_links(), store.list_grants(), store.list_events(), store.state_serial()) == before
    assert store.read_secret("keep", "clientSecret") == Secret("v1")
    # The transaction object is dead once its block ended.
    with pytest.raises(StateError, match="already ended"):
        tx.put_link(link("late"))
    # And the store is usable afterwards.
    with store.write(expected_serial=1, actor="a") as tx2:
        tx2.put_link(link("after"))
    assert store.state_serial() == 2


def test_nested_write_is_refused(store: Store) -> None:
    with pytest.raises(StateError, match="already open"), store.write(expected_serial=0, actor="a"):  # noqa: SIM117
        with store.write(expected_serial=0, actor="a"):
            pass
    assert store.state_serial() == 0


def test_two_stores_see_each_others_commits(open_: OpenStore) -> None:
    one, two = open_(), open_()
    with one.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("x"))
    assert two.state_serial() == 1
    assert two.get_link("x") is not None
    with pytest.raises(StalePlan), two.write(expected_serial=0, actor="b"):
        pass


RACE_SCRIPT = """
import os, sys, time
from pathlib import Path
from reconciler.errors import StalePlan
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite

store = open_store(Settings.from_env(os.environ))
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
try:
    with store.write(expected_serial=0, actor=sys.argv[2]) as tx:
        tx.put_link(LinkWrite(name=sys.argv[2], provider="custom", spec={}, spec_hash="h", secrets={},
                              secret_fingerprints={}, source_file=None, source_line=None))
        time.sleep(0.2)  # hold the write lock while the other process tries
except StalePlan:
    print("stale")
else:
    print("ok")
"""


def test_two_processes_racing_on_the_same_serial(
    open_: OpenStore, settings: Settings, tmp_path: Path
) -> None:
    open_().close()  # create store and key first
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", RACE_SCRIPT, str(go), name],
            env=child_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("racer-a", "racer-b")
    ]
    time.sleep(0.5)  # both are waiting for the go file
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    results = sorted(out.strip() for out, _ in outputs)
    assert results == ["ok", "stale"], outputs
    store = open_()
    assert store.state_serial() == 1
    assert len(store.list_links()) == 1


# -- grants --------------------------------------------------------------------------------
def test_new_links_get_a_grant_by_credentials(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("no-client", client_id=None))
        tx.put_link(link("null-client", client_id=None, clientId=None))
        tx.put_link(link("ready"))
    by_name = {g.link_name: g for g in store.list_grants()}
    assert by_name["no-client"].status == GrantStatus.PENDING_CREDENTIALS
    assert by_name["null-client"].status == GrantStatus.PENDING_CREDENTIALS
    assert by_name["ready"].status == GrantStatus.NEEDS_AUTHORIZATION
    assert all(g.token_version == 0 and not g.has_refresh_token for g in by_name.values())
    assert [g.link_name for g in store.list_grants()] == ["no-client", "null-client", "ready"]


def test_grants_can_be_listed_by_status(store: Store) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("b-ready"))
        tx.put_link(link("c-no-client", client_id=None))
        tx.put_link(link("a-ready"))
    waiting = store.list_grants_with_status([GrantStatus.NEEDS_AUTHORIZATION])
    assert [g.link_name for g in waiting] == ["a-ready", "b-ready"]  # by name, like list_grants
    assert all(g.access_token is None and g.refresh_token is None for g in waiting)
    both = store.list_grants_with_status({GrantStatus.PENDING_CREDENTIALS, GrantStatus.NEEDS_AUTHORIZATION})
    assert both == store.list_grants()
    assert store.list_grants_with_status([GrantStatus.HEALTHY]) == []
    assert store.list_grants_with_status([]) == []


# -- the state key -------------------------------------------------------------------------
def test_fingerprint_key_is_stable_and_not_the_state_key(open_: OpenStore, settings: Settings) -> None:
    first = open_().fingerprint_key()
    key = base64.b64decode(settings.state_key_file.read_text())
    assert len(first) == 32 and first != key
    assert open_().fingerprint_key() == first


def test_env_key_wins_and_no_key_file_is_created(
    open_: OpenStore, settings: Settings, notices: list[str]
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    store = open_(state_key=key)
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("x", secret="v"))
    assert not settings.state_key_file.exists()
    assert notices == []
    store.close()
    assert open_(state_key=key).read_secret("x", "clientSecret") == Secret("v")


# -- audit and caches ----------------------------------------------------------------------
def test_events_newest_first_filtered_and_limited(store: Store) -> None:
    with store.write(expected_serial=0, actor="apply") as tx:
        tx.put_link(link("a"))
        tx.add_event(Event(action="link.created", link="a", actor="", detail={"fields": ["spec"]}))
    store.add_event(Event(action="grant.refreshed", link="a", actor="keeper", at=123.0))
    store.add_event(Event(action="state.unlocked", link=None, actor="bob"))
    events = store.list_events()
    assert [e.action for e in events] == ["state.unlocked", "grant.refreshed", "link.created"]
    assert events[2].actor == "apply"  # the write's actor fills an empty one
    assert events[2].detail == {"fields": ["spec"]}
    assert events[1].at == 123.0
    assert all(e.id is not None for e in events)
    assert [e.action for e in store.list_events(link="a")] == ["grant.refreshed", "link.created"]
    assert len(store.list_events(limit=1)) == 1


def test_closed_store_refuses_use(open_: OpenStore) -> None:
    store = open_()
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.list_links()


# -- scale and refusals (speed is measured in bench/, not asserted here) -------------------
def test_ten_thousand_links_round_trip(store: Store) -> None:
    links = [link(f"link-{i:05d}", secret=f"secret-{i}") for i in range(10_000)]
    with store.write(expected_serial=0, actor="a") as tx:
        for lw in links:
            tx.put_link(lw)
    listed = store.list_links()
    assert [x.name for x in listed] == [lw.name for lw in links]
    assert store.read_secret("link-09999", "clientSecret") == Secret("secret-9999")


def test_a_secret_in_the_spec_is_refused_not_written(store: Store, settings: Settings) -> None:
    leaked = dataclasses.replace(link("x"), spec={"clientSecret": Secret("CANARY-in-spec")})
    with pytest.raises(StateError, match=r"secrets belong in LinkWrite\.secrets") as info:  # noqa: SIM117
        with store.write(expected_serial=0, actor="a") as tx:
            tx.put_link(leaked)
    assert "CANARY" not in str(info.value)
    assert store.state_serial() == 0 and store.list_links() == []


def test_opening_does_not_wait_for_a_running_write(open_: OpenStore) -> None:
    writer = open_()
    with writer.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("x"))
        started = time.monotonic()
        reader = open_()  # the write lock is held right now
        assert time.monotonic() - started < 4  # far below busy_timeout: it did not queue
        assert reader.state_serial() == 0  # and it sees the last committed state
    assert reader.state_serial() == 1


def test_provider_metadata_cache_round_trip(store: Store) -> None:
    issuer = "https://id.example.com"
    assert store.get_provider_metadata(issuer) is None
    store.put_provider_metadata(issuer, {"issuer": issuer, "a": 1}, fetched_at=5.0)
    store.put_provider_metadata(issuer, {"issuer": issuer, "a": 2}, fetched_at=9.0)
    assert store.get_provider_metadata(issuer) == ({"issuer": issuer, "a": 2}, 9.0)
