"""Tests of the SQLite store against real files: round trips, serials, atomicity, sealing, keys, schema."""

from __future__ import annotations

import base64
import dataclasses
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from store_helpers import PYTHON, child_env, db_path, file_digest, link

from reconciler.errors import StalePlan, StateError, StoreNotReady
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import grants, open_store
from reconciler.store.base import Event, Store
from reconciler.store.sqlite import SQLiteStore, load_migrations, split_statements, sqlite_path

OpenStore = Callable[..., Store]


def raw(settings: Settings) -> sqlite3.Connection:
    """A plain connection to the store file, for white-box checks and tampering."""
    return sqlite3.connect(db_path(settings), isolation_level=None)


# -- opening, files and schema -----------------------------------------------------------
def test_new_store_files_are_private_and_the_key_is_announced(
    store: Store, settings: Settings, notices: list[str]
) -> None:
    path = db_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    key_file = settings.state_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert notices == [
        f"created state encryption key at {key_file}; back it up: without it stored secrets cannot be read"
    ]
    key_text = key_file.read_text().strip()
    assert all(key_text not in n for n in notices)
    assert store.state_serial() == 0
    assert store.list_links() == []
    assert store.url == settings.state_url


def test_reopen_is_idempotent_and_silent(open_: OpenStore, settings: Settings, notices: list[str]) -> None:
    open_().close()
    with raw(settings) as conn:
        schema_before = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    notices.clear()
    for _ in range(3):
        open_().close()
    assert notices == []
    with raw(settings) as conn:
        assert (
            conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
            == schema_before
        )
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == len(load_migrations())
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "links", "secrets", "grants", "events", "locks", "provider_metadata"} <= tables


def test_pragmas(store: Store) -> None:
    assert isinstance(store, SQLiteStore)
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert conn.isolation_level is None


def test_newer_schema_is_refused_and_left_untouched(open_: OpenStore, settings: Settings) -> None:
    open_().close()
    with raw(settings) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    before = file_digest(db_path(settings))
    with pytest.raises(
        StateError,
        match=rf"schema version 99, newer than this linkctl understands \({len(load_migrations())}\)",
    ) as info:
        open_()
    assert info.value.hint and "upgrade linkctl" in info.value.hint
    assert file_digest(db_path(settings)) == before


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


def test_opening_without_writing_refuses_whatever_needs_a_write(open_: OpenStore, settings: Settings) -> None:
    with pytest.raises(StoreNotReady):
        open_store(settings, create=False)
    assert not db_path(settings).exists() and not settings.state_key_file.exists()

    # Not a store (yet): an empty file, another program's SQLite file. Opening normally would
    # switch them to WAL journaling; opening without writing must leave their bytes alone.
    path = db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    open_store(settings, notice=lambda _: None).close()  # makes the key file
    for make in (lambda: path.write_bytes(b""), lambda: _foreign_sqlite(path)):
        path.unlink()
        make()
        before = file_digest(path)
        with pytest.raises(StoreNotReady):
            open_store(settings, create=False)
        assert file_digest(path) == before
        assert not path.with_name(path.name + "-wal").exists()
    path.unlink()

    created = open_()
    ready = open_store(settings, create=False)
    assert ready.state_serial() == created.state_serial() == 0
    ready.close()

    for tamper, repair in (
        # a schema this linkctl does not have (an older one would be migrated by a normal open)
        (
            "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
            f"UPDATE meta SET value = {len(load_migrations())} WHERE key = 'schema_version'",
        ),
        ("DELETE FROM meta WHERE key = 'key_check'", None),  # the key check is not written yet
    ):
        with raw(settings) as conn:
            conn.execute(tamper)
        before = file_digest(db_path(settings))
        with pytest.raises(StoreNotReady):
            open_store(settings, create=False)
        assert file_digest(db_path(settings)) == before
        if repair:
            with raw(settings) as conn:
                conn.execute(repair)
        open_().close()  # a normal open is fine again (and writes the key check)
        open_store(settings, create=False).close()


def test_migration_script_splitting_handles_triggers_and_comments() -> None:
    sql = (
        "-- a; comment\nCREATE TABLE t (x);\n"
        "CREATE TRIGGER g BEFORE UPDATE ON t BEGIN SELECT 1; END;\n-- end\n"
    )
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(StateError, match="incomplete"):
        split_statements("CREATE TABLE t (x)")
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "0001_initial.sql"


def test_not_a_database_is_a_clear_error(open_: OpenStore, settings: Settings) -> None:
    path = db_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match=r"cannot (open|read) the store"):
        open_()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://user:pw@db/linkctl", "PostgreSQL state stores are not supported yet"),
        ("postgres://db/linkctl", "not supported yet"),
        ("mysql://db/x", r"unsupported state URL \(mysql://…\)"),
        ("/var/lib/state.db", "unsupported state URL"),
        ("sqlite://relative.db", "not a SQLite state URL"),
        ("sqlite:///tmp/dir/", "names a directory"),
    ],
)
def test_state_url_errors(settings: Settings, url: str, message: str) -> None:
    with pytest.raises(StateError, match=message) as info:
        open_store(dataclasses.replace(settings, state_url=url))
    assert "pw" not in str(info.value) + (info.value.hint or "")
    assert info.value.hint


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


def test_delete_cascades_to_secrets_and_grant(store: Store, settings: Settings) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        uid = tx.put_link(link("gone")).uid
        tx.put_link(link("stays"))
    with store.write(expected_serial=1, actor="a") as tx:
        tx.delete_link("gone")
    assert store.get_link("gone") is None
    assert store.get_grant("gone") is None
    assert [g.link_name for g in store.list_grants()] == ["stays"]
    with raw(settings) as conn:
        assert conn.execute("SELECT count(*) FROM secrets WHERE link_uid = ?", (uid,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM grants WHERE link_uid = ?", (uid,)).fetchone()[0] == 0
    with pytest.raises(StateError, match="no such link"), store.write(expected_serial=2, actor="a") as tx:
        tx.delete_link("gone")
    assert store.state_serial() == 2


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
    assert by_name["no-client"].status == grants.PENDING_CREDENTIALS
    assert by_name["null-client"].status == grants.PENDING_CREDENTIALS
    assert by_name["ready"].status == grants.NEEDS_AUTHORIZATION
    assert all(g.token_version == 0 and not g.has_refresh_token for g in by_name.values())
    assert [g.link_name for g in store.list_grants()] == ["no-client", "null-client", "ready"]


def test_update_promotes_pending_grant_but_never_touches_tokens(store: Store) -> None:
    assert isinstance(store, SQLiteStore)
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("p", client_id=None))
        uid = tx.put_link(link("h")).uid
    # Simulate an authorized link (the OAuth flow's write, done here by hand).
    with store._immediate() as conn:
        conn.execute(
            "UPDATE grants SET status = ?, token_version = 3, access_token = ?, refresh_token = ?"
            " WHERE link_uid = ?",
            (
                grants.HEALTHY,
                store._seal_token(uid, "access_token", Secret("AT")),
                store._seal_token(uid, "refresh_token", Secret("RT")),
                uid,
            ),
        )
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("p"))  # now has a clientId
        tx.put_link(link("h", client_id="new-client"))
    assert store.get_grant("p").status == grants.NEEDS_AUTHORIZATION  # type: ignore[union-attr]
    h = store.get_grant("h", with_tokens=True)
    assert h is not None
    assert (h.status, h.token_version, h.has_refresh_token) == (grants.HEALTHY, 3, True)
    assert h.access_token == Secret("AT") and h.refresh_token == Secret("RT")
    without = store.get_grant("h")
    assert without is not None and without.access_token is None and without.refresh_token is None
    assert without.has_refresh_token
    # Removing the clientId again does not demote an existing grant either.
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("p", client_id=None))
    assert store.get_grant("p").status == grants.NEEDS_AUTHORIZATION  # type: ignore[union-attr]


def test_token_copied_to_another_link_fails_to_open(store: Store) -> None:
    assert isinstance(store, SQLiteStore)
    with store.write(expected_serial=None, actor="a") as tx:
        a = tx.put_link(link("a")).uid
        tx.put_link(link("b"))
    with store._immediate() as conn:
        conn.execute(
            "UPDATE grants SET refresh_token = ? WHERE link_uid = (SELECT uid FROM links WHERE name = 'b')",
            (store._seal_token(a, "refresh_token", Secret("RT")),),
        )
    with pytest.raises(StateError):
        store.get_grant("b", with_tokens=True)
    assert store.get_grant("b") is not None  # without tokens it still reads


# -- secrets at rest -----------------------------------------------------------------------
def test_secrets_are_not_in_the_files_in_plaintext(open_: OpenStore, settings: Settings) -> None:
    canary = "CANARY-" + os.urandom(8).hex()
    store = open_()
    assert isinstance(store, SQLiteStore)
    with store.write(expected_serial=0, actor="a") as tx:
        uid = tx.put_link(link("x", secret=canary)).uid
        tx.add_event(Event(action="link.created", link="x", actor="a", detail={"oops": Secret(canary)}))
    with store._immediate() as conn:
        conn.execute(
            "UPDATE grants SET access_token = ? WHERE link_uid = ?",
            (store._seal_token(uid, "access_token", Secret(canary + "-token")), uid),
        )
    path = db_path(settings)
    wal = path.with_name(path.name + "-wal")
    assert wal.exists()  # the commit is (at least) in the WAL right now
    needles = [canary.encode(), canary.encode("utf-16-le"), base64.b64encode(canary.encode())]
    for f in (path, wal):
        data = f.read_bytes()
        assert all(n not in data for n in needles), f
    assert store.read_secret("x", "clientSecret") == Secret(canary)
    assert store.list_events()[0].detail == {"oops": "***"}
    store.close()  # checkpoint into the main file; still nothing
    assert canary.encode() not in path.read_bytes()


@pytest.mark.parametrize("target", ["other-link", "other-field"])
def test_secret_copied_elsewhere_fails_to_open(store: Store, settings: Settings, target: str) -> None:
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("a", secret="secret-a"))
        tx.put_link(link("b", secret="secret-b"))
    with raw(settings) as conn:
        uid_a = conn.execute("SELECT uid FROM links WHERE name = 'a'").fetchone()[0]
        uid_b = conn.execute("SELECT uid FROM links WHERE name = 'b'").fetchone()[0]
        blob = conn.execute("SELECT ciphertext FROM secrets WHERE link_uid = ?", (uid_a,)).fetchone()[0]
        if target == "other-link":
            conn.execute("UPDATE secrets SET ciphertext = ? WHERE link_uid = ?", (blob, uid_b))
            name, field = "b", "clientSecret"
        else:
            conn.execute("INSERT INTO secrets VALUES (?, 'otherField', ?)", (uid_a, blob))
            name, field = "a", "otherField"
    with pytest.raises(StateError, match="cannot be decrypted") as info:
        store.read_secret(name, field)
    assert "secret-a" not in str(info.value) + (info.value.hint or "")
    assert store.read_secret("a", "clientSecret") == Secret("secret-a")


def test_fingerprint_key_is_stable_and_not_the_state_key(open_: OpenStore, settings: Settings) -> None:
    first = open_().fingerprint_key()
    key = base64.b64decode(settings.state_key_file.read_text())
    assert len(first) == 32 and first != key
    assert open_().fingerprint_key() == first


# -- the state key -------------------------------------------------------------------------
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


def test_wrong_key_is_refused_and_the_store_untouched(open_: OpenStore, settings: Settings) -> None:
    store = open_()
    with store.write(expected_serial=0, actor="a") as tx:
        tx.put_link(link("x", secret="v"))
    store.close()
    before = file_digest(db_path(settings))
    wrong = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(StateError) as info:
        open_(state_key=wrong)
    message = str(info.value)
    assert message.startswith("the state key does not match this store (")
    assert "$LINKCTL_STATE_KEY" in message
    assert info.value.hint and "re-key" in info.value.hint
    right = settings.state_key_file.read_text().strip()
    for text in (message, info.value.hint):
        assert wrong not in text and right not in text
    assert file_digest(db_path(settings)) == before
    # A wrong key file is refused the same way.
    other = settings.state_key_file.with_name("other.key")
    other.write_text(wrong + "\n")
    with pytest.raises(StateError, match="does not match"):
        open_(state_key_file=other)
    assert file_digest(db_path(settings)) == before
    assert open_().read_secret("x", "clientSecret") == Secret("v")


def test_missing_key_for_an_existing_store(open_: OpenStore, settings: Settings, notices: list[str]) -> None:
    open_().close()
    before = file_digest(db_path(settings))
    saved = settings.state_key_file.read_bytes()
    settings.state_key_file.unlink()
    notices.clear()
    with pytest.raises(StateError, match=r"none was found") as info:
        open_()
    assert str(settings.state_key_file) in str(info.value)
    assert "LINKCTL_STATE_KEY" in str(info.value)
    assert info.value.hint and "backup" in info.value.hint
    assert not settings.state_key_file.exists()  # never silently re-keyed
    assert notices == []
    assert file_digest(db_path(settings)) == before
    settings.state_key_file.write_bytes(saved)
    open_().close()


@pytest.mark.parametrize("bad", ["abc", base64.b64encode(b"x" * 31).decode(), "!!!!" * 11])
def test_malformed_key_is_a_clear_error(
    open_: OpenStore, settings: Settings, bad: str, notices: list[str]
) -> None:
    open_().close()
    before = file_digest(db_path(settings))
    with pytest.raises(StateError, match="state key in \\$LINKCTL_STATE_KEY") as info:
        open_(state_key=bad)
    assert bad not in str(info.value) + (info.value.hint or "")
    settings.state_key_file.write_text(bad + "\n")
    with pytest.raises(StateError, match=f"state key in the key file {settings.state_key_file}"):
        open_()
    assert file_digest(db_path(settings)) == before


def test_malformed_key_before_anything_is_created(open_: OpenStore, settings: Settings) -> None:
    with pytest.raises(StateError):
        open_(state_key="abc")
    assert not db_path(settings).exists()
    assert not settings.state_key_file.exists()


# -- audit ---------------------------------------------------------------------------------
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


def test_events_are_append_only(store: Store, settings: Settings) -> None:
    store.add_event(Event(action="x", link=None, actor="a"))
    with raw(settings) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE events SET action = 'y'")


def test_closed_store_refuses_use(open_: OpenStore) -> None:
    store = open_()
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.list_links()


# -- scale (speed is measured in bench/, not asserted here) ---------------------------------
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


def test_files_readable_by_others_are_reported(
    open_: OpenStore, settings: Settings, notices: list[str]
) -> None:
    open_().close()
    notices.clear()
    settings.state_key_file.chmod(0o644)
    db_path(settings).chmod(0o640)
    open_().close()
    assert len(notices) == 2
    assert (
        f"the state key file {settings.state_key_file} is accessible by other users (mode 0644)" in notices[0]
    )
    assert "chmod 600" in notices[1] and str(db_path(settings)) in notices[1]
    key_text = settings.state_key_file.read_text().strip()
    assert all(key_text not in n for n in notices)


@pytest.mark.parametrize("which", ["key", "store"])
@pytest.mark.parametrize("read_only", [False, True], ids=["open", "read-only"])
def test_files_others_can_replace_are_refused(
    open_: OpenStore, settings: Settings, which: str, read_only: bool
) -> None:
    open_().close()
    path = settings.state_key_file if which == "key" else db_path(settings)
    for mode in (0o620, 0o602, 0o666):
        path.chmod(mode)
        before = file_digest(db_path(settings))
        with pytest.raises(StateError, match="is writable by other users") as info:
            open_store(settings, notice=lambda _: None, read_only=read_only)
        assert str(path) in str(info.value) and "chmod 600" in (info.value.hint or "")
        assert file_digest(db_path(settings)) == before
    path.chmod(0o600)
    if os.geteuid() == 0:  # only root can give a file away; elsewhere the owner rule is untestable
        os.chown(path, 54321, -1)
        with pytest.raises(StateError, match="is owned by another user"):
            open_store(settings, notice=lambda _: None, read_only=read_only)
        os.chown(path, 0, -1)
    open_store(settings, notice=lambda _: None, read_only=read_only).close()


def test_new_files_are_private_whatever_the_umask(settings: Settings) -> None:
    old = os.umask(0)
    try:
        open_store(settings, notice=lambda _: None).close()
    finally:
        os.umask(old)
    for path in (db_path(settings), settings.state_key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    for sidecar in db_path(settings).parent.glob("*-*"):  # -wal/-shm take the store's mode
        assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar


FIRST_OPEN_SCRIPT = """
import os, sys, time
from pathlib import Path
from reconciler.settings import Settings
from reconciler.store import open_store

go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
store = open_store(Settings.from_env(os.environ), notice=lambda m: print("NOTICE", m))
print("fp", store.fingerprint_key().hex())
store.close()
"""


FIRST_OPENERS = 8
FIRST_OPEN_ROUNDS = 3


def test_concurrent_first_opens_agree_on_one_key(settings: Settings, tmp_path: Path) -> None:
    # Several rounds, each on a fresh store and key: the race ("database is locked" on the
    # first open) only shows when many processes create the same new file at once.
    for round_ in range(FIRST_OPEN_ROUNDS):
        here = tmp_path / f"round{round_}"
        here.mkdir()
        fresh = dataclasses.replace(
            settings, state_url=f"sqlite:///{here / 'state.db'}", state_key_file=here / "key"
        )
        go = here / "go"
        procs = [
            subprocess.Popen(
                [PYTHON, "-c", FIRST_OPEN_SCRIPT, str(go)],
                env=child_env(fresh),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(FIRST_OPENERS)
        ]
        time.sleep(1.0)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), (round_, outputs)
        lines = [line for out, _ in outputs for line in out.splitlines()]
        assert sum(line.startswith("NOTICE created state encryption key") for line in lines) == 1
        assert len({line for line in lines if line.startswith("fp ")}) == 1
        with open_store(fresh) as store:
            assert store.state_serial() == 0


def test_sqlite_url_forms() -> None:
    assert sqlite_path("sqlite:////var/lib/linkctl/state.db") == Path("/var/lib/linkctl/state.db")
    # Settings.from_env writes f"sqlite:///{absolute}", i.e. four slashes: the same file.
    assert sqlite_path("sqlite:////var/lib/linkctl/state.db") == Path("/var/lib/linkctl/state.db")


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
