"""Declared state: load -> validate -> remember clean parses, and the stored state a plan is read against.

The parse cache is written only here, after validation, so no caller can forget it.
:class:`ReadAhead` reads the store while the parse-ahead child parses (a measured
speed-up of ``plan``): heavy modules are imported inside functions for the same reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.store.base import Store, StoredLink
    from reconciler.validate import ValidationResult


def import_core() -> None:
    """Import the modules needed after loading (planner, store) while files are parsed."""
    import reconciler.plan
    import reconciler.store.sqlite  # noqa: F401


def declared_state(
    paths: Sequence[str],
    *,
    env: Mapping[str, str],
    ignore_mac: bool = False,
    meanwhile: Callable[[], object] | None = import_core,
    secret_values: bool = True,
) -> ValidationResult:
    """Load and validate ``paths``; remember the parses that validated clean (the parse cache).

    The validator's models are imported while files are parsed, then ``meanwhile`` runs.
    ``secret_values=False`` is for a caller that reads no secret (``validate``): SOPS files
    that opened before need not be opened again, and links may hold ``ENC[…]`` stand-ins.
    """
    from reconciler.validate import declared_state as load_and_validate

    return load_and_validate(
        paths, env=env, ignore_mac=ignore_mac, meanwhile=meanwhile, secret_values=secret_values
    )


@dataclasses.dataclass(frozen=True)
class StoredState:
    """What a plan is computed against: the store's serial, recorded Instance and links."""

    serial: int
    links: list[StoredLink]
    instance: str | None = None

    @classmethod
    def read(cls, store: Store) -> StoredState:
        """Serial first: an apply in between then makes the plan stale, never wrong."""
        serial = store.state_serial()
        return cls(serial, store.list_links(), store.instance_name())


class ReadAhead:
    """``meanwhile`` work for plan: import the core, then read the store if that writes nothing.

    ``ready_store`` returns the store when it opens without writing, else ``None``.
    """

    def __init__(self, ready_store: Callable[[], Store | None]) -> None:
        self._ready_store = ready_store
        self.state: StoredState | None = None

    def __call__(self) -> None:
        """Run in the parent while the parse-ahead child parses."""
        import_core()
        store = self._ready_store()
        if store is None:
            return  # not there yet, or broken: opened (and reported) after validation
        try:
            self.state = StoredState.read(store)
        except Exception:  # the read after validation raises it where it belongs
            self.state = None
