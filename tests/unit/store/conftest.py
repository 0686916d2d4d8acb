"""Fixtures for the store tests: settings in tmp_path, a store factory.

Here ``store_backend`` is SQLite; the contract suite (contract/conftest.py) overrides it
and ``settings`` to run its tests once per backend through the same ``open_``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store.base import Store
from tests.support.stores import BACKENDS, StoreBackend


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    """Default settings: sqlite file and key file under the isolated HOME."""
    return Settings.from_env(isolated_env)


@pytest.fixture
def store_backend() -> StoreBackend:
    """The backend the store tests open (SQLite: these tests look at its files)."""
    return BACKENDS["sqlite"]


@pytest.fixture
def notices() -> list[str]:
    """Collects what the store tells the user."""
    return []


@pytest.fixture
def open_(
    settings: Settings, notices: list[str], store_backend: StoreBackend
) -> Iterator[Callable[..., Store]]:
    """Open stores (closed at teardown); keyword arguments override settings fields."""
    opened: list[Store] = []

    def factory(**overrides: Any) -> Store:
        if isinstance(overrides.get("state_key"), str):
            overrides["state_key"] = Secret(overrides["state_key"])
        s = settings._replace(**overrides) if overrides else settings
        store = store_backend.open(s, notice=notices.append)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_: Callable[..., Store]) -> Store:
    """A fresh store."""
    return open_()
