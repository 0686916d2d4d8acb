"""Operations routes (``/healthz``, ``/readyz``, ``/metrics``): a placeholder srv-ops replaces."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """The operations routes (none yet)."""
    return []
