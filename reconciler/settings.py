"""Settings: where the state lives and how it is unlocked, resolved once at the edge.

Passed explicitly (keyword-only) to the code that needs it; no module globals.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from reconciler.secrets import Secret

DEFAULT_LOCK_TIMEOUT = 60.0


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / fallback


def default_state_path(env: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/linkctl/state.db`` (``~/.local/state/linkctl/state.db``)."""
    return _xdg(env, "XDG_STATE_HOME", ".local/state") / "linkctl" / "state.db"


def default_key_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/linkctl/state.key`` (``~/.config/linkctl/state.key``)."""
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "linkctl" / "state.key"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything environment-dependent that the core needs."""

    state_url: str
    state_key: Secret | None = dataclasses.field(repr=False)  # LINKCTL_STATE_KEY: base64 of 32 bytes
    state_key_file: Path  # LINKCTL_STATE_KEY_FILE or the default key path
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        state_url: str | None = None,
        lock_timeout: float | None = None,
    ) -> Settings:
        """Resolve settings: flags first, then ``LINKCTL_*`` variables, then defaults."""
        url = state_url or env.get("LINKCTL_STATE") or f"sqlite:///{default_state_path(env)}"
        key_file = env.get("LINKCTL_STATE_KEY_FILE")
        timeout = lock_timeout
        if timeout is None:
            timeout = float(env.get("LINKCTL_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
        return cls(
            state_url=url,
            state_key=Secret(env["LINKCTL_STATE_KEY"]) if env.get("LINKCTL_STATE_KEY") else None,
            state_key_file=Path(key_file) if key_file else default_key_path(env),
            lock_timeout=timeout,
        )
