"""The packaged schema migrations (``migrations/NNNN_name.sql``): loading and splitting them.

Backend-neutral: every store backend applies the same numbered files in order, one
statement at a time, and records the version it reached. SQLite's files sit in
``migrations/``; PostgreSQL's, with the same numbers and names and the same tables and
columns in its own types, in ``migrations/postgresql/`` (a test compares the two).

No ``from __future__ import annotations``: the named tuple's string annotations would become
``typing.ForwardRef``s, whose first ``compile()`` sets up the AST types (0.75 ms of every open).
"""

import functools
import os
import re
import sqlite3
from typing import NamedTuple

from reconciler.errors import StateError

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class Migration(NamedTuple):
    """One ``migrations/NNNN_name.sql`` file.

    A named tuple, not a dataclass: every open of a store imports this module, ``linkctl
    token`` too, and importing :mod:`dataclasses` (with :mod:`inspect`) would cost it 6 ms.
    """

    version: int
    name: str
    sql: str


DIALECTS = ("sqlite", "postgresql")


@functools.cache
def load_migrations(dialect: str = "sqlite") -> tuple[Migration, ...]:
    """The packaged migrations of a dialect in version order; versions 1, 2, 3, … without gaps (read once)."""
    from importlib import resources  # not at the top: opening a current store needs only the count

    if dialect not in DIALECTS:  # pragma: no cover - a caller bug
        raise ValueError(f"unknown store dialect {dialect!r}")
    folder = resources.files("reconciler.store").joinpath("migrations")
    if dialect != "sqlite":
        folder = folder.joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):  # pragma: no cover - a packaging bug
        raise StateError(f"the packaged store migrations are not numbered 1..N: {versions}")
    return tuple(found)


@functools.cache
def latest_version() -> int:
    """The schema version the packaged migrations reach, counted without reading them (cached)."""
    try:
        names = os.listdir(os.path.join(os.path.dirname(__file__), "migrations"))
    except OSError:  # not a plain directory (a zip): read them the general way
        return len(load_migrations())
    versions = sorted(int(m.group(1)) for m in map(_MIGRATION_NAME.match, names) if m)
    if versions != list(range(1, len(versions) + 1)):  # pragma: no cover - load_migrations says why
        return len(load_migrations())
    return len(versions)


def split_statements(sql: str) -> list[str]:
    """Split a migration script into statements (``sqlite3.complete_statement`` aware of triggers)."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statement = sql[start : index + 1].strip()
            if _strip_comments(statement):
                statements.append(statement)
            start = index + 1
    if _strip_comments(sql[start:]):
        raise StateError("a store migration ends with an incomplete SQL statement")
    return statements


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--")).strip(" \n;")
