"""``linkctl state export|import``: a whole state moves SQLite -> PostgreSQL -> SQLite unchanged.

Sealed values stay sealed under the same key (and still open), token versions and the
serial are kept, leases are dropped and a refresh left in flight arrives as a lost
response; a malformed file is refused with its line before any store is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.errors import EXIT_INVALID, ConfigError, StateError
from reconciler.secrets import Secret
from reconciler.services.state_transfer import export_state, import_state, read_state_file
from reconciler.settings import Settings
from reconciler.store.base import Event, Store
from tests.support.fakes import FakeClock, add_links, link_write, response
from tests.support.stores import BACKENDS


@pytest.fixture
def make(settings: Settings, tmp_path: Path) -> Callable[[str], Store]:
    """Open a new empty store of a backend (all under the same state key)."""
    opened: list[Store] = []

    def factory(backend: str) -> Store:
        url = BACKENDS[backend].make_url(tmp_path / f"{backend}-{len(opened)}")
        store = BACKENDS[backend].open(settings._replace(state_url=url), notice=lambda _: None)
        opened.append(store)
        return store

    yield factory  # type: ignore[misc]
    for store in opened:
        store.close()


def _populate(store: Store) -> None:
    clock = FakeClock()
    add_links(store, link_write("alpha"), link_write("beta"), link_write("gamma"), link_write("cc"))
    with store.write(expected_serial=store.state_serial(), actor="test") as tx:
        tx.set_instance("wiki")
    _put_meta(store, "notify_targets", '[{"id":"t1","url":"sealed"}]')
    with store.write(expected_serial=store.state_serial(), actor="test") as tx:
        tx.add_event(Event(action="apply", link=None, actor="test", detail={"n": 1}))
    store.save_authorization("alpha", response("at-a", "rt-a", at=clock()), clock_now=clock())
    store.save_authorization("beta", response("at-b", "rt-b", at=clock()), clock_now=clock())
    store.save_authorization("gamma", response("at-g", "rt-g", at=clock()), clock_now=clock())
    leased = store.acquire_lease("beta", owner="keeper-1", ttl=30, now=clock())
    assert leased is not None
    store.mark_in_flight("beta", owner="keeper-1", token_version=leased.token_version, now=clock())
    failed = store.acquire_lease("gamma", owner="keeper-1", ttl=30, now=clock())
    assert failed is not None
    store.record_failure(
        "gamma",
        owner="keeper-1",
        expected_version=failed.token_version,
        status=GrantStatus.TRANSIENT_ERROR,
        error_class="transient",
        message="503",
        retry_at=clock() + 60,
        lost_response=False,
        now=clock(),
    )
    store.put_pending_authorization(
        "alpha",
        state="st-1",
        code_verifier=Secret("verifier-1"),
        redirect_uri="https://linkctl.example/callback/alpha",
        issuer=None,
        require_iss=False,
        created_at=clock(),
        expires_at=clock() + 600,
    )
    store.put_provider_metadata("https://idp.example", {"issuer": "https://idp.example"}, fetched_at=clock())


def _put_meta(store: Store, key: str, value: str) -> None:
    """Another meta row, as a later feature writes one (the webhook targets do)."""
    conn: Any = getattr(store, "_conn", None)
    if conn is not None:  # SQLite
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return
    store._db.run(  # type: ignore[attr-defined]
        lambda tx: tx.execute("INSERT INTO meta (key, value) VALUES (%s, %s)", (key, value)),
        write=True,
        action="test",
    )


def _rows(store: Store) -> list[tuple[str, str]]:
    return sorted(
        (table, json.dumps(row, sort_keys=True, default=repr)) for table, row in store.export_rows()
    )


def test_round_trip_sqlite_postgresql_sqlite_keeps_everything(
    make: Callable[[str], Store], tmp_path: Path
) -> None:
    source = make("sqlite")
    _populate(source)
    first = _rows(source)
    export_state(source, tmp_path / "a.jsonl")

    middle = make("postgresql")
    import_state(middle, tmp_path / "a.jsonl", lock_timeout=5)
    assert _rows(middle) == first
    assert middle.state_serial() == source.state_serial() and middle.instance_name() == "wiki"
    assert middle.export_header().meta == {"notify_targets": '[{"id":"t1","url":"sealed"}]'}
    export_state(middle, tmp_path / "b.jsonl")

    last = make("sqlite")
    import_state(last, tmp_path / "b.jsonl", lock_timeout=5)
    assert _rows(last) == first
    assert last.export_header().meta == source.export_header().meta
    for store in (middle, last):
        grants = {g.link_name: g for g in store.list_grants()}
        assert {n: g.token_version for n, g in grants.items()} == {
            n: g.token_version for n, g in ((g.link_name, g) for g in source.list_grants())
        }
        assert all(g.lease_owner is None and g.in_flight_since is None for g in grants.values())
        # The request beta had in flight at export may have been answered: a lost response.
        assert grants["beta"].lost_response and "lost_response_sent_at" in grants["beta"].details
        assert store.read_secret("alpha", "clientSecret") == Secret("secret-alpha")
        alpha = store.get_grant("alpha", with_tokens=True)
        assert alpha is not None and alpha.refresh_token == Secret("rt-a")
        assert store.due_links(FakeClock()() + 3600, limit=10)  # due times computed again
        pending = store.consume_pending_authorization("st-1", now=FakeClock()())
        assert pending is not None and pending.code_verifier == Secret("verifier-1")
    assert b"rt-a" not in (tmp_path / "a.jsonl").read_bytes() + (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").stat().st_mode & 0o077 == 0


def test_import_refuses_a_store_that_is_not_empty(make: Callable[[str], Store], tmp_path: Path) -> None:
    source = make("sqlite")
    _populate(source)
    export_state(source, tmp_path / "s.jsonl")
    target = make("postgresql")
    add_links(target, link_write("other"))
    with pytest.raises(StateError, match="not empty"):
        import_state(target, tmp_path / "s.jsonl", lock_timeout=5)
    assert [lk.name for lk in target.list_links()] == ["other"]


def test_import_refuses_another_state_key(
    make: Callable[[str], Store], tmp_path: Path, settings: Settings
) -> None:
    source = make("postgresql")
    _populate(source)
    export_state(source, tmp_path / "s.jsonl")
    url = BACKENDS["sqlite"].make_url(tmp_path / "other-key")
    other = BACKENDS["sqlite"].open(
        settings._replace(state_url=url, state_key=Secret("A" * 43 + "=")), notice=lambda _: None
    )
    try:
        with pytest.raises(StateError, match="another state key"):
            import_state(other, tmp_path / "s.jsonl", lock_timeout=5)
        assert other.list_links() == []
    finally:
        other.close()


def _valid_lines(make: Callable[[str], Store], tmp_path: Path) -> list[str]:
    source = make("sqlite")
    add_links(source, link_write("alpha"))
    export_state(source, tmp_path / "good.jsonl")
    return (tmp_path / "good.jsonl").read_text().splitlines()


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (lambda lines: lines[:-1], None, "without its end line"),
        (lambda lines: [lines[0][:-3], *lines[1:]], 1, "not JSON"),
        (
            lambda lines: [lines[0].replace('"linkctl-state"', '"other"'), *lines[1:]],
            1,
            "not a linkctl state",
        ),
        (lambda lines: [lines[0].replace('"version":1', '"version":9'), *lines[1:]], 1, "version 9"),
        (lambda lines: [lines[0], lines[1].replace('"links"', '"nope"', 1), *lines[2:]], 2, "unknown table"),
        (lambda lines: [lines[0], *lines[1:-1], lines[1], lines[-1]], None, "after rows of"),
        (lambda lines: [*lines, lines[1]], None, "after the end line"),
        (lambda lines: [lines[0], "[1, 2]", *lines[1:]], 2, "expected a JSON object"),
    ],
)
def test_malformed_files_are_refused_with_their_line(
    make: Callable[[str], Store],
    tmp_path: Path,
    edit: Callable[[list[str]], list[str]],
    line: int | None,
    message: str,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(edit(_valid_lines(make, tmp_path))) + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        read_state_file(bad)
    assert info.value.exit_code == EXIT_INVALID and info.value.file == str(bad)
    if line is not None:
        assert info.value.line == line


def test_a_sealed_column_must_stay_base64(make: Callable[[str], Store], tmp_path: Path) -> None:
    lines = _valid_lines(make, tmp_path)
    rows: list[Any] = [json.loads(x) for x in lines]
    index = next(i for i, r in enumerate(rows) if r.get("table") == "secrets")
    rows[index]["row"]["ciphertext"] = "plaintext?"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="sealed bytes") as info:
        read_state_file(bad)
    assert info.value.line == index + 1
