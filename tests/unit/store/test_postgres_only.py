"""PostgreSQL-only behaviour under the store interface: one schema in two dialects, the database
clock, fencing after a lease ended by that clock, reconnecting, and lost commit answers.

The contract suite (tests/unit/store/contract/) runs the shared behaviour on both backends
with a fake caller clock; these tests use the database clock, as every real process does.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.errors import LockTimeout, StateError
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import Event, Store
from reconciler.store.grants import LeaseLost
from reconciler.store.postgres_conn import Connector
from reconciler.store.postgres_url import parse_url, redact
from tests.conftest import require_tool
from tests.support.fakes import add_links, link_write, response
from tests.support.postgres import fresh_url
from tests.support.stores import PYTHON, child_env, db_path

Open = Callable[..., Store]


@pytest.fixture
def pg_settings(settings: Settings) -> Settings:
    """Settings naming a fresh PostgreSQL store (schema) with the key under the isolated HOME."""
    return settings._replace(state_url=fresh_url())


@pytest.fixture
def pg(pg_settings: Settings) -> Iterator[Open]:
    """Open PostgreSQL stores with the database clock (closed at teardown)."""
    opened: list[Store] = []

    def factory(**kw: Any) -> Store:
        store = open_store(pg_settings._replace(**kw), notice=lambda _: None)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _sql(settings: Settings, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(parse_url(settings.state_url).conninfo, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


_TYPES = {"INTEGER": "int", "TEXT": "text", "REAL": "float", "BLOB": "bytes", "": "text"}
_PG_TYPES = {"bigint": "int", "integer": "int", "text": "text", "double precision": "float", "bytea": "bytes"}


def test_both_dialects_define_the_same_tables_columns_and_indexes(
    settings: Settings, pg: Open, pg_settings: Settings
) -> None:
    open_store(settings, notice=lambda _: None).close()
    lite = sqlite3.connect(db_path(settings))
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    sqlite_columns = {
        (t, r[1], _TYPES[r[2]])
        for t in tables
        if t != "sqlite_sequence"
        for r in lite.execute(f"PRAGMA table_info({t})")
    }
    sqlite_indexes = {
        r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    }
    lite.close()
    pg().close()
    pg_columns = {
        (t, c, _PG_TYPES[d])
        for t, c, d in _sql(
            pg_settings,
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema()",
        )
    }
    pg_indexes = {
        r[0]
        for r in _sql(
            pg_settings,
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname NOT LIKE '%pkey' AND indexname NOT LIKE '%_key'",
        )
    }
    # meta.value is untyped in SQLite (digits or bytes) and text here (the key check in base64).
    assert {c for c in sqlite_columns if c[:2] != ("meta", "value")} == {
        c for c in pg_columns if c[:2] != ("meta", "value")
    }
    assert sqlite_indexes == pg_indexes


def test_a_newer_schema_and_a_foreign_database_are_refused(pg: Open, pg_settings: Settings) -> None:
    pg().close()
    _sql(pg_settings, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="schema version 99, newer than this linkctl"):
        pg()
    other = pg_settings._replace(state_url=fresh_url())
    _sql(other, "CREATE TABLE invoices (id int)")
    with pytest.raises(StateError, match=r"holds tables but no linkctl store \(tables: invoices\)"):
        open_store(other, notice=lambda _: None)
    assert [
        r[0] for r in _sql(other, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    ] == ["invoices"]


def test_read_only_commands_read_an_empty_store_and_create_nothing(pg_settings: Settings) -> None:
    store = open_store(pg_settings, notice=lambda _: None, read_only=True)
    try:
        assert store.list_links() == [] and store.state_serial() == 0 and store.current_lock() is None
        with pytest.raises(StateError, match="read-only"):
            store.add_event(Event(action="x", link=None, actor="t"))
    finally:
        store.close()
    assert _sql(pg_settings, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'linkctl_readonly%'") == []
    assert _sql(pg_settings, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()") == []
    assert not pg_settings.state_key_file.exists()


def test_an_older_schema_is_not_migrated_by_a_read_only_command(pg: Open, pg_settings: Settings) -> None:
    pg().close()
    _sql(pg_settings, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match=r"schema version 3 .* does not migrate") as info:
        open_store(pg_settings, notice=lambda _: None, read_only=True)
    assert "state migrate" in (info.value.hint or "")


def test_the_password_never_shows() -> None:
    assert redact("postgresql://u:hunter2@db/x?password=hunter2&sslmode=require") == (
        "postgresql://u:***@db/x?password=***&sslmode=require"
    )
    assert "hunter2" not in parse_url("postgresql://u:hunter2@db/x").shown


def test_a_lease_ended_by_the_database_clock_fences_its_holder(pg: Open) -> None:
    store = pg()
    add_links(store, link_write("a"))
    store.save_authorization("a", response(at=time.time()), clock_now=time.time())
    far_future = time.time() + 10_000  # the caller's now is not the clock here
    held = store.acquire_lease("a", owner="A", ttl=0.3, now=far_future)
    assert held is not None
    assert store.acquire_lease("a", owner="B", ttl=30, now=far_future) is None  # still A's by the DB clock
    time.sleep(0.4)
    with pytest.raises(LeaseLost):  # no new send after the lease ended, whatever A's clock says
        store.mark_in_flight("a", owner="A", token_version=held.token_version, now=0.0)
    taken = store.acquire_lease("a", owner="B", ttl=30, now=0.0)
    assert taken is not None
    with pytest.raises(LeaseLost, match="another owner"):
        store.commit_tokens(
            "a",
            owner="A",
            expected_version=held.token_version,
            response=response(),
            now=0.0,
            next_refresh_at=None,
        )


SKEWED = """
import os, time
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from tests.support.fakes import response
store = open_store(Settings.from_env(os.environ), notice=lambda _: None)
print(store.acquire_lease("a", owner="skewed", ttl=30, now=time.time()) is None)
print(store.get_grant("a").lease_expires_at - time.time())
answer = response("at-2", "rt-2", at=time.time(), expires_in=3600)
store.save_authorization("a", answer, clock_now=time.time())
store.close()
"""


def test_a_client_clock_90_s_ahead_still_sees_and_writes_the_database_time(
    pg: Open, pg_settings: Settings
) -> None:
    faketime = require_tool("faketime")
    store = pg()
    add_links(store, link_write("a"))
    store.save_authorization("a", response(at=time.time()), clock_now=time.time())
    assert store.acquire_lease("a", owner="here", ttl=30, now=time.time()) is not None
    env = child_env(pg_settings)
    out = subprocess.run(
        [faketime, "-f", "+90s", PYTHON, "-c", SKEWED], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    refused, left = out.stdout.split()
    assert refused == "True"  # 90 s ahead, our 30 s lease looks long expired to it: not by the DB clock
    assert 25 < float(left) <= 30  # the lease end it reads, in its own clock
    grant = store.get_grant("a")
    assert grant is not None and grant.access_expires_at is not None
    assert abs(grant.access_expires_at - (time.time() + 3600)) < 5  # not 90 s late


def test_connections_killed_under_the_store_are_replaced(pg: Open, pg_settings: Settings) -> None:
    store = pg()
    add_links(store, link_write("a"))
    name = parse_url(pg_settings.state_url).conninfo
    killed = _sql(
        pg_settings,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'linkctl'",
    )
    assert killed and name
    assert [lk.name for lk in store.list_links()] == ["a"]
    add_links(store, link_write("b"))
    assert store.state_serial() == 2


class _HangUpFirst(threading.Thread):
    """A loopback proxy to the test server that hangs up on its first ``hang_ups`` connections.

    That is what a client sees while PostgreSQL shuts down for a restart: the TCP connection is
    accepted, then closed before the server's first answer.
    """

    def __init__(self, target: tuple[str, int], hang_ups: int) -> None:
        super().__init__(daemon=True)
        self.target, self.hang_ups = target, hang_ups
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.hang_ups:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_a_server_hanging_up_mid_handshake_is_waited_for_like_a_restart(pg_settings: Settings) -> None:
    parts = urllib.parse.urlsplit(pg_settings.state_url)
    proxy = _HangUpFirst((parts.hostname or "127.0.0.1", parts.port or 5432), hang_ups=3)
    proxy.start()
    try:
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        store = open_store(pg_settings._replace(state_url=url), notice=lambda _: None)
        try:
            add_links(store, link_write("a"))
            assert [lk.name for lk in store.list_links()] == ["a"]
        finally:
            store.close()
        assert proxy.accepted > 3  # the hang-ups were met, and waited out
    finally:
        proxy.listener.close()


def test_one_statement_reads_take_one_round_trip_and_leave_connections_transactional(pg: Open) -> None:
    store = pg()
    add_links(store, link_write("a"))
    connector: Connector = store._db  # type: ignore[attr-defined]
    sent: list[str] = []
    original = psycopg.Connection.execute

    def counting(self: psycopg.Connection[Any], query: Any, *args: Any, **kw: Any) -> Any:
        sent.append(str(query))
        return original(self, query, *args, **kw)

    psycopg.Connection.execute = counting  # type: ignore[method-assign]
    try:
        assert store.get_link("a") is not None and store.read_secret("a", "clientSecret") is not None
    finally:
        psycopg.Connection.execute = original  # type: ignore[method-assign]
    assert len(sent) == 2  # no clock reading, no BEGIN/COMMIT around a one-statement read
    held = [connector.pool.getconn() for _ in range(2)]
    try:
        assert all(conn.autocommit is False for conn in held)  # writes still get one transaction
    finally:
        for conn in held:
            connector.pool.putconn(conn)


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_lost_commit_answer_is_resolved_by_the_transaction_id(
    pg: Open, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    store = pg()
    add_links(store, link_write("a"))
    store.save_authorization("a", response(at=time.time()), clock_now=time.time())
    held = store.acquire_lease("a", owner="A", ttl=30, now=time.time())
    assert held is not None
    real_commit = psycopg.Connection.commit
    calls: list[str] = []

    def commit(self: psycopg.Connection[Any]) -> None:
        if calls:
            return real_commit(self)
        calls.append(when)
        pid = self.info.backend_pid
        if when == "after":
            real_commit(self)  # committed: only the answer is lost
        with psycopg.connect(self.info.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        if when == "after":
            self.execute("SELECT 1")  # the broken connection raises as a lost answer would
        real_commit(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    resolved: list[object] = []
    real_resolve = Connector._resolve

    def resolve(self: Connector, xid: str, result: object, **kw: Any) -> object:
        resolved.append(outcome := real_resolve(self, xid, result, **kw))
        return outcome

    monkeypatch.setattr(Connector, "_resolve", resolve)
    store.commit_tokens(
        "a",
        owner="A",
        expected_version=held.token_version,
        response=response("at-2", "rt-2", at=time.time()),
        now=time.time(),
        next_refresh_at=None,
    )
    monkeypatch.undo()
    assert calls == [when]
    # Looked up by its id: "after" committed (its result stands), "before" aborted (run again).
    assert len(resolved) == 1 and isinstance(resolved[0], list) == (when == "after")
    grant = store.get_grant("a", with_tokens=True)
    assert grant is not None and grant.token_version == held.token_version + 1  # once, not twice
    assert grant.refresh_token is not None and grant.refresh_token.reveal() == "rt-2"
    assert grant.lease_owner is None


def test_a_dead_holder_of_the_apply_lock_on_any_host_is_replaced(
    pg: Open, pg_settings: Settings, tmp_path: Path
) -> None:
    pg().close()
    holder = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "import os, time\nfrom reconciler.settings import Settings\n"
            "from reconciler.store import open_store\ns = open_store(Settings.from_env(os.environ))\n"
            "s.acquire_lock(operation='apply', timeout=5)\n"
            "print('held', flush=True)\ntime.sleep(60)",
        ],
        env=child_env(pg_settings),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    _sql(pg_settings, "UPDATE locks SET host = 'another-machine'")  # no pid check can help here
    notices: list[str] = []
    store = open_store(pg_settings, notice=notices.append)
    try:
        with pytest.raises(LockTimeout, match=r"held by pid .* on host another-machine"):
            store.acquire_lock(operation="apply", timeout=0.2)
        holder.kill()
        holder.wait(timeout=10)
        info = store.acquire_lock(operation="apply", timeout=10)
        assert any("stale apply lock" in n and "another-machine" in n for n in notices)
        store.release_lock(info.id)
    finally:
        holder.kill()
        store.close()


def test_a_pending_authorization_bound_to_a_session_is_taken_only_by_it(pg: Open) -> None:
    store = pg()
    add_links(store, link_write("a"), link_write("b"))
    now = time.time()
    store.put_pending_authorization(
        "a",
        state="st",
        code_verifier=Secret("v-1"),
        redirect_uri="https://x/cb",
        issuer=None,
        require_iss=False,
        created_at=now,
        expires_at=now + 600,
        session_hash="s" * 64,
    )
    for kw in ({"link": "b"}, {"session_hash": "t" * 64}):
        other = store.consume_pending_authorization("st", now=now, **kw)  # type: ignore[arg-type]
        assert other is not None and other.code_verifier == Secret("") and not other.consumed_before
    mine = store.consume_pending_authorization("st", now=now, link="a", session_hash="s" * 64)
    assert mine is not None and mine.code_verifier == Secret("v-1")
    again = store.consume_pending_authorization("st", now=now, link="a", session_hash="s" * 64)
    assert again is not None and again.consumed_before
