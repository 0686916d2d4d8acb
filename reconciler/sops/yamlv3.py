"""YAML/JSON parsing and emitting the way sops (Go yaml.v3) sees documents.

Owns scalar resolution (YAML 1.2 core as yaml.v3 does it: ``yes``/``on`` are strings,
``0755`` is octal, plain timestamps become :class:`datetime.datetime`), order-keeping
mappings with duplicate and non-string keys refused, and a small block-style emitter
whose output both sops and this module read back identically. Used by
:mod:`reconciler.sops.tree` and :mod:`reconciler.sops.config`. Comments are not kept.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

_PLAIN = "tag:linkctl.dev,2026:plain"
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE = frozenset(("true", "True", "TRUE"))
_FALSE = frozenset(("false", "False", "FALSE"))
_SPECIAL_FLOATS = {
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
}  # fmt: skip
_INT_RE = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_TS_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})"
    r"| (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d+))?)?"
)
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
# YAML 1.1 booleans: yaml.v3 still quotes these on output so older readers stay correct.
_YAML11_BOOLISH = frozenset(
    ["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"]
)


class YAMLError(ValueError):
    """A document cannot be parsed the way sops would; the message says why (never a value)."""


def parse_timestamp(text: str) -> dt.datetime | None:
    """A yaml.v3 timestamp (4-digit year; date, RFC3339 or space-separated UTC form), else None."""
    m = _TS_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    try:
        if m[4] is not None:
            tz = dt.UTC if m[8] == "Z" else _offset(m[8])
            return dt.datetime(year, month, day, int(m[4]), int(m[5]), int(m[6]), _micros(m[7]), tzinfo=tz)
        if m[9] is not None:
            return dt.datetime(
                year, month, day, int(m[9]), int(m[10]), int(m[11]), _micros(m[12]), tzinfo=dt.UTC
            )
        return dt.datetime(year, month, day, tzinfo=dt.UTC)
    except ValueError:
        return None


def _offset(text: str) -> dt.timezone:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.UTC if not delta else dt.timezone(sign * delta)


def _micros(frac: str | None) -> int:
    return int((frac or "0")[:6].ljust(6, "0"))


def format_time(value: dt.datetime) -> str:
    """Go ``time.MarshalText`` (RFC3339Nano): trailing fractional zeros dropped, ``Z`` for UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset() or dt.timedelta(0)
    if not offset:
        return text + "Z"
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{text}{sign}{total // 60:02d}:{total % 60:02d}"


def resolve_plain(text: str) -> Any:
    """Resolve a plain (unquoted) scalar exactly as yaml.v3 does."""
    if text in _NULLS:
        return None
    first = text[0]
    if first in "tTfF":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        return text
    if first == "." or first in "+-":
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
    elif not first.isdigit() or not first.isascii():
        return text
    if first.isdigit():
        ts = parse_timestamp(text)
        if ts is not None:
            return ts
    plain = text.replace("_", "")
    m = _INT_RE.fullmatch(plain)
    if m is not None:
        digits = m[2]
        if len(digits) > 1 and digits[0] == "0" and digits[1] in "xXoObB":
            value = int(digits[2:], {"x": 16, "o": 8, "b": 2}[digits[1].lower()])
        elif len(digits) > 1 and digits[0] == "0":
            value = int(digits, 8)
        else:
            value = int(digits)
        if m[1] == "-":
            value = -value
        if INT64_MIN <= value <= UINT64_MAX:
            return value
    if _FLOAT_RE.fullmatch(plain):
        return float(plain)
    return text


class _Resolver(BaseResolver):
    """Tags plain scalars for :func:`resolve_plain`; everything quoted is a string."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR
        if kind is SequenceNode:
            return _SEQ
        return _MAP


if yaml.__with_libyaml__:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _Loader(CParser, _Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Resolver.__init__(self)

else:  # pragma: no cover - pure-Python fallback
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, Composer, _Resolver):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _Resolver.__init__(self)


def _scalar(node: ScalarNode) -> Any:
    tag = node.tag
    value: str = node.value
    if tag == _PLAIN:
        return resolve_plain(value)
    if tag == _STR or not tag.startswith("tag:yaml.org,2002:"):
        return value
    short = tag[len("tag:yaml.org,2002:") :]
    if short == "binary":
        try:
            raw = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise YAMLError(f"line {node.start_mark.line + 1}: invalid !!binary value") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    resolved = resolve_plain(value) if value else None
    expect: dict[str, type | tuple[type, ...]] = {
        "int": int,
        "float": (int, float),
        "bool": bool,
        "null": type(None),
        "timestamp": dt.datetime,
    }
    if (
        short in expect
        and isinstance(resolved, expect[short])
        and not (short == "int" and isinstance(resolved, bool))
    ):
        return float(cast(float, resolved)) if short == "float" else resolved
    if short in expect:
        raise YAMLError(f"line {node.start_mark.line + 1}: value cannot be decoded as !!{short}")
    return value


def _construct(node: Node, active: set[int]) -> Any:
    if isinstance(node, ScalarNode):
        return _scalar(node)
    key = id(node)
    if key in active:
        raise YAMLError(f"line {node.start_mark.line + 1}: recursive alias")
    active.add(key)
    try:
        if isinstance(node, SequenceNode):
            return [_construct(item, active) for item in node.value]
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                k = _construct(key_node, active)
                if not isinstance(k, str):
                    raise YAMLError(
                        f"line {key_node.start_mark.line + 1}: non-string key (sops refuses: "
                        "'Tree contains a non-string key')"
                    )
                if k in out:
                    raise YAMLError(f"line {key_node.start_mark.line + 1}: duplicate key {k!r}")
                out[k] = _construct(value_node, active)
            return out
    finally:
        active.discard(key)
    raise YAMLError("unexpected YAML node")  # pragma: no cover


def load_all(text: str) -> list[Any]:
    """Parse every document of a YAML stream into plain Python trees."""
    loader = _Loader(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            docs.append(None if node is None else _construct(node, set()))
    except yaml.YAMLError as exc:
        raise YAMLError(_yaml_error_text(exc)) from None
    finally:
        loader.dispose()
    return docs


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "invalid YAML"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_json(text: str) -> Any:
    """Parse JSON keeping key order; duplicate keys are an error."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise YAMLError(f"duplicate key {k!r}")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise YAMLError(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


# -- emitting ---------------------------------------------------------------------------------

_PLAIN_FIRST_BAD = frozenset("-?:,[]{}#&*!|>'\"%@`")


def _plain_ok(text: str) -> bool:
    if not text or text != text.strip(" ") or not text.isprintable() or "\ufeff" in text:
        return False
    if text[0] in _PLAIN_FIRST_BAD or text.startswith("...") or text in _YAML11_BOOLISH:
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


def _emit(value: Any, col: int, step: int, out: list[str], first_prefix: str | None) -> None:
    """Emit a non-empty mapping or sequence; the first line starts with ``first_prefix`` if given."""
    pad = " " * col
    items: Iterator[tuple[str | None, Any]] = (
        iter(value.items()) if isinstance(value, dict) else ((None, v) for v in value)
    )
    first = True
    for key, child in items:
        lead = first_prefix if (first and first_prefix is not None) else pad
        first = False
        head = lead + (_key_text(key) + ":" if key is not None else "-")
        child_col = col + step if key is not None else col + 2
        if isinstance(child, dict | list) and child:
            if key is None:
                _emit(child, col + 2, step, out, head + " ")
            else:
                out.append(head)
                _emit(child, col + step, step, out, None)
        elif isinstance(child, dict):
            out.append(head + " {}")
        elif isinstance(child, list):
            out.append(head + " []")
        else:
            out.append(head + " " + _scalar_text(child, child_col))


def dump_yaml(documents: list[dict[str, Any]], *, indent: int = 4) -> str:
    """Block-style YAML for one or more mapping documents (``---`` between documents)."""
    parts: list[str] = []
    for doc in documents:
        if not doc:
            parts.append("{}\n")
            continue
        lines: list[str] = []
        _emit(doc, 0, indent, lines, None)
        parts.append("\n".join(lines) + "\n")
    return "---\n".join(parts)


def dump_json(document: Any, *, indent: str | int = "\t") -> str:
    """JSON with the key order kept (tab indentation by default, like sops)."""
    return json.dumps(document, indent=indent, ensure_ascii=False) + "\n"
