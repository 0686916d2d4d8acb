"""YAML 1.2 reading that keeps positions: the core-schema resolver, libyaml loader and constructor.

Only this module knows PyYAML's node types. The resolver reads YAML 1.2 core (``on``
stays text); the constructor builds plain values from composed nodes itself, refusing
duplicate keys, merge keys, custom tags, alias bombs and YAML 1.1 look-alikes, and
:class:`SourceText` composes a file again only when a diagnostic needs a position.
"""

from __future__ import annotations

import functools
import re
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.diagnostics import ERROR, Diagnostic

MAX_NESTING = 64  # mappings/lists inside each other; real documents need fewer than 10
SECRET_KEYS = frozenset({"clientSecret"})  # values never repeated in diagnostics

try:  # libyaml's parser+composer is several times faster than the pure-Python one
    from yaml.cyaml import CParser as _CParser  # type: ignore[attr-defined]

    _LIBYAML = True
    _Bases: tuple[Any, ...] = (_CParser, yaml.resolver.BaseResolver)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _LIBYAML = False
    _Bases = (
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        yaml.resolver.BaseResolver,
    )


class _CoreResolver(yaml.resolver.BaseResolver):
    """YAML 1.2 core schema: only true/false are booleans, no sexagesimals, no dates."""


for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
):
    _CoreResolver.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_CoreResolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_MAYBE_NOT_TEXT = frozenset("tTfF~nN-+.0123456789")
_MAYBE_YAML11 = frozenset("yYnNoOtTfF~-+.0123456789")
_generic_resolve = _CoreResolver.resolve


_NOT_TEXT = re.compile(
    r"(?:true|True|TRUE|false|False|FALSE|~|null|Null|NULL|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))"
)


def _fast_resolve(self: Any, kind: Any, value: Any, implicit: Any) -> Any:
    """BaseResolver.resolve without its table walk where the answer is known (called for every node).

    Plain text that cannot be anything else, quoted or block text (never resolved) and untagged
    collections get their default tags at once; with no path resolvers (asserted below), that is
    what BaseResolver.resolve returns for them.
    """
    if kind is ScalarNode:
        if not implicit[0]:
            return _STR_TAG
        if value and (value[0] not in _MAYBE_NOT_TEXT or not _NOT_TEXT.fullmatch(value)):
            return _STR_TAG
    elif kind is MappingNode:
        return _MAP_TAG
    elif kind is SequenceNode:
        return _SEQ_TAG
    return _generic_resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call]


_CoreResolver.resolve = _fast_resolve  # type: ignore[method-assign]
# libyaml's composer calls descend_resolver(parent, index) and ascend_resolver() around every
# node; they only track path resolvers, which this resolver never has. C builtins that take the
# same arguments and do nothing spare two Python calls per node (about 10 % of composing).
assert not _CoreResolver.yaml_path_resolvers, "path resolvers need the real descend/ascend"
_CoreResolver.descend_resolver = staticmethod(slice)  # type: ignore[assignment]
_CoreResolver.ascend_resolver = staticmethod(tuple)  # type: ignore[assignment]


class NodeLoader(_CoreResolver, *_Bases):  # type: ignore[misc]
    """Parses and composes nodes (libyaml when available); we construct values ourselves."""

    def __init__(self, stream: str) -> None:
        if _LIBYAML:
            _Bases[0].__init__(self, stream)
        else:  # pragma: no cover
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
        _CoreResolver.__init__(self)


_YAML11 = yaml.resolver.Resolver()
_AMBIGUOUS_CORE_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int")
_LEGACY_OCTAL = re.compile(r"^[-+]?0[0-9_]+$")


_YAML11_READINGS = {  # what YAML 1.1 tools make of a plain scalar that YAML 1.2 reads as text
    "tag:yaml.org,2002:bool": "a boolean to YAML 1.1 tools",
    "tag:yaml.org,2002:timestamp": "a date to YAML tools",
    "tag:yaml.org,2002:int": "a number to YAML 1.1 tools",
    "tag:yaml.org,2002:float": "a number to YAML 1.1 tools",
    "tag:yaml.org,2002:null": "null to YAML 1.1 tools",
}
_REMEMBERED_READING_MAX = 64  # characters: longer scalars are resolved each time, never kept


@functools.lru_cache(maxsize=1024)
def _remembered_yaml11_tag(value: str) -> str:
    """YAML 1.1's tag for a short plain non-secret scalar: ``kind: OutgoingLink`` is in every document."""
    return _YAML11.resolve(ScalarNode, value, (True, False))  # type: ignore[no-any-return, no-untyped-call]


def _yaml11_tag(value: str, *, secret: bool) -> str:
    """The tag YAML 1.1 tools give the plain scalar ``value`` (a secret's value is never remembered)."""
    if secret or len(value) > _REMEMBERED_READING_MAX:
        return _YAML11.resolve(ScalarNode, value, (True, False))  # type: ignore[no-any-return, no-untyped-call]
    return _remembered_yaml11_tag(value)


def _reads_as_text_everywhere(value: str) -> bool:
    """True for a plain non-secret scalar that YAML 1.1 tools read as text too (YAML 1.2 does)."""
    return value[:1] not in _MAYBE_YAML11 or _yaml11_tag(value, secret=False) not in _YAML11_READINGS


def _yaml11_surprise(value: str, core_tag: str, *, secret: bool) -> str | None:
    """Why an unquoted scalar means something else to YAML 1.1 tools, or None (a secret is not quoted)."""
    if core_tag == "tag:yaml.org,2002:int" and _LEGACY_OCTAL.match(value):
        reading = "an octal number to YAML 1.1 tools and a decimal one to others"
    elif core_tag != "tag:yaml.org,2002:str" or value[:1] not in _MAYBE_YAML11:
        return None
    else:
        found = _YAML11_READINGS.get(_yaml11_tag(value, secret=secret))
        if found is None:
            return None
        reading = found
    shown = "this unquoted value" if secret else f"unquoted `{value}`"
    return f"{shown} is {reading}"


class Constructor:
    """Builds plain Python values from nodes, reporting what YAML would get wrong."""

    def __init__(self, file: str, budget: int) -> None:
        self.file = file
        self.budget = budget
        self.diagnostics: list[Diagnostic] = []
        self.exhausted = False
        self.in_secret = 0  # > 0 while building the value of a secret field
        self.depth = 0  # collections being built around the current node

    def _error(self, node: Node, message: str, hint: str | None = None, code: str | None = None) -> None:
        mark = node.start_mark
        self.diagnostics.append(
            Diagnostic(ERROR, message, self.file, mark.line + 1, mark.column + 1, (), hint, code)
        )

    def build(self, node: Node) -> Any:
        """Construct the value of ``node`` (depth-first, with an expansion budget)."""
        self.budget -= 1
        if self.budget < 0:
            if not self.exhausted:
                self.exhausted = True
                self._error(
                    node,
                    "document expands to too many nodes (alias/anchor expansion bomb?)",
                    "remove deeply nested aliases; linkctl refuses documents that expand"
                    " far beyond their size",
                    "alias-bomb",
                )
            return None
        kind = node.__class__  # exact classes: the composer makes no subclasses, and `is` is cheapest
        if kind is ScalarNode:
            return self._scalar(cast(ScalarNode, node))
        if node.tag not in _COLLECTION_TAGS:
            self._error(node, f"custom YAML tag {node.tag!r} is not allowed", "remove the tag", "yaml-tag")
            return None
        if self.depth >= MAX_NESTING:
            # Recursion depth grows with nesting: refuse before Python's own limit is reached.
            self._error(
                node,
                f"nesting deeper than {MAX_NESTING} levels",
                "flatten the document; linkctl documents need only a few levels",
                "too-deep",
            )
            return None
        self.depth += 1
        try:
            if kind is MappingNode:
                return self._mapping(cast(MappingNode, node))
            return [self.build(child) for child in node.value]
        finally:
            self.depth -= 1

    def _scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        value = node.value
        if node.style and tag == _STR_TAG:  # quoted or block text (libyaml says "" for plain)
            return value
        if tag in _AMBIGUOUS_CORE_TAGS:
            # A plaintext secret that looks like a number must not be repeated in the output.
            surprise = _yaml11_surprise(value, tag, secret=bool(self.in_secret))
            if surprise:
                quoted = "it" if self.in_secret else f'it ("{value}")'
                self._error(
                    node,
                    surprise,
                    f"quote {quoted} if you mean the text, or write true/false or a plain number",
                    "yaml11-ambiguous",
                )
                return value
        if tag == "tag:yaml.org,2002:str":
            return value
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == "tag:yaml.org,2002:bool":
            return value.lower() == "true"
        if tag == "tag:yaml.org,2002:int":
            try:
                return int(value, 0) if value.startswith(("0o", "0x")) else int(value)
            except ValueError:  # over Python's int-str digit limit, or an explicit !!int on text
                self._error(node, f"not a usable integer ({len(value)} characters)", code="bad-int")
                return None
        if tag == "tag:yaml.org,2002:float":
            return float(
                value.replace(".inf", "inf")
                .replace(".Inf", "inf")
                .replace(".INF", "inf")
                .replace(".nan", "nan")
                .replace(".NaN", "nan")
                .replace(".NAN", "nan")
            )
        if tag.startswith("tag:yaml.org,2002:"):
            self._error(node, f"YAML tag {tag.rsplit(':', 1)[-1]!r} is not allowed here", code="yaml-tag")
            return value
        self._error(node, f"custom YAML tag {tag!r} is not allowed", "remove the tag", "yaml-tag")
        return value

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.__class__ is not ScalarNode:
                self._error(key_node, "mapping keys must be plain strings", code="yaml-key")
                continue
            key = key_node.value
            if key == "<<" and not key_node.style:
                self._error(
                    key_node,
                    "YAML merge keys (<<) are not supported",
                    "write the fields out; merge keys behave differently across YAML versions",
                    "yaml-merge",
                )
                continue
            if key in result:
                first = next(
                    k
                    for k, _ in node.value
                    if k.__class__ is ScalarNode and k.value == key and (k.style or key != "<<")
                )
                self._error(
                    key_node,
                    f"duplicate key {key!r} (first defined at line {first.start_mark.line + 1}); "
                    "YAML tools silently keep only one of them",
                    "remove one of the two",
                    "duplicate-key",
                )
                continue
            if (
                value_node.__class__ is ScalarNode
                and value_node.tag == _STR_TAG
                and self.budget > 0
                and (
                    value_node.style
                    or value_node.value[:1] not in _MAYBE_YAML11
                    or (
                        not self.in_secret
                        and key not in SECRET_KEYS
                        and _reads_as_text_everywhere(value_node.value)
                    )
                )
            ):
                # Text that no YAML version reads as anything else (the common case): no calls.
                self.budget -= 1
                result[key] = value_node.value
            elif key in SECRET_KEYS:
                self.in_secret += 1
                try:
                    result[key] = self.build(value_node)
                finally:
                    self.in_secret -= 1
            else:
                result[key] = self.build(value_node)
        return result
