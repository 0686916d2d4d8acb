"""Links as declared: what validation produces and planning and applying consume."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.secrets import Secret

if TYPE_CHECKING:  # a position for errors found after validation; diagnostics sit beside errors
    from reconciler.diagnostics import Diagnostic


@dataclasses.dataclass(frozen=True)
class DesiredLink:
    """One link as the files declare it, with presets applied and secrets resolved."""

    name: str
    provider: str
    spec: Mapping[str, Any]  # effective values; secret fields hold {"$secret": field}
    secrets: Mapping[str, Secret]
    source_file: str
    source_line: int
    deletion_policy: str
    renamed_from: str | None
    sensitive_fields: frozenset[str]  # dotted spec paths whose values were SOPS-encrypted
    renamed_from_at: Diagnostic | None = None  # where renamedFrom is written (for errors found later)

    @property
    def pending_credentials(self) -> bool:
        """True while clientId is not declared yet."""
        return not self.spec.get("clientId")
