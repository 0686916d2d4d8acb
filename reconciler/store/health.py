"""Store health: is the backend reachable, and is its schema the one this linkctl knows?

:class:`StoreHealth` is part of the :class:`~reconciler.store.base.Store` interface;
``GET /readyz`` of ``linkctl serve`` asks it (through :mod:`reconciler.server.ops`).
"""

from __future__ import annotations

import abc
import dataclasses

__all__ = ["SchemaStatus", "StoreHealth"]


@dataclasses.dataclass(frozen=True)
class SchemaStatus:
    """The schema version a store is at, and the one this linkctl's migrations reach."""

    version: int
    known: int

    @property
    def current(self) -> bool:
        """True when the store is exactly at this linkctl's schema."""
        return self.version == self.known

    def problem(self) -> str | None:
        """Why the store is not ready (None when current), in words with the fix."""
        if self.version > self.known:
            return (
                f"the store's schema version {self.version} is newer than this linkctl understands"
                f" ({self.known}): upgrade linkctl"
            )
        if self.version < self.known:
            return (
                f"the store's schema version {self.version} is older than this linkctl's ({self.known}):"
                " run `linkctl apply` (or restart linkctl serve) to migrate it"
            )
        return None


class StoreHealth(abc.ABC):
    """Readiness questions every backend answers with one cheap round trip."""

    @abc.abstractmethod
    def schema_status(self) -> SchemaStatus:
        """Read the schema version now (``StateError`` when the store cannot be reached)."""
