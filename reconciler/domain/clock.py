"""Time as the domain sees it: the clock type every layer takes, and the one ISO 8601 formatter.

Every printed or stored timestamp goes through :func:`iso_time`. Two spellings of UTC
are user-visible today and both stay: ``+00:00`` (keeper messages, ``linkctl token``'s
``expires_at``, the store's lock errors) and ``Z`` (``list``/``show``/``events`` JSON and
lock views), chosen by the explicit ``zulu`` option.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import overload

__all__ = ["Clock", "iso_time"]


# Where the current time comes from: ``time.time`` in production, a fake clock in tests.
# Every decision across processes ("due", "expired") compares times from one such clock.
Clock = Callable[[], float]


@overload
def iso_time(ts: float, *, zulu: bool = False) -> str: ...
@overload
def iso_time(ts: None, *, zulu: bool = False) -> None: ...
@overload
def iso_time(ts: float | None, *, zulu: bool = False) -> str | None: ...
def iso_time(ts: float | None, *, zulu: bool = False) -> str | None:
    """A timestamp as ISO 8601 UTC to the second (None stays None); ``zulu`` writes ``Z`` for ``+00:00``."""
    if ts is None:
        return None
    text = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if zulu else text
