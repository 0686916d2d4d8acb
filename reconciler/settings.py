"""Settings: where the state lives and how it is unlocked, resolved once at the edge.

Passed explicitly (keyword-only) to the code that needs it; no module globals.

No ``from __future__ import annotations`` here: a named tuple's string annotations become
``typing.ForwardRef``s, and the first ``compile()`` of one sets up the AST types, 0.75 ms of
every ``linkctl token``.
"""

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Self

from reconciler.errors import ConfigError
from reconciler.secrets import Secret

DEFAULT_LOCK_TIMEOUT = 60.0
MAX_TIMEOUT_SECONDS = 86_400.0  # a day: longer is a typo (ms for s), and would park a cron job forever
MAX_COUNT = 1_000_000


def parse_number(text: str, *, maximum: float | None, integer: bool = False) -> float:
    """A finite number in [0, maximum] from a flag or variable; ``ValueError`` says what is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0, not {text[:40]!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum:.0f}, not {text[:40]!r}")
    if integer and not text.strip().isdigit():
        # Digits only, as argparse's int did: 1.0 and 1e3 are spellings a count never needs.
        raise ValueError(f"must be a whole number, not {text[:40]!r}")
    return value


def process_actor(env: Mapping[str, str]) -> str:
    """Who an audit event of this process names: ``$LINKCTL_ACTOR``, else ``user@host``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return env.get("LINKCTL_ACTOR") or f"{user}@{socket.gethostname()}"


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


class Settings(NamedTuple):
    """Everything environment-dependent that the core needs (immutable; ``_replace`` makes a copy).

    A named tuple, not a dataclass: every ``linkctl token`` resolves settings, and importing
    :mod:`dataclasses` (which imports :mod:`inspect`) is 6 ms of a 60 ms budget.
    """

    state_url: str
    state_key: Secret | None  # LINKCTL_STATE_KEY: base64 of 32 bytes (left out of the repr)
    state_key_file: Path  # LINKCTL_STATE_KEY_FILE or the default key path
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT

    def __repr__(self) -> str:
        return (
            f"Settings(state_url={self.state_url!r}, state_key_file={self.state_key_file!r},"
            f" lock_timeout={self.lock_timeout!r})"
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        state_url: str | None = None,
        lock_timeout: float | None = None,
    ) -> Self:
        """Resolve settings: flags first, then ``LINKCTL_*`` variables, then defaults."""
        url = state_url or env.get("LINKCTL_STATE") or f"sqlite:///{default_state_path(env)}"
        key_file = env.get("LINKCTL_STATE_KEY_FILE")
        timeout = lock_timeout
        if timeout is None:
            timeout = DEFAULT_LOCK_TIMEOUT
            if env.get("LINKCTL_LOCK_TIMEOUT") is not None:
                try:
                    timeout = parse_number(env["LINKCTL_LOCK_TIMEOUT"], maximum=MAX_TIMEOUT_SECONDS)
                except ValueError as exc:
                    raise ConfigError(
                        f"not a usable lock timeout: {exc}",
                        file="LINKCTL_LOCK_TIMEOUT",
                        hint="set it to a number of seconds (default 60) or unset it",
                    ) from None
        return cls(
            state_url=url,
            state_key=Secret(env["LINKCTL_STATE_KEY"]) if env.get("LINKCTL_STATE_KEY") else None,
            state_key_file=Path(key_file) if key_file else default_key_path(env),
            lock_timeout=timeout,
        )
