"""JSON that refuses duplicate keys (``json`` silently keeps the last one, like PyYAML)."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_NESTING = 64  # arrays/objects inside each other; the decoder recurses once per level
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _refuse_duplicates(items: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in items:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_nesting(text: str) -> None:
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise json.JSONDecodeError(f"nesting deeper than {MAX_NESTING} levels", text, match.start())
        elif token in "]}":
            depth -= 1


def loads(text: str) -> Any:
    """Parse JSON keeping key order; ``ValueError`` for a duplicate key, invalid JSON or deep nesting."""
    _check_nesting(text)
    return json.loads(text, object_pairs_hook=_refuse_duplicates)
