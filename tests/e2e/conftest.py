"""Fixtures of the end-to-end tests (helpers live in ``_linkctl.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _linkctl import Linkctl, make_linkctl


@pytest.fixture
def linkctl(isolated_env: dict[str, str], tmp_path: Path) -> Linkctl:
    """A linkctl runner whose HOME, XDG dirs, store and cwd are in tmp_path."""
    return make_linkctl(isolated_env, tmp_path)
