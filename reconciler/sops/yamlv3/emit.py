"""Writing block-style YAML (and JSON) that both sops and :mod:`.read` read back identically."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

from reconciler.sops.yamlv3.comments import Comment
from reconciler.sops.yamlv3.read import YAML11_BOOLISH, YAMLError, format_time, resolve_plain

_PLAIN_FIRST_BAD = frozenset("-?:,[]{}#&*!|>'\"%@`")


def _plain_ok(text: str) -> bool:
    if not text or text != text.strip(" ") or not text.isprintable() or "\ufeff" in text:
        return False
    if text[0] in _PLAIN_FIRST_BAD or text.startswith("...") or text in YAML11_BOOLISH:
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    return isinstance(resolve_plain(text), str)


def _double_quoted(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable() or ch == "\ufeff":
            code = ord(ch)
            out.append(
                f"\\x{code:02X}" if code <= 0xFF else f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"
            )
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _literal_ok(text: str) -> bool:
    if "\n" not in text or text.startswith((" ", "\n")) or "\r" in text or "\ufeff" in text:
        return False
    return all(line.isprintable() for line in text.split("\n"))


def _literal(text: str, indent: int) -> str:
    if text.endswith("\n"):
        body = text[:-1]
        chomp = "+" if body.endswith("\n") else ""
    else:
        body, chomp = text, "-"
    pad = " " * indent
    lines = [pad + line if line else "" for line in body.split("\n")]
    return "|" + chomp + "\n" + "\n".join(lines)


def format_float(value: float) -> str:
    """A YAML float literal that reads back as the same float."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def _scalar_text(value: Any, block_indent: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, bytes):
        return "!!binary " + base64.b64encode(value).decode("ascii")
    if isinstance(value, str):
        if _literal_ok(value):
            return _literal(value, block_indent)
        return value if _plain_ok(value) else _double_quoted(value)
    raise YAMLError(f"cannot write a value of type {type(value).__name__}")


def _key_text(key: str) -> str:
    return key if _plain_ok(key) and len(key) < 1000 else _double_quoted(key)


def _has_items(value: dict[Any, Any] | list[Any]) -> bool:
    return any(not isinstance(k, Comment) for k in value)


def _emit(value: Any, col: int, step: int, out: list[str], first_prefix: str | None) -> None:
    """Emit a mapping or sequence with items; the first item's line starts with ``first_prefix``
    if given (a list element's dash). Comments it starts with go before that dash."""
    pad = " " * col
    items: Iterator[tuple[Any, Any]] = (
        iter(value.items()) if isinstance(value, dict) else ((None, v) for v in value)
    )
    # yaml.v3: inside a list element the indentation just skips "- "; everything else goes
    # to the next multiple of the indentation step.
    child_col = col + 2 if isinstance(value, list) else step * ((col + step) // step)
    first = True
    for key, child in items:
        comment = key if isinstance(key, Comment) else child if isinstance(child, Comment) else None
        if comment is not None:
            if first and first_prefix is not None:
                dash_col = len(first_prefix) - len(first_prefix.lstrip(" "))
                out.append(" " * dash_col + "#" + comment.text)
            else:
                out.append(pad + "#" + comment.text)
            continue
        lead = first_prefix if (first and first_prefix is not None) else pad
        first = False
        head = lead + (_key_text(key) + ":" if key is not None else "-")
        if isinstance(child, dict | list) and _has_items(child):
            if key is None:
                _emit(child, child_col, step, out, head + " ")
            else:
                out.append(head)
                _emit(child, child_col, step, out, None)
        elif isinstance(child, dict):
            out.append(head + " {}")  # sops drops the comments of a mapping without keys
        elif isinstance(child, list):
            out.append(head + " []")
            out.extend(pad + "#" + c.text for c in child)
        else:
            out.append(head + " " + _scalar_text(child, child_col))


def dump_yaml(documents: list[dict[Any, Any]], *, indent: int = 4) -> str:
    """Block-style YAML for one or more mapping documents (``---`` between documents);
    :class:`Comment` items are written as ``#text`` lines where sops writes them."""
    parts: list[str] = []
    for doc in documents:
        lines: list[str] = []
        if _has_items(doc):
            _emit(doc, 0, indent, lines, None)
        else:
            lines = ["#" + c.text for c in doc] + ["{}"]
        parts.append("\n".join(lines) + "\n")
    return "---\n".join(parts)


def dump_json(document: Any, *, indent: str | int = "\t") -> str:
    """JSON with the key order kept (tab indentation by default, like sops)."""
    return json.dumps(document, indent=indent, ensure_ascii=False) + "\n"
