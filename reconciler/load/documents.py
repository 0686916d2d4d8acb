"""Documents and the load result: what loading hands to validation, with positions kept."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reconciler.diagnostics import Diagnostic
from reconciler.diagnostics import Path as JsonPath

if TYPE_CHECKING:  # YAML is imported only to parse or to locate (never for a cached run)
    from yaml.nodes import Node

API_GROUP = "linkctl.dev"
API_VERSION = "linkctl.dev/v1"
KINDS = ("OutgoingLink", "Instance")
SOPS_PREFIX = "ENC[AES256_GCM,"


def is_encrypted(value: object) -> bool:
    """True for a SOPS-encrypted value (``ENC[…]``) as the file holds it."""
    return isinstance(value, str) and value.startswith(SOPS_PREFIX)


class SourceText:
    """A file's text, composed again only when a diagnostic needs positions.

    Keeping every composed node tree (two marks per node) would triple the memory
    of a 10,000-link load; valid files never need them.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._nodes: list[Node] | None = None

    def node(self, index: int) -> Node | None:
        """The composed node of document ``index``."""
        if self._nodes is None:
            # Here, not at the top: YAML is loaded only when a file is parsed or a position
            # is needed, never for a run served from the parse cache.
            from reconciler.load.yaml_positions import NodeLoader

            loader = NodeLoader(self.text)
            try:
                self._nodes = []
                while loader.check_node():
                    node = loader.get_node()
                    if node is not None:
                        self._nodes.append(node)
            finally:
                loader.dispose()
        return self._nodes[index] if index < len(self._nodes) else None


@dataclasses.dataclass
class Document:
    """One YAML/JSON document of a linkctl kind, with where it came from."""

    file: str
    index: int  # position of the document within its file (0-based)
    data: Any = dataclasses.field(repr=False)  # may hold decrypted SOPS values
    node: Node | None  # the composed tree, to locate paths lazily
    line: int
    encrypted_paths: frozenset[JsonPath] = frozenset()
    # True when this document's SOPS values were not decrypted (``validate --no-decrypt``):
    # the values at ``encrypted_paths`` are then the ENC[...] strings, present but unknown.
    opaque: bool = False
    # True when the decryption memo vouched for this document's SOPS file instead of opening
    # it (``validate`` only, :mod:`.decryption_memo`): the ENC[...] values stand in for secrets.
    vouched: bool = False
    source: SourceText | None = dataclasses.field(default=None, repr=False)

    @property
    def kind(self) -> str | None:
        """The document's ``kind``."""
        return self.data.get("kind") if isinstance(self.data, dict) else None

    @property
    def name(self) -> str | None:
        """The document's ``metadata.name``."""
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """(line, column), 1-based, of the deepest existing node on ``path``."""
        if self.node is None and self.source is not None:
            self.node = self.source.node(self.index)
        node = self.node
        if node is None:
            return self.line, 1
        from yaml.nodes import MappingNode, ScalarNode, SequenceNode

        mark = node.start_mark
        for part in path:
            child: Node | None = None
            key_node: Node | None = None
            if isinstance(node, MappingNode):
                for k, v in node.value:
                    if isinstance(k, ScalarNode) and k.value == part:
                        key_node, child = k, v
                        break
            elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node = child
            mark = key_node.start_mark if (key and key_node is not None) else child.start_mark
        return mark.line + 1, mark.column + 1

    def diagnostic(
        self,
        severity: str,
        message: str,
        path: Sequence[str | int] = (),
        *,
        hint: str | None = None,
        code: str | None = None,
        key: bool = False,
    ) -> Diagnostic:
        """A diagnostic located at ``path`` in this document."""
        line, column = self.locate(path, key=key)
        return Diagnostic(severity, message, self.file, line, column, tuple(path), hint, code)


@dataclasses.dataclass
class LoadResult:
    """Documents of linkctl kinds, diagnostics, and what was skipped (with reasons)."""

    documents: list[Document]
    diagnostics: list[Diagnostic]
    skipped: list[str]
    files: list[str]
    # The directories given as input (a file argument stands for its directory): a
    # relative ``fromFile`` must stay inside one of them.
    roots: list[str] = dataclasses.field(default_factory=list)
    # Parses not yet in the cache; :func:`remember_parsed` keeps those of valid files.
    cache_candidates: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    # The parse cache's key (SHA-256 of the text) of each file read, when there is a cache:
    # what the validation cache keys its entries by.
    file_keys: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
