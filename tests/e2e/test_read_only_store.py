"""Read-only commands never create, migrate or convert a store; foreign databases are refused.

Issue 8 §2: ``list``, ``show``, ``state show``, ``state events``, ``plan``, ``validate`` and
``redirect-url`` change nothing on disk, and a SQLite database that is not a linkctl store is
refused by every command (apply included) with its bytes unchanged.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import INSTANCE, Linkctl, link_doc, write

READ_ONLY = (
    ("list",),
    ("show", "mail"),
    ("state", "show"),
    ("state", "events"),
    ("plan", "links"),
    ("validate", "links"),
    ("redirect-url", "mail"),
)


def _links(linkctl: Linkctl) -> None:
    write(linkctl.cwd / "links" / "instance.yaml", INSTANCE)
    write(linkctl.cwd / "links" / "mail.yaml", link_doc("mail"))


def _store_files(root: Path) -> list[str]:
    """Every store or key file under ``root`` (state.db and its -wal/-shm, *.key, any *.db)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and (".db" in p.name or p.name.endswith(".key") or "state" in p.name)
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('mine, not linkctl''s')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_read_only_command_creates_no_store_and_no_key(linkctl: Linkctl, command: tuple[str, ...]) -> None:
    _links(linkctl)
    root = linkctl.cwd.parent
    before = _store_files(root)
    result = linkctl(*command, expect=None)
    assert result.returncode in (0, 1), str(result)  # show/redirect-url of an unknown link: exit 1
    assert _store_files(root) == before, str(result)
    assert not linkctl.state_db.parent.exists()


def test_missing_store_reads_as_empty(linkctl: Linkctl) -> None:
    _links(linkctl)
    assert linkctl("state", "show", "-o", "json").json()["serial"] == 0
    assert "No links stored" in linkctl("list").stdout
    assert "mail" in linkctl("plan", "links").stdout
    assert not linkctl.state_db.exists()
    linkctl("apply", "links")  # the first write creates it
    assert linkctl.state_db.exists()


def test_saved_plan_of_missing_store_creates_it_and_applies(linkctl: Linkctl) -> None:
    # plan --out binds the secrets' digests to the store's key: it opens the store as apply would.
    _links(linkctl)
    linkctl("plan", "links", "--out", "plan.json")
    assert linkctl.state_db.exists()
    linkctl("apply", "--plan", "plan.json")
    assert [link["name"] for link in linkctl("list", "-o", "json").json()["links"]] == ["mail"]


@pytest.mark.parametrize("command", (*READ_ONLY, ("apply", "links"), ("reconcile", "links")), ids=" ".join)
def test_foreign_database_is_refused_unchanged(linkctl: Linkctl, command: tuple[str, ...]) -> None:
    _links(linkctl)
    other = linkctl.cwd / "other.db"
    _foreign(other)
    before = _digest(other)
    result = linkctl("--state", "sqlite:///other.db", *command, expect=None)
    if command[0] == "validate":  # never opens the store
        assert result.returncode == 0, str(result)
    else:
        assert result.returncode == 1, str(result)
        assert f"{other} is a SQLite database but not a linkctl store" in result.stderr, str(result)
    assert _digest(other) == before
    assert not other.with_name("other.db-wal").exists()
    assert not other.with_name("other.db-shm").exists()
    conn = sqlite3.connect(f"{other.as_uri()}?mode=ro", uri=True)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]
    conn.close()


def test_relative_url_is_relative_to_the_working_directory(linkctl: Linkctl) -> None:
    _links(linkctl)
    linkctl("--state", "sqlite:///relative.db", "apply", "links")
    assert (linkctl.cwd / "relative.db").is_file()
    assert not Path("/relative.db").exists()
    shown = linkctl("--state", "sqlite:///relative.db", "state", "show").stdout
    assert f"({linkctl.cwd / 'relative.db'})" in shown
    absolute = f"sqlite:///{linkctl.cwd / 'relative.db'}"  # four slashes: absolute
    assert linkctl("--state", absolute, "state", "show", "-o", "json").json()["serial"] == 1


def test_three_slash_url_meant_as_absolute_is_refused(linkctl: Linkctl) -> None:
    _links(linkctl)
    store = linkctl.cwd.parent / "abs.db"
    linkctl("--state", f"sqlite:///{store}", "apply", "links")
    legacy = f"sqlite://{store}"  # three slashes: now relative to the working directory
    for command in (("list",), ("apply", "links")):
        result = linkctl("--state", legacy, *command, expect=1)
        assert "four slashes" in result.stderr and str(store) in result.stderr, str(result)
    assert not (linkctl.cwd / str(store).lstrip("/")).exists()
