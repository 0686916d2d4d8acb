"""The PostgreSQL server of the tests: one fresh database per test run, one schema per store.

The server is the one on 127.0.0.1:5432 (user ``postgres``, trust auth); set
``LINKCTL_TEST_POSTGRES`` to another admin URL. The first caller in a process creates a
uniquely named database (dropped when the process exits); every :func:`fresh_url` is a new
schema in it, selected through libpq's ``options=-csearch_path=…``, so tests never see each
other's rows and no truncation is needed. A missing server skips locally and fails under
``CI=true`` (the skip policy of tests/conftest.py).
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
import urllib.parse

import psycopg

from tests.conftest import require

ADMIN_URL = os.environ.get("LINKCTL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
_LOCK = threading.Lock()
_DATABASE: dict[str, str] = {}


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def server_available() -> str | None:
    """None when the test server answers, else why not."""
    try:
        _admin().close()
    except psycopg.OperationalError as exc:
        return (str(exc).strip().splitlines() or ["unreachable"])[0]
    return None


def database_url() -> str:
    """The URL of this process's test database (created on first use; skip/fail without a server)."""
    with _LOCK:
        if "url" in _DATABASE:
            return _DATABASE["url"]
        reason = server_available()
        require(reason is None, f"PostgreSQL is not reachable at {ADMIN_URL} ({reason})")
        name = f"linkctl_test_{os.getpid()}_{secrets.token_hex(3)}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urllib.parse.urlsplit(ADMIN_URL)
        url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
        _DATABASE.update(url=url, name=name)
        atexit.register(_drop, name)
        return url


def _drop(name: str) -> None:
    from reconciler.store.postgres_conn import close_pools

    close_pools()
    try:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:  # the server went away: nothing left to clean here
        pass


def fresh_url() -> str:
    """The URL of a new, empty store: a fresh schema in the test database."""
    url = database_url()
    schema = f"s_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return url + "?" + urllib.parse.urlencode({"options": f"-csearch_path={schema}"})
