"""JSON that refuses duplicate keys (``json`` silently keeps the last one, like PyYAML)."""

from __future__ import annotations

import json
from typing import Any


def _refuse_duplicates(items: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in items:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def loads(text: str) -> Any:
    """Parse JSON keeping key order; ``ValueError`` for a duplicate key or invalid JSON."""
    return json.loads(text, object_pairs_hook=_refuse_duplicates)
