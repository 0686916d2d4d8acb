"""Fixtures for the keeper tests: the real SQLite store (with the lease mixin) in tmp_path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from reconciler.settings import Settings
from reconciler.store.base import Store
from reconciler.store.sqlite import SQLiteStore
from tests.support.fakes import FakeClock, RotatingProvider

LeasedStore = SQLiteStore  # leases are mixed in (SQLiteLeases)


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    """Settings whose sqlite file and key live under the isolated HOME."""
    return Settings.from_env(isolated_env)


@pytest.fixture
def open_store(settings: Settings) -> Iterator[Callable[[], Store]]:
    """Opens stores on the same file (closed at teardown; thread-safe to call)."""
    opened: list[Store] = []

    def factory() -> Store:
        store = LeasedStore.open(settings, notice=lambda _: None)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        with contextlib.suppress(Exception):  # a worker thread's store: closed by that thread
            store.close()


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider() -> RotatingProvider:
    return RotatingProvider()
