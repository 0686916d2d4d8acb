"""Store contract: API keys and admin sessions (every backend of ``tests.support.stores.BACKENDS``).

Keys are stored as hashes only, revocation is idempotent and keeps its first time,
``last_used_at`` never moves back; a session's CSRF secret is sealed (its plaintext is not
in the store's bytes), an ended session stays ended, and expired rows are dropped when a
new session is recorded.
"""

from __future__ import annotations

import pytest

from reconciler.errors import StateError
from reconciler.secrets import Secret
from reconciler.store.api_keys import ApiKeyRecord
from reconciler.store.base import Store
from tests.support.fakes import FakeClock


def _record(key_id: str = "key_0000000000000001", key_hash: str = "a" * 64, **kw: object) -> ApiKeyRecord:
    fields: dict[str, object] = dict(
        id=key_id,
        key_hash=key_hash,
        label="ci",
        patterns=("ci-*", "deploy"),
        admin=False,
        created_at=1_800_000_000.0,
        expires_at=None,
        last_used_at=None,
        revoked_at=None,
    )
    fields.update(kw)
    return ApiKeyRecord(**fields)  # type: ignore[arg-type]


def test_api_keys_round_trip_revoke_and_touch(store: Store) -> None:
    record = _record()
    store.put_api_key(record)
    store.put_api_key(_record("key_0000000000000002", "b" * 64, admin=True, label=None, patterns=("*",)))
    assert store.get_api_key_by_hash("a" * 64) == record
    assert store.get_api_key(record.id) == record
    assert store.get_api_key_by_hash("c" * 64) is None
    assert [r.id for r in store.list_api_keys()] == ["key_0000000000000001", "key_0000000000000002"]
    assert store.list_api_keys()[1].admin is True
    with pytest.raises(StateError):
        store.put_api_key(_record("key_0000000000000003", "a" * 64))  # same hash

    store.touch_api_key(record.id, now=1_800_000_100.0)
    store.touch_api_key(record.id, now=1_800_000_050.0)  # older: ignored
    assert store.get_api_key(record.id).last_used_at == 1_800_000_100.0  # type: ignore[union-attr]

    revoked = store.revoke_api_key(record.id, now=1_800_000_200.0)
    assert revoked is not None and revoked.revoked_at == 1_800_000_200.0
    again = store.revoke_api_key(record.id, now=1_800_000_300.0)
    assert again is not None and again.revoked_at == 1_800_000_200.0
    assert store.revoke_api_key("key_ffffffffffffffff", now=1.0) is None


def test_sessions_sealed_ended_and_purged(store: Store, clock: FakeClock) -> None:
    store.put_api_key(_record(admin=True))
    csrf = Secret("csrf-canary-" + "7" * 20)
    now = clock()
    store.put_session(
        "s" * 64, api_key_id="key_0000000000000001", csrf_secret=csrf, created_at=now, expires_at=now + 60
    )
    row = store.get_session("s" * 64)
    assert row is not None and row.csrf_secret.reveal() == csrf.reveal()
    assert (row.api_key_id, row.created_at, row.expires_at, row.ended_at) == (
        "key_0000000000000001",
        now,
        now + 60,
        None,
    )
    assert store.get_session("t" * 64) is None
    assert store.end_session("s" * 64, now=now + 1) is True
    assert store.end_session("s" * 64, now=now + 2) is False
    assert store.get_session("s" * 64).ended_at == now + 1  # type: ignore[union-attr]

    with pytest.raises(StateError):
        store.put_session(
            "u" * 64, api_key_id="key_unknown", csrf_secret=csrf, created_at=now, expires_at=now + 1
        )
    # A new session drops the rows that expired before it started.
    store.put_session(
        "v" * 64,
        api_key_id="key_0000000000000001",
        csrf_secret=csrf,
        created_at=now + 61,
        expires_at=now + 120,
    )
    assert store.get_session("s" * 64) is None and store.get_session("v" * 64) is not None


def test_csrf_secret_is_sealed(store: Store) -> None:
    store.put_api_key(_record(admin=True))
    marker = "csrf-canary-" + "9" * 20
    store.put_session(
        "s" * 64,
        api_key_id="key_0000000000000001",
        csrf_secret=Secret(marker),
        created_at=1.0,
        expires_at=2e9,
    )
    assert store.get_session("s" * 64).csrf_secret.reveal() == marker  # type: ignore[union-attr]
    if store.url.startswith("sqlite:"):  # the file's bytes; other backends seal with the same Sealer
        from reconciler.store.sqlite import sqlite_path

        path = sqlite_path(store.url)
        data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert marker.encode() not in data
