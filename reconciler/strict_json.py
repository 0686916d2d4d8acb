"""JSON that refuses duplicate keys (``json`` silently keeps the last one, like PyYAML)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_NESTING = 64  # arrays/objects inside each other; the decoder recurses once per level
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_KEY_END = re.compile(r"\s*:")
_STRING_OR_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?')


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(items: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in items:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _NotFinite(ValueError):
    pass


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NotFinite(literal)
    return value


def _refuse_constant(name: str) -> float:
    # NaN and Infinity are not JSON (RFC 8259 §6); Python's decoder accepts them by default.
    raise _NotFinite(name)


def _locate_literal(text: str, literal: str) -> int:
    """Offset of the first ``literal`` outside strings (0 when not found)."""
    for match in _STRING_OR_NUMBER.finditer(text):
        if match.group() == literal:
            return match.start()
    return text.find(literal) if literal in ("NaN", "Infinity", "-Infinity") else 0


def _locate_duplicate(text: str) -> json.JSONDecodeError | None:
    """The first repeated key in document order, as an error carrying its line and column."""
    # Only called on text the decoder accepted up to the duplicate, so a token scan is exact:
    # a string followed by ``:`` is a key of the innermost open object.
    open_objects: list[set[str] | None] = []
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token == "{":
            open_objects.append(set())
        elif token == "[":
            open_objects.append(None)
        elif token in "]}":
            if open_objects:
                open_objects.pop()
        elif open_objects and open_objects[-1] is not None and _KEY_END.match(text, match.end()):
            key = json.loads(token)
            if key in open_objects[-1]:
                return json.JSONDecodeError(f"duplicate key {key!r}", text, match.start())
            open_objects[-1].add(key)
    return None


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


def loads(text: str, *, allow_non_finite: bool = False) -> Any:
    """Parse JSON keeping key order; duplicate keys, bad JSON or deep nesting raise ``JSONDecodeError``.

    ``allow_non_finite`` reads NaN, Infinity and out-of-range numbers as Python does, for
    the SOPS reader: a YAML ``.inf`` kept through a JSON round trip is written that way.
    """
    _check_nesting(text)
    if allow_non_finite:
        try:
            return json.loads(text, object_pairs_hook=_refuse_duplicates)
        except _DuplicateKey as exc:
            raise _located_duplicate(text, exc.args[0]) from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_float=_finite_float,
            parse_constant=_refuse_constant,
        )
    except _NotFinite as exc:
        literal = exc.args[0]
        problem = f"{literal} is not a finite number" if literal[-1].isdigit() else f"{literal} is not JSON"
        raise json.JSONDecodeError(problem, text, _locate_literal(text, literal)) from None
    except _DuplicateKey as exc:
        raise _located_duplicate(text, exc.args[0]) from None


def _located_duplicate(text: str, key: str) -> ValueError:
    located = _locate_duplicate(text)
    return located if located is not None else ValueError(f"duplicate key {key!r}")
