"""SQLite-only tests of the store: file bytes and modes, WAL, pragmas, foreign files, sqlite: URLs, rows.

What every backend must do is the contract suite in tests/unit/store/contract/; the tests
here look beneath the interface (raw SQL, the file and its -wal) or at SQLite's own rules.
"""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.errors import LockTimeout, StateError, StoreNotReady
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import Event, Store
from reconciler.store.sqlite import SQLiteStore, load_migrations, split_statements, sqlite_path
from tests.support.fakes import add_links, link_write, response
from tests.support.stores import PYTHON, child_env, db_path, file_digest, link

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
        ("postgresql://user:pw@127.0.0.1:1/linkctl", r"cannot connect to the PostgreSQL store .*user:\*{3}@"),
        ("postgres://db/linkctl?pool_size=0", "pool_size must be a whole number"),
        ("postgresql://db/linkctl?password=pw&nonsense=1", "is malformed"),
        ("mysql://db/x", r"unsupported state URL \(mysql://…\)"),
        ("/var/lib/state.db", "unsupported state URL"),
        ("sqlite://relative.db", "not a SQLite state URL"),
        ("sqlite:///tmp/dir/", "names a directory"),
    ],
)
def test_state_url_errors(settings: Settings, url: str, message: str) -> None:
    with pytest.raises(StateError, match=message) as info:
        open_store(settings._replace(state_url=url))
    assert "pw" not in str(info.value) + (info.value.hint or "")
    assert info.value.hint


# -- rows underneath the interface (cascades, grants, tokens) ------------------------------
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
                GrantStatus.HEALTHY,
                store._seal_token(uid, "access_token", Secret("AT")),
                store._seal_token(uid, "refresh_token", Secret("RT")),
                uid,
            ),
        )
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("p"))  # now has a clientId
        tx.put_link(link("h", client_id="new-client"))
    assert store.get_grant("p").status == GrantStatus.NEEDS_AUTHORIZATION  # type: ignore[union-attr]
    h = store.get_grant("h", with_tokens=True)
    assert h is not None
    assert (h.status, h.token_version, h.has_refresh_token) == (GrantStatus.HEALTHY, 3, True)
    assert h.access_token == Secret("AT") and h.refresh_token == Secret("RT")
    without = store.get_grant("h")
    assert without is not None and without.access_token is None and without.refresh_token is None
    assert without.has_refresh_token
    # Removing the clientId again does not demote an existing grant either.
    with store.write(expected_serial=None, actor="a") as tx:
        tx.put_link(link("p", client_id=None))
    assert store.get_grant("p").status == GrantStatus.NEEDS_AUTHORIZATION  # type: ignore[union-attr]


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


def test_saved_authorization_seals_the_refresh_token(store: Store) -> None:
    # Moved from the lease tests (now in the contract suite): the row underneath holds no plaintext.
    add_links(store, link_write("a"))
    store.save_authorization("a", response(at=1_800_000_000.0), clock_now=1_800_000_000.0)
    raw = store._conn.execute("SELECT refresh_token FROM grants").fetchone()[0]  # type: ignore[attr-defined]
    assert b"rt-1" not in bytes(raw)


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


# -- the state key: a refused key leaves the file's bytes alone ----------------------------
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


# -- a lock of another host (planted by SQL) is never taken over ---------------------------
def test_lock_of_another_host_is_never_taken_over(store: Store, settings: Settings) -> None:
    dead_pid = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead_pid.stdout)
    with store._immediate() as conn:  # type: ignore[attr-defined]
        conn.execute(
            "INSERT INTO locks VALUES ('elsewhere1', 'apply', 'other-host.example', ?, ?, 'bob')",
            (pid, time.time() - 3600),
        )
    with pytest.raises(LockTimeout, match=r"host other-host\.example") as info:
        store.acquire_lock(operation="apply", timeout=0.1)
    assert "linkctl state unlock elsewhere1" in (info.value.hint or "")
    removed = store.force_unlock("elsewhere1")
    assert removed.host == "other-host.example" and removed.user == "bob"
    assert store.acquire_lock(operation="apply", timeout=0.1).host == socket.gethostname()


# -- the file's own guards: append-only events, permissions, first opens, URLs -------------
def test_events_are_append_only(store: Store, settings: Settings) -> None:
    store.add_event(Event(action="x", link=None, actor="a"))
    with raw(settings) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE events SET action = 'y'")


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
        fresh = settings._replace(state_url=f"sqlite:///{here / 'state.db'}", state_key_file=here / "key")
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
