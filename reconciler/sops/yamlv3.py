"""YAML/JSON parsing and emitting the way sops (Go yaml.v3) sees documents.

Owns scalar resolution (YAML 1.2 core as yaml.v3 does it: ``yes``/``on`` are strings,
``0755`` is octal, plain timestamps become :class:`datetime.datetime`), order-keeping
mappings with duplicate and non-string keys refused, and a small block-style emitter
whose output both sops and this module read back identically. Used by
:mod:`reconciler.sops.tree` and :mod:`reconciler.sops.config`.

Comments (``load_all(..., comments=True)``) become :class:`Comment` items placed where sops 3.11
(yaml.v3 plus its YAML store) puts them: a key ``Comment`` with a ``None`` value in mappings, a
``Comment`` element in lists. The placement rules are in :func:`_place_comments`; they were
taken from the sops 3.11 binary's output (see docs/sops.md, "Comments").
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from reconciler import strict_json

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


class Comment:
    """One YAML comment line as a tree item: ``text`` is what follows ``#`` (leading space kept).

    Compared by identity, so any number of comments can be keys of one mapping.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Comment({self.text!r})"


def strip_comments(value: Any) -> Any:
    """The same tree without :class:`Comment` items (a new tree; leaves are shared)."""
    if isinstance(value, dict):
        return {k: strip_comments(v) for k, v in value.items() if not isinstance(k, Comment)}
    if isinstance(value, list):
        return [strip_comments(v) for v in value if not isinstance(v, Comment)]
    return value


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


def _construct(node: Node, active: set[int], where: _Placement | None = None) -> Any:
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
        pool = _scan_comments(text) if comments else []
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
            where = _place_comments(node, pool[:cut])
            del pool[:cut]
        docs.append(_construct(node, set(), where))
    return docs


# -- comments ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _CommentLine:
    index: int  # of the "#"
    col: int
    line: int
    text: str
    inline: bool  # something other than blanks precedes it on its line
    header_of: int | None = None  # end index of the block scalar whose header line holds it
    after_indicator: bool = False  # follows a "-", "?" or "---": it cannot end a collection


def _scan_comments(text: str) -> list[_CommentLine]:
    """Every comment of the stream, in order: the gaps between tokens hold only blanks and
    comments; a block scalar's token also covers the comment on its header line."""
    scanner = _Loader(text)
    spans: list[tuple[int, int, bool]] = []
    headers: list[tuple[int, int]] = []  # (index of '#', end of the block scalar)
    try:
        while scanner.check_token():
            token = scanner.get_token()
            assert token is not None
            start, end = token.start_mark.index, token.end_mark.index
            if end > start:
                indicator = isinstance(token, yaml.BlockEntryToken | yaml.KeyToken | yaml.DocumentStartToken)
                spans.append((start, end, indicator))
            if isinstance(token, yaml.ScalarToken) and token.style in ("|", ">"):
                hash_at = text.find("#", start, _eol(text, start))
                if hash_at >= 0:
                    headers.append((hash_at, end))
    finally:
        scanner.dispose()
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", text)]
    found: list[_CommentLine] = []

    def add(hash_at: int, header_of: int | None, indicator: bool = False) -> int:
        eol = _eol(text, hash_at)
        line = bisect.bisect_right(starts, hash_at) - 1
        inline = bool(text[starts[line] : hash_at].strip(" \t\ufeff"))
        found.append(
            _CommentLine(
                hash_at, hash_at - starts[line], line, text[hash_at + 1 : eol], inline, header_of, indicator
            )
        )
        return eol

    position, indicator = 0, False
    for start, end, is_indicator in [*sorted(spans), (len(text), len(text), False)]:
        while position < start:
            hash_at = text.find("#", position, start)
            if hash_at < 0:
                break
            position = add(hash_at, None, indicator)
        position, indicator = max(position, end), is_indicator
    for hash_at, end in headers:
        add(hash_at, end)
    found.sort(key=lambda c: c.index)
    return found


def _eol(text: str, start: int) -> int:
    ends = [i for i in (text.find("\n", start), text.find("\r", start)) if i >= 0]
    return min(ends) if ends else len(text)


class _Placement:
    """Comments assigned to nodes: ``before``/``after`` an item (key node or list element),
    ``first`` inside a collection, ``foot`` at a collection's end."""

    def __init__(self) -> None:
        self._spots: dict[tuple[str, int], list[tuple[int, str]]] = {}

    def add(self, spot: str, node: Node, comment: _CommentLine, order: int | None = None) -> None:
        at = comment.index if order is None else order
        self._spots.setdefault((spot, id(node)), []).append((at, comment.text))

    def comments(self, spot: str, node: Node) -> list[Comment]:
        return [Comment(text) for _, text in sorted(self._spots.get((spot, id(node)), ()))]


@dataclasses.dataclass
class _Where:
    """A node and the item (key node or list element) it belongs to; None for the root."""

    node: Node
    item: Node | None


_DROP = ("drop", None)


def _place_comments(root: Node, lines: list[_CommentLine]) -> _Placement:
    """Assign one document's comments the way sops 3.11 does (found by running it).

    * A comment on its own line goes before the next key or list element, except when it
      follows the end of a block collection and is indented deeper than that collection's
      parent: then it ends that (deepest such) collection. Once a comment goes to a shallower
      level, the comments after it (up to the next item) cannot go deeper again.
      Comments between a list element's dash and its mapping or list go first inside it.
    * A comment after content on the same line goes with the last node ending on that line:
      before the key or element for a scalar (or a key whose value starts on the next line,
      or a block scalar's header) and for a flow collection that is a list element; first
      inside a flow collection that is a mapping value (even an empty list); nowhere for an
      empty flow map. With no node ending on its line (``- # c``, ``--- # c``) it counts as
      on its own line.

    Comments a list element's mapping or list starts with are written before its dash
    (:func:`dump_yaml`), as sops does, and are read back as comments of the outer list.
    """
    placed = _Placement()
    context: list[_Where] = []
    _contexts(root, None, context, set())
    ends_on_line: dict[int, list[_Where]] = {}
    starts_here: dict[int, list[_Where]] = {}
    by_end: dict[int, _Where] = {}
    for where in context:
        node = where.node
        if isinstance(node, MappingNode | SequenceNode) and not node.flow_style:
            # A block collection "ends" where the next token starts; one whose anchor or tag
            # stands on an earlier line than its first item takes that line's comment.
            if node.value and node.start_mark.line < _first_item(node).start_mark.line:
                starts_here.setdefault(node.start_mark.line, []).append(where)
            continue
        by_end.setdefault(where.node.end_mark.index, where)
        ends_on_line.setdefault(where.node.end_mark.line, []).append(where)
    own: list[_CommentLine] = []
    for c in lines:
        target = _inline_target(c, ends_on_line, starts_here, by_end) if c.inline else None
        if target is None:
            own.append(c)
        elif target is not _DROP:
            spot, to = target
            if to is None:
                continue
            if spot == "first" and not getattr(to, "flow_style", True):
                # "key: &anchor # c": after the comments above the first key (sops's order)
                first = _first_item(to)
                placed.add("before", first, c, order=first.start_mark.index)
            else:
                placed.add(spot, to, c)
    _Cursor(own, placed).visit(root, -1, 1 << 62, set())
    return placed


def _contexts(node: Node, item: Node | None, out: list[_Where], seen: set[int]) -> None:
    out.append(_Where(node, item))
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            out.append(_Where(key_node, key_node))
            _contexts(value_node, key_node, out, seen)
    elif isinstance(node, SequenceNode):
        for element in node.value:
            _contexts(element, element, out, seen)


def _first_item(node: Node) -> Node:
    first: Node = node.value[0][0] if isinstance(node, MappingNode) else node.value[0]
    return first


def _inline_target(
    c: _CommentLine,
    ends_on_line: dict[int, list[_Where]],
    starts_here: dict[int, list[_Where]],
    by_end: dict[int, _Where],
) -> tuple[str, Node | None] | None:
    if c.header_of is not None:
        where: _Where | None = by_end.get(c.header_of)
    else:
        candidates = [(w.node.end_mark.index, w) for w in ends_on_line.get(c.line, ())]
        candidates += [(w.node.start_mark.index, w) for w in starts_here.get(c.line, ())]
        where = max(
            ((at, w) for at, w in candidates if at <= c.index), key=lambda p: p[0], default=(0, None)
        )[1]
    if where is None or where.item is None:
        return None
    node = where.node
    if isinstance(node, MappingNode | SequenceNode) and where.item is not node:
        # a collection that is a mapping value (sops drops it in a flow mapping without keys)
        return ("first", node) if node.value or isinstance(node, SequenceNode) else _DROP
    return ("before", where.item)


class _Cursor:
    """Walks a document in order, handing out the comments that stand on their own line."""

    def __init__(self, own: list[_CommentLine], placed: _Placement) -> None:
        self.own = own
        self.pos = 0
        self.placed = placed

    def visit(self, node: Node, parent_col: int, limit: int, seen: set[int]) -> None:
        if id(node) in seen or not isinstance(node, MappingNode | SequenceNode):
            return
        seen.add(id(node))
        pairs = node.value if isinstance(node, MappingNode) else [(v, v) for v in node.value]
        col = node.start_mark.column
        for i, (item, value) in enumerate(pairs):
            while self.pos < len(self.own) and self.own[self.pos].index < item.start_mark.index:
                c = self.own[self.pos]
                if c.after_indicator and item is value and isinstance(value, MappingNode | SequenceNode):
                    self.placed.add("first", value, c)  # "- # c" / "-\n  # c" before a collection
                else:
                    self.placed.add("before", item, c)
                self.pos += 1
            following = pairs[i + 1][0].start_mark.index if i + 1 < len(pairs) else limit
            self.visit(value, col, following, seen)
        own = self.own
        if node.flow_style and not node.value and isinstance(node, MappingNode):
            while self.pos < len(own) and own[self.pos].index < node.end_mark.index:
                self.pos += 1  # sops loses comments inside "{ }" when it reads them
            return
        while self.pos < len(own) and (
            own[self.pos].index < node.end_mark.index
            if node.flow_style
            else own[self.pos].index < limit
            and own[self.pos].col > parent_col
            and not own[self.pos].after_indicator
        ):
            self.placed.add("foot", node, own[self.pos])
            self.pos += 1


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "invalid YAML"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_json(text: str) -> Any:
    """Parse JSON keeping key order; duplicate keys are an error."""

    try:
        return strict_json.loads(text)
    except json.JSONDecodeError as exc:
        raise YAMLError(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # a duplicate key
        raise YAMLError(str(exc)) from None


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
