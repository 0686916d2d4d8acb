"""Settings: resolved once, immutable, and never showing the state key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from reconciler.settings import DEFAULT_LOCK_TIMEOUT, Settings

KEY = base64.b64encode(bytes(range(32))).decode()


def test_settings_resolve_from_the_environment_and_hide_the_key(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOME": str(tmp_path), "LINKCTL_STATE_KEY": KEY})
    assert settings.state_url == f"sqlite:///{tmp_path}/.local/state/linkctl/state.db"
    assert settings.state_key is not None and settings.state_key.reveal() == KEY
    assert settings.state_key_file == tmp_path / ".config" / "linkctl" / "state.key"
    assert settings.lock_timeout == DEFAULT_LOCK_TIMEOUT
    assert KEY not in repr(settings) and "state_key=" not in repr(settings)
    assert "state_url=" in repr(settings) and "state_key_file=" in repr(settings)


def test_settings_are_immutable_and_copied_with_changes(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOME": str(tmp_path)})
    with pytest.raises(AttributeError):
        settings.state_url = "sqlite:///elsewhere.db"  # type: ignore[misc]
    moved = settings._replace(state_url="sqlite:///elsewhere.db")
    assert moved.state_url == "sqlite:///elsewhere.db" and settings.state_url != moved.state_url
    assert moved.state_key_file == settings.state_key_file
    assert moved == Settings("sqlite:///elsewhere.db", None, settings.state_key_file)
