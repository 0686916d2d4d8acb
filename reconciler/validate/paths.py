"""Reading a document's data by JSON path, and naming a path as plans name fields."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from reconciler.load import Document

MISSING = object()  # no value at the path (``None`` is a value)


def dotted(path: Sequence[str | int]) -> str:
    """``spec.scopes`` for ``("spec", "scopes", 0)``: the named part of a path, as plans name fields."""
    return ".".join(str(p) for p in itertools.takewhile(lambda p: isinstance(p, str), path))


def lookup(doc: Document, loc: Sequence[Any]) -> Any:
    """The value at ``loc`` in a document's data, or ``MISSING``."""
    value: Any = doc.data
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return value
