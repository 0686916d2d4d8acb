"""Comments as tree items, placed where sops 3.11 (yaml.v3 plus its YAML store) keeps them.

The rules in :func:`place_comments` were found by running the sops 3.11 binary; this module
knows PyYAML's node and token types only (the scanner is handed in by the reader).
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode


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


@dataclasses.dataclass
class _CommentLine:
    index: int  # of the "#"
    col: int
    line: int
    text: str
    inline: bool  # something other than blanks precedes it on its line
    header_of: int | None = None  # end index of the block scalar whose header line holds it
    after_indicator: bool = False  # follows a "-", "?" or "---": it cannot end a collection


def scan_comments(text: str, scanner: Any) -> list[_CommentLine]:
    """Every comment of the stream, in order: the gaps between tokens hold only blanks and
    comments; a block scalar's token also covers the comment on its header line.

    ``scanner`` is a fresh loader of ``text`` (the reader's, so both see the same tokens);
    it is disposed here."""
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


class Placement:
    """Comments assigned to nodes: ``before``/``after`` an item (key node or list element),
    ``first`` inside a collection, ``foot`` at a collection's end."""

    def __init__(self) -> None:
        self._spots: dict[tuple[str, int], list[tuple[int, str]]] = {}

    def add(self, spot: str, node: Node, comment: _CommentLine, order: int | None = None) -> None:
        """Put ``comment`` at ``spot`` of ``node`` (sorted by ``order``, its position by default)."""
        at = comment.index if order is None else order
        self._spots.setdefault((spot, id(node)), []).append((at, comment.text))

    def comments(self, spot: str, node: Node) -> list[Comment]:
        """The comments placed at ``spot`` of ``node``, in order."""
        return [Comment(text) for _, text in sorted(self._spots.get((spot, id(node)), ()))]


@dataclasses.dataclass
class _Where:
    """A node and the item (key node or list element) it belongs to; None for the root."""

    node: Node
    item: Node | None


_DROP = ("drop", None)


def place_comments(root: Node, lines: list[_CommentLine]) -> Placement:
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
    placed = Placement()
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

    def __init__(self, own: list[_CommentLine], placed: Placement) -> None:
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
