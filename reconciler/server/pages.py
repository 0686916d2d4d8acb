"""The admin pages and the hosted OAuth callback: a placeholder srv-pages replaces."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """The page routes (none yet)."""
    return []
