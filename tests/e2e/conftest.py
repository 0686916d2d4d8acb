"""Fixtures of the end-to-end tests (the runner lives in ``tests/support/cli.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Linkctl, make_linkctl


@pytest.fixture
def linkctl(isolated_env: dict[str, str], tmp_path: Path) -> Linkctl:
    """A linkctl runner whose HOME, XDG dirs, store and cwd are in tmp_path."""
    return make_linkctl(isolated_env, tmp_path)
