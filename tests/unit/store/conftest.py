"""Fixtures for the store tests: settings in tmp_path, a store factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import Store


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    """Default settings: sqlite file and key file under the isolated HOME."""
    return Settings.from_env(isolated_env)


@pytest.fixture
def notices() -> list[str]:
    """Collects what the store tells the user."""
    return []


@pytest.fixture
def open_(settings: Settings, notices: list[str]) -> Iterator[Callable[..., Store]]:
    """Open stores (closed at teardown); keyword arguments override settings fields."""
    opened: list[Store] = []

    def factory(**overrides: Any) -> Store:
        if isinstance(overrides.get("state_key"), str):
            overrides["state_key"] = Secret(overrides["state_key"])
        s = Settings(**{**settings.__dict__, **overrides}) if overrides else settings
        store = open_store(s, notice=notices.append)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_: Callable[..., Store]) -> Store:
    """A fresh store."""
    return open_()
