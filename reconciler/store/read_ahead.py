"""Links read together with their leases, kept briefly for the reads a keeper makes next.

A keeper reads each leased link and its client secret right after taking the lease. Both
stores read them in the lease transaction instead (one snapshot, one statement for the
chunk rather than two per link) and keep them here. Each link row is handed out once by
``get_link``, and its secrets answer ``read_secret``, for at most :data:`READ_AHEAD_SECONDS`;
the next lease replaces them all, and an apply through the same store drops them. Secrets
stay sealed here: they are decrypted on each read, as always.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["READ_AHEAD_SECONDS", "ReadAhead"]

READ_AHEAD_SECONDS = 1.0


@dataclasses.dataclass
class _Entry:
    link: tuple[Any, ...] | None  # the link's row until get_link took it; column 0 is its uid
    uid: str
    secrets: dict[str, bytes]  # field -> sealed value


class ReadAhead:
    """The leased links of one store (one thread), with their sealed secrets."""

    def __init__(self) -> None:
        """Nothing is kept until the first lease."""
        self._until = 0.0
        self._entries: dict[str, _Entry] = {}

    def remember(self, rows: Mapping[str, tuple[Sequence[Any], Mapping[str, bytes]]]) -> None:
        """Replace what is kept with these links: name -> (link row, sealed secrets by field)."""
        self._until = time.monotonic() + READ_AHEAD_SECONDS
        self._entries = {
            name: _Entry(tuple(link), str(link[0]), dict(secrets)) for name, (link, secrets) in rows.items()
        }

    def clear(self) -> None:
        """Forget everything (the store itself changed the links)."""
        self._entries = {}

    def _entry(self, name: str) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is not None and time.monotonic() >= self._until:
            self._entries = {}  # all were read together: all are as old
            return None
        return entry

    def take_link(self, name: str) -> tuple[Any, ...] | None:
        """The link's row read with its lease, once; ``None`` when it must be read again."""
        entry = self._entry(name)
        if entry is None or entry.link is None:
            return None
        row, entry.link = entry.link, None
        return row

    def sealed_secret(self, name: str, field: str) -> tuple[bool, tuple[str, bytes] | None]:
        """``(known, (link uid, sealed value) or None if the link has no such secret)``."""
        entry = self._entry(name)
        if entry is None:
            return False, None
        blob = entry.secrets.get(field)
        return True, None if blob is None else (entry.uid, blob)
