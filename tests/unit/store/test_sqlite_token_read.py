"""The token read that does not open the SQLite store in full: the same answers, checks and warnings.

``linkctl token`` tries it first; whatever it cannot vouch for is a None, and the caller
opens the store in full. So it must never answer differently from ``get_access_token``
on the opened store, never answer where opening would refuse, and never write.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest

from reconciler.errors import StateError
from reconciler.settings import Settings
from reconciler.store import open_store, read_ready_access_token
from tests.support.stores import store_with_fresh_token


def _settings(tmp_path: Path, key: str | None = None) -> Settings:
    env = {"HOME": str(tmp_path), "LINKCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}"}
    if key is not None:
        env["LINKCTL_STATE_KEY"] = key
    else:
        env["LINKCTL_STATE_KEY_FILE"] = str(tmp_path / "state.key")
    return Settings.from_env(env)


def _bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


def test_a_ready_store_answers_as_the_opened_store_does_and_writes_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store_with_fresh_token(settings, "wiki")
    store = open_store(settings, notice=lambda _: None)
    expected = store.get_access_token("wiki")
    store.close()
    db = tmp_path / "state.db"
    before = _bytes(db)
    said: list[str] = []
    token = read_ready_access_token(settings, "wiki", notice=said.append)
    assert token is not None and expected is not None
    assert token.access_token is not None and expected.access_token is not None
    assert token.access_token.reveal() == expected.access_token.reveal() == "the-access-token"
    assert (token.link_name, token.token_type, token.scope, token.access_expires_at) == (
        expected.link_name,
        expected.token_type,
        expected.scope,
        expected.access_expires_at,
    )
    assert said == []
    assert _bytes(db) == before


def test_what_it_cannot_vouch_for_is_left_to_the_full_open(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert read_ready_access_token(settings, "wiki", notice=print) is None  # no store yet
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "state.key").exists()
    store_with_fresh_token(settings, "wiki")
    assert read_ready_access_token(settings, "no-such-link", notice=print) is None
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")  # needs a migration
    conn.commit()
    conn.close()
    assert read_ready_access_token(settings, "wiki", notice=print) is None
    postgres = Settings.from_env({"HOME": str(tmp_path), "LINKCTL_STATE": "postgresql://u@127.0.0.1/x"})
    assert read_ready_access_token(postgres, "wiki", notice=print) is None  # never connects


def test_it_refuses_what_opening_refuses(tmp_path: Path) -> None:
    settings = _settings(tmp_path, key=base64.b64encode(os.urandom(32)).decode())
    store_with_fresh_token(settings, "wiki")
    wrong = _settings(tmp_path, key=base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(StateError, match="state key does not match"):
        read_ready_access_token(wrong, "wiki", notice=print)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    assert settings.state_key is not None
    elsewhere = Settings.from_env(
        {
            "HOME": str(tmp_path),
            "LINKCTL_STATE_KEY": settings.state_key.reveal(),
            "LINKCTL_STATE": f"sqlite:///{foreign}",
        }
    )
    with pytest.raises(StateError):
        read_ready_access_token(elsewhere, "wiki", notice=print)
    assert foreign.read_bytes() == before


def test_warnings_are_said_once_and_only_with_an_answer(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store_with_fresh_token(settings, "wiki")
    (tmp_path / "state.db").chmod(0o644)
    said: list[str] = []
    assert read_ready_access_token(settings, "wiki", notice=said.append) is not None
    assert len(said) == 1 and "accessible by other users" in said[0]
    said.clear()
    assert read_ready_access_token(settings, "no-such-link", notice=said.append) is None
    assert said == []  # the full open, which the caller does next, says it
    other_key = base64.b64encode(os.urandom(32)) + b"\n"
    (tmp_path / "state.key").write_bytes(other_key)  # another key: refused, after the warning
    with pytest.raises(StateError):
        read_ready_access_token(settings, "wiki", notice=said.append)
    assert len(said) == 1 and "accessible by other users" in said[0]
    (tmp_path / "state.db").chmod(0o666)
    with pytest.raises(StateError, match="writable by other users"):
        read_ready_access_token(settings, "wiki", notice=said.append)
