"""Links as declared: what validation produces and planning and applying consume."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.secrets import Secret

if TYPE_CHECKING:  # a position for errors found after validation; diagnostics sit beside errors
    from reconciler.diagnostics import Diagnostic


CLIENT_CREDENTIALS = "client_credentials"


def uses_client_credentials(spec: Mapping[str, Any]) -> bool:
    """Whether a link's spec obtains tokens without a human (the client-credentials grant)."""
    return spec.get("grant") == CLIENT_CREDENTIALS


def spec_json_uses_client_credentials(spec_json: str) -> bool:
    """:func:`uses_client_credentials` of a spec as the store keeps it (JSON text)."""
    # Every lease write asks this of each row; a spec that does not even contain the word
    # (nearly all of them) needs no JSON parse. The store writes specs with json.dumps,
    # which never escapes these ASCII letters.
    return CLIENT_CREDENTIALS in spec_json and uses_client_credentials(json.loads(spec_json))


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
