"""The store contract suite runs once per backend of ``tests.support.stores.BACKENDS``.

``store_backend`` is that parameter; ``settings`` here names a fresh store of the backend,
so the store fixtures of tests/unit/store/conftest.py (``open_``, ``store``) open it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.settings import Settings
from tests.support.fakes import FakeClock
from tests.support.stores import BACKENDS, StoreBackend


@pytest.fixture(params=sorted(BACKENDS))
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    """One backend of the contract suite."""
    return BACKENDS[request.param]


@pytest.fixture
def settings(isolated_env: dict[str, str], store_backend: StoreBackend, tmp_path: Path) -> Settings:
    """Settings of a fresh store of ``store_backend`` (the key file under the isolated HOME)."""
    return Settings.from_env(isolated_env)._replace(state_url=store_backend.make_url(tmp_path))


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()
