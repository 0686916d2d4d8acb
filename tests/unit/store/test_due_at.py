"""``grants.due_at``: migration 0002 back-fills exactly the due rule the store ran in SQL before,
and the due query over the column selects what the one Python rule says.

SQLite-only (raw rows underneath the interface). The SQL the store used before migration
0002 is kept below, verbatim, as the oracle of the back-fill.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.domain.schedule import due_at
from reconciler.settings import Settings
from reconciler.store.base import Store
from reconciler.store.schema import load_migrations, split_statements
from reconciler.store.sqlite_grants import write_due_at
from reconciler.store.sqlite_leases import DUE_LINKS_QUERY
from tests.support.stores import db_path, link

OpenStore = Callable[..., Store]
NOW = 1_800_000_000.0

# -- the oracle: the due rule as the store ran it in SQL before migration 0002 ------------
_PARKED = ", ".join(f"'{s}'" for s in (GrantStatus.PENDING_CREDENTIALS, GrantStatus.CONFIGURATION_ERROR))
_LEASE_FREE = "(g.lease_owner IS NULL OR g.lease_expires_at <= :now)"
_CC_WITHOUT_TOKENS = (
    "(g.access_token IS NULL AND json_extract(l.spec_json, '$.grant') = 'client_credentials')"
)
_DUE_TIME = "COALESCE(g.retry_at, g.next_refresh_at)"
_ELIGIBLE = (
    f"g.status NOT IN ({_PARKED}) AND ("
    f" (g.status != '{GrantStatus.NEEDS_AUTHORIZATION}' AND {_DUE_TIME} IS NOT NULL)"
    f" OR g.in_flight_since IS NOT NULL OR {_CC_WITHOUT_TOKENS})"
)
_RULE_TIME = (
    f"CASE WHEN {_CC_WITHOUT_TOKENS} OR g.in_flight_since IS NOT NULL"
    f" THEN COALESCE(g.retry_at, 0) ELSE {_DUE_TIME} END"
)
_DUE_AT = f"MAX({_RULE_TIME}, COALESCE(g.lease_expires_at, 0))"
# The old rule's selection, in the order due_links gives since 2026-12-03: the rule's due
# time, then the name (a held lease only decides whether a row is free, not its place).
OLD_DUE_LINKS = (
    "SELECT l.name FROM grants g JOIN links l ON l.uid = g.link_uid"
    f" WHERE {_ELIGIBLE} AND {_LEASE_FREE} AND {_DUE_AT} <= :now"
    f" ORDER BY {_RULE_TIME}, l.name LIMIT :limit"
)
OLD_NEXT_DUE_AT = f"SELECT MIN({_DUE_AT}) FROM grants g JOIN links l ON l.uid = g.link_uid WHERE {_ELIGIBLE}"

# -- grant states -------------------------------------------------------------------------
_TIMES = (None, NOW - 50.0, NOW + 50.0)  # unset, past, future (shared values make ties)
_GRANT_TYPES = (None, "authorization_code", "client_credentials")


def _every_state() -> Iterator[dict[str, Any]]:
    """One grant per combination of the rule's inputs and the lease."""
    for status, grant_type, access, in_flight, retry_at, next_at, lease in itertools.product(
        GrantStatus, _GRANT_TYPES, (False, True), (None, NOW - 5.0), _TIMES, _TIMES, _TIMES
    ):
        yield {
            "status": str(status),
            "grant": grant_type,
            "access": access,
            "in_flight_since": in_flight,
            "retry_at": retry_at,
            "next_refresh_at": next_at,
            "lease_owner": None if lease is None else "holder",
            "lease_expires_at": lease,
        }


def _random_state(rng: random.Random) -> dict[str, Any]:
    def when() -> float | None:
        return rng.choice((None, NOW + rng.uniform(-100.0, 100.0), NOW + rng.choice((-10.0, 0.0, 10.0))))

    lease = when()
    return {
        "status": str(rng.choice(list(GrantStatus))),
        "grant": rng.choice(_GRANT_TYPES),
        "access": rng.random() < 0.5,
        "in_flight_since": rng.choice((None, NOW - rng.uniform(0.0, 60.0))),
        "retry_at": when(),
        "next_refresh_at": when(),
        # An expired lease whose owner is gone leaves lease_expires_at behind only with an owner.
        "lease_owner": None if lease is None else rng.choice(("a", "b")),
        "lease_expires_at": lease,
    }


def _insert(conn: sqlite3.Connection, states: list[dict[str, Any]]) -> None:
    for index, state in enumerate(states):
        uid, name = f"uid-{index:05d}", f"link-{index:05d}"
        spec = {"provider": "custom"} | ({"grant": state["grant"]} if state["grant"] else {})
        conn.execute(
            "INSERT INTO links (uid, name, provider, spec_json, spec_hash, created_at, updated_at)"
            " VALUES (?, ?, 'custom', ?, 'hash', ?, ?)",
            (uid, name, json.dumps(spec), NOW, NOW),
        )
        conn.execute(
            "INSERT INTO grants (link_uid, status, token_version, access_token, retry_at, next_refresh_at,"
            " in_flight_since, lease_owner, lease_expires_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)",
            (
                uid,
                state["status"],
                b"sealed" if state["access"] else None,
                state["retry_at"],
                state["next_refresh_at"],
                state["in_flight_since"],
                state["lease_owner"],
                state["lease_expires_at"],
            ),
        )


def _store_at_first_migration(settings: Settings, states: list[dict[str, Any]]) -> None:
    """A store file made by migration 0001 only, holding ``states``."""
    path = db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for statement in split_statements(load_migrations()[0].sql):
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', 1)")
        _insert(conn, states)
        conn.execute("COMMIT")
    finally:
        conn.close()
    path.chmod(0o600)


def _rule(row: sqlite3.Row) -> float | None:
    return due_at(
        status=row["status"],
        retry_at=row["retry_at"],
        next_refresh_at=row["next_refresh_at"],
        in_flight_since=row["in_flight_since"],
        has_access_token=row["access_token"] is not None,
        client_credentials=json.loads(row["spec_json"]).get("grant") == "client_credentials",
    )


def _rows(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    conn.row_factory = sqlite3.Row
    return conn.execute(
        "SELECT l.name, l.spec_json, g.* FROM grants g JOIN links l ON l.uid = g.link_uid ORDER BY l.name"
    ).fetchall()


def _expected_by_rule(rows: list[sqlite3.Row], now: float, limit: int) -> list[str]:
    """``due_links`` as the Python rule and the lease rule say it."""
    ready = []
    for row in rows:
        at = _rule(row)
        lease_free = row["lease_owner"] is None or row["lease_expires_at"] <= now
        if at is not None and lease_free and max(at, row["lease_expires_at"] or 0.0) <= now:
            ready.append((at, row["name"]))  # most overdue first: the earliest due time
    return [name for _, name in sorted(ready)[:limit]]


def _next_by_rule(rows: list[sqlite3.Row]) -> float | None:
    times = [max(at, row["lease_expires_at"] or 0.0) for row in rows if (at := _rule(row)) is not None]
    return min(times) if times else None


def _moments() -> tuple[float, ...]:
    return (0.0, NOW - 100.0, NOW - 50.0, NOW - 5.0, NOW, NOW + 10.0, NOW + 50.0, NOW + 1000.0)


# -- tests --------------------------------------------------------------------------------
def test_migration_back_fills_exactly_the_old_due_rule(open_: OpenStore, settings: Settings) -> None:
    states = list(_every_state())
    _store_at_first_migration(settings, states)
    store = open_()  # migrates the file to the current schema (0002 back-fills due_at)
    conn = sqlite3.connect(db_path(settings), isolation_level=None)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == len(
            load_migrations()
        )
        assert conn.execute("SELECT COUNT(*) FROM grants WHERE due_at IS NOT NULL").fetchone()[0] > 0
        for now in _moments():
            for limit in (len(states), 7):
                old = [r[0] for r in conn.execute(OLD_DUE_LINKS, {"now": now, "limit": limit})]
                assert store.due_links(now, limit=limit) == old, (now, limit)
        assert store.next_due_at() == conn.execute(OLD_NEXT_DUE_AT).fetchone()[0]
        rows = _rows(conn)
        # The back-fill equals the one Python rule, row by row.
        assert [(r["name"], r["due_at"]) for r in rows] == [(r["name"], _rule(r)) for r in rows]
        plan = conn.execute(f"EXPLAIN QUERY PLAN {DUE_LINKS_QUERY}", {"now": NOW, "limit": 1}).fetchall()
        assert any("grants_due_at" in str(step[-1]) for step in plan), plan
        # Read in the index's order and stopped after ``limit``: no sort of every due row.
        assert not any(str(step[-1]) == "USE TEMP B-TREE FOR ORDER BY" for step in plan), plan
    finally:
        conn.close()


@pytest.mark.parametrize("seed", range(5))
def test_due_query_selects_what_the_python_rule_says(open_: OpenStore, settings: Settings, seed: int) -> None:
    rng = random.Random(seed)
    store = open_()
    conn = sqlite3.connect(db_path(settings), isolation_level=None)
    try:
        for _ in range(20):
            states = [_random_state(rng) for _ in range(rng.randint(0, 40))]
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM grants")
            conn.execute("DELETE FROM links")
            _insert(conn, states)
            # What the store's own writes do after changing an input of the rule.
            write_due_at(conn, [row[0] for row in conn.execute("SELECT link_uid FROM grants")])
            conn.execute("COMMIT")
            rows = _rows(conn)
            conn.row_factory = None
            for now in (*_moments(), NOW + rng.uniform(-100.0, 100.0)):
                limit = rng.choice((1, 5, 100))
                assert store.due_links(now, limit=limit) == _expected_by_rule(rows, now, limit)
                # ... and what the SQL rule before migration 0002 selected.
                assert store.due_links(now, limit=limit) == [
                    r[0] for r in conn.execute(OLD_DUE_LINKS, {"now": now, "limit": limit})
                ]
            assert store.next_due_at() == _next_by_rule(rows)
    finally:
        conn.close()


def test_apply_changing_the_grant_type_rewrites_due_at(open_: OpenStore, settings: Settings) -> None:
    """After an apply that changes a link's grant type, the stored due time follows the rule."""
    store = open_()
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(link("a"))
    conn = sqlite3.connect(db_path(settings), isolation_level=None)
    try:
        assert _rows(conn)[0]["due_at"] is None  # needs authorization: never due by itself
        with store.write(expected_serial=None, actor="test") as tx:
            tx.put_link(link("a", grant="client_credentials"))
        row = _rows(conn)[0]
        assert row["due_at"] == _rule(row) == 0.0  # client credentials without tokens: at once
        assert store.due_links(NOW, limit=5) == ["a"]
    finally:
        conn.close()
