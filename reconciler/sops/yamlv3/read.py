"""Reading YAML and JSON as sops (Go yaml.v3) does: scalar resolution, timestamps, documents."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from reconciler import strict_json
from reconciler.sops.yamlv3.comments import Placement, place_comments, scan_comments

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
YAML11_BOOLISH = frozenset(
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


def _construct(node: Node, active: set[int], where: Placement | None = None) -> Any:
    if isinstance(node, ScalarNode):
        return _scalar(node)
    key = id(node)
    if key in active:
        raise YAMLError(f"line {node.start_mark.line + 1}: recursive alias")
    active.add(key)
    try:
        if isinstance(node, SequenceNode):
            items: list[Any] = where.comments("first", node) if where else []
            for item in node.value:
                if where:
                    items += where.comments("before", item)
                items.append(_construct(item, active, where))
                if where:
                    items += where.comments("after", item)
            if where:
                items += where.comments("foot", node)
            return items
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            if where:
                out.update(dict.fromkeys(where.comments("first", node)))
            for key_node, value_node in node.value:
                if where:
                    out.update(dict.fromkeys(where.comments("before", key_node)))
                k = _construct(key_node, active)
                if not isinstance(k, str):
                    raise YAMLError(
                        f"line {key_node.start_mark.line + 1}: non-string key (sops refuses: "
                        "'Tree contains a non-string key')"
                    )
                if k in out:
                    raise YAMLError(f"line {key_node.start_mark.line + 1}: duplicate key {k!r}")
                out[k] = _construct(value_node, active, where)
                if where:
                    out.update(dict.fromkeys(where.comments("after", key_node)))
            if where:
                out.update(dict.fromkeys(where.comments("foot", node)))
            return out
    finally:
        active.discard(key)
    raise YAMLError("unexpected YAML node")  # pragma: no cover


def load_all(text: str, *, comments: bool = False) -> list[Any]:
    """Parse every document of a YAML stream into plain Python trees.

    With ``comments=True`` the trees also hold :class:`Comment` items where sops keeps them.
    """
    loader = _Loader(text)
    nodes: list[Node | None] = []
    try:
        while loader.check_node():
            nodes.append(loader.get_node())
        pool = scan_comments(text, _Loader(text)) if comments else []
    except yaml.YAMLError as exc:
        raise YAMLError(_yaml_error_text(exc)) from None
    finally:
        loader.dispose()
    docs: list[Any] = []
    last = max((i for i, n in enumerate(nodes) if n is not None), default=-1)
    for index, node in enumerate(nodes):
        if node is None:
            docs.append(None)
            continue
        where = None
        if comments:
            # A block document's end mark is the next document's start (after its comments).
            cut = len(pool) if index == last else sum(1 for c in pool if c.index < node.end_mark.index)
            where = place_comments(node, pool[:cut])
            del pool[:cut]
        docs.append(_construct(node, set(), where))
    return docs


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "invalid YAML"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_json(text: str) -> Any:
    """Parse JSON keeping key order; duplicate keys are an error."""

    try:
        return strict_json.loads(text, allow_non_finite=True)
    except json.JSONDecodeError as exc:
        raise YAMLError(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # a duplicate key
        raise YAMLError(str(exc)) from None
