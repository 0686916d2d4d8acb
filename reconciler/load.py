"""Load: files and directories → documents with positions, SOPS values decrypted in memory.

The first step of the flow (load → validate → plan → apply). It reads YAML and
JSON files, refuses what a YAML library would silently get wrong (duplicate
keys, YAML 1.1 look-alikes such as ``on``/``0755``/dates, alias bombs, huge
files) and keeps every node's position so later steps can report ``file:line``.
Documents of other tools (another ``apiVersion``) are skipped; encrypted SOPS
files are decrypted by :mod:`reconciler.sops` and overlaid onto the tree, so
positions still point into the encrypted file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import marshal
import os
import re
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler import __version__, strict_json
from reconciler.diagnostics import ERROR, WARNING, Diagnostic, format_path
from reconciler.diagnostics import Path as JsonPath

API_GROUP = "linkctl.dev"
API_VERSION = "linkctl.dev/v1"
KINDS = ("OutgoingLink", "Instance")
EXTENSIONS = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_NESTING = 64  # mappings/lists inside each other; real documents need fewer than 10
_CACHE_FORMAT = "1"  # bump whenever parsing or its diagnostics change
SOPS_PREFIX = "ENC[AES256_GCM,"
SECRET_KEYS = frozenset({"clientSecret"})  # values never repeated in diagnostics
# Parsing is the costliest step of a cold plan: with two free cores and at least this much
# unparsed YAML, a forked child parses part of the files while this process parses the rest.
PARSE_AHEAD_MIN_BYTES = 256 * 1024
PARSE_AHEAD_SHARE = 0.5  # the child's share by bytes; this process also builds the documents
MEANWHILE_SHARE = 0.25  # more for the child while this process imports and reads the store

Parsed = list[tuple[Any, int]]  # (data, first line) per document
ParseOutcome = tuple[Parsed, dict[int, list[Diagnostic]], bool]  # + diagnostics, JSON fallback

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
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_MAYBE_NOT_TEXT = frozenset("tTfF~nN-+.0123456789")
_MAYBE_YAML11 = frozenset("yYnNoOtTfF~-+.0123456789")
_generic_resolve = _CoreResolver.resolve


_NOT_TEXT = re.compile(
    r"(?:true|True|TRUE|false|False|FALSE|~|null|Null|NULL|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))"
)


def _fast_resolve(self: Any, kind: Any, value: Any, implicit: Any) -> Any:
    """Plain text cannot resolve to anything else: skip the regex table for it (hot path)."""
    if (
        kind is ScalarNode
        and implicit[0]
        and value
        and (value[0] not in _MAYBE_NOT_TEXT or not _NOT_TEXT.fullmatch(value))
    ):
        return _STR_TAG
    return _generic_resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call]


_CoreResolver.resolve = _fast_resolve  # type: ignore[method-assign]


class _NodeLoader(_CoreResolver, *_Bases):  # type: ignore[misc]
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


def _yaml11_surprise(value: str, core_tag: str, shown: str) -> str | None:
    """Why an unquoted scalar means something else to YAML 1.1 tools, or None (``shown`` names it)."""
    if core_tag == "tag:yaml.org,2002:int" and _LEGACY_OCTAL.match(value):
        return f"{shown} is an octal number to YAML 1.1 tools and a decimal one to others"
    if core_tag != "tag:yaml.org,2002:str" or value[:1] not in _MAYBE_YAML11:
        return None
    old_tag = _YAML11.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    if old_tag == "tag:yaml.org,2002:bool":
        return f"{shown} is a boolean to YAML 1.1 tools"
    if old_tag == "tag:yaml.org,2002:timestamp":
        return f"{shown} is a date to YAML tools"
    if old_tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        return f"{shown} is a number to YAML 1.1 tools"
    if old_tag == "tag:yaml.org,2002:null":
        return f"{shown} is null to YAML 1.1 tools"
    return None


class _SourceText:
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
            loader = _NodeLoader(self.text)
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
    source: _SourceText | None = dataclasses.field(default=None, repr=False)

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


class _Constructor:
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
            shown, quoted = (
                ("this unquoted value", "it")
                if self.in_secret
                else (f"unquoted `{value}`", f'it ("{value}")')
            )
            surprise = _yaml11_surprise(value, tag, shown)
            if surprise:
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
                and (
                    (value_node.style and value_node.tag == _STR_TAG)
                    or (value_node.tag == _STR_TAG and value_node.value[:1] not in _MAYBE_YAML11)
                )
                and self.budget > 0
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


def iter_files(paths: Iterable[str]) -> Iterator[tuple[str, Path | None, str | None]]:
    """Expand arguments into (display name, path, problem) — directories recursively, sorted."""
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            yield from _scan_directory(path)
        elif path.is_file() or path.exists():  # a FIFO or device: reading it says what it is
            yield str(path), path, None
        else:
            yield arg, None, "no such file or directory"


def _scan_directory(root: Path) -> Iterator[tuple[str, Path | None, str | None]]:
    """Every declared file under ``root``: hidden entries skipped, symlinked directories followed.

    A directory that cannot be listed is reported like an unreadable file, since skipping it would
    make ``--prune`` delete the links it declares. Each directory is entered once by
    (st_dev, st_ino), which stops symlink loops and reads a directory linked twice only once.
    """
    found: list[Path] = []
    problems: list[tuple[str, Path | None, str | None]] = []
    visited: set[tuple[int, int]] = set()

    def scan(directory: Path) -> None:
        try:
            info = directory.stat()
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            problems.append((str(directory), None, f"cannot read directory: {exc.strerror or exc}"))
            return
        if (info.st_dev, info.st_ino) in visited:
            return
        visited.add((info.st_dev, info.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = directory / entry.name
            try:
                is_dir = entry.is_dir()
            except OSError as exc:  # a symlink loop (ELOOP) or a target we may not stat
                problems.append((str(child), None, f"cannot read: {exc.strerror or exc}"))
                continue
            if is_dir:
                scan(child)
            elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
                # A FIFO, device or dangling link is refused when it is read, not skipped:
                # a skipped file's links would look deleted to --prune.
                found.append(child)

    scan(root)
    for p in sorted(found):
        yield str(p), p, None
    yield from problems


def _read_once(
    found: Iterable[tuple[str, Path | None, str | None]],
) -> Iterator[tuple[str, Path | None, str | None]]:
    """Drop files already listed: the same file named twice (by another path, a symlink, or a
    directory and the file in it) would otherwise declare each of its links twice."""
    seen: set[tuple[int, int]] = set()
    for display, path, problem in found:
        if path is not None:
            try:
                st = path.stat()
            except OSError:
                yield display, path, problem  # reading it reports the problem
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        yield display, path, problem


def load_paths(
    paths: Iterable[str],
    *,
    env: Mapping[str, str],
    ignore_mac: bool = False,
    meanwhile: Callable[[], object] | None = None,
) -> LoadResult:
    """Read every file under ``paths`` into documents (never raises for bad input).

    ``meanwhile`` is called while a forked child parses (see :data:`PARSE_AHEAD_MIN_BYTES`),
    or first thing otherwise: work that does not need the documents, such as imports.
    """
    result = LoadResult([], [], [], [])
    cache = ParseCache.for_env(env)
    files: list[_File] = []
    paths = list(paths)
    result.roots = [arg if os.path.isdir(arg) else os.path.dirname(arg) or "." for arg in paths]
    for display, path, problem in _read_once(iter_files(paths)):
        if path is None:
            result.diagnostics.append(
                Diagnostic(ERROR, problem or "cannot read", display, None, None, (), None, "no-file")
            )
            continue
        result.files.append(display)
        files.append(_read_file(display, path, cache))
    misses = [f for f in files if f.text is not None and f.parsed is None]
    busy = meanwhile is not None
    ahead = _parse_ahead(misses, PARSE_AHEAD_SHARE + (MEANWHILE_SHARE if busy else 0.0), busy=busy)
    try:
        if meanwhile is not None:
            meanwhile()
        for file in files:
            if file.text is None:
                result.diagnostics.extend(file.problems)
                continue
            if file.parsed is None and file.display in ahead.names:
                file.parsed, file.encoded = ahead.result(file.display) or (None, None)
            _load_text(file, result, cache, env=env, ignore_mac=ignore_mac)
    finally:
        ahead.close()
    return result


class ParseCache:
    """Parsed documents of files seen before, keyed by their content.

    ``plan``/``reconcile`` from cron read the same unchanged files again and again;
    parsing 10,000 links costs about 0.4 s, reading them from here about 0.05 s. Only
    what the YAML parser produced is kept (SOPS values stay ``ENC[...]``, secret
    references stay references): never a decrypted value. ``marshal`` holds plain data
    only; an unreadable entry is a miss. ``LINKCTL_NO_CACHE=1`` turns it off.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_env(cls, env: Mapping[str, str]) -> ParseCache | None:
        """The cache under ``$XDG_CACHE_HOME/linkctl`` (``~/.cache/linkctl``), unless disabled."""
        if env.get("LINKCTL_NO_CACHE"):
            return None
        base = env.get("XDG_CACHE_HOME")
        if not base or not os.path.isabs(base):
            home = env.get("HOME")
            if not home:
                return None
            base = os.path.join(home, ".cache")
        return cls(Path(base) / "linkctl" / f"parse-{__version__}-{_CACHE_FORMAT}")

    @staticmethod
    def key(text: str) -> str:
        """The cache key of a file's text (SHA-256)."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, display: str) -> ParseOutcome | None:
        """The parse of the text with ``key`` if cached (diagnostics re-labelled with ``display``)."""
        entry = self._entry(key)
        try:
            # Another local user could plant an entry that redirects tokenEndpoint: only
            # files and directories that are ours and writable by us alone are trusted.
            if not all(_owned_privately(os.lstat(d)) for d in (self.root, entry.parent)):
                return None
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not (stat.S_ISREG(info.st_mode) and _owned_privately(info)):
                    return None
                blob = handle.read()
        except OSError:
            return None
        return self.decode(blob, display)

    @staticmethod
    def decode(blob: bytes, display: str) -> ParseOutcome | None:
        """Inverse of :meth:`encode`; ``None`` for a damaged blob."""
        try:
            parsed_raw, diagnostics_raw, json_fallback = marshal.loads(blob)
            parsed: Parsed = [(data, int(line)) for data, line in parsed_raw]
            per_document = {
                int(index): [
                    Diagnostic(sev, msg, display, line, col, tuple(path), hint, code)
                    for sev, msg, line, col, path, hint, code in items
                ]
                for index, items in diagnostics_raw.items()
            }
        except (ValueError, EOFError, TypeError):
            return None
        return parsed, per_document, bool(json_fallback)

    @staticmethod
    def encode(parsed: Parsed, per_document: dict[int, list[Diagnostic]], json_fallback: bool) -> bytes:
        """The cache form of a parse."""
        return marshal.dumps(
            (
                parsed,
                {
                    index: [(d.severity, d.message, d.line, d.column, d.path, d.hint, d.code) for d in items]
                    for index, items in per_document.items()
                },
                json_fallback,
            )
        )

    def put(self, key: str, blob: bytes) -> None:
        """Remember an encoded parse (best effort: a cache that cannot be written is no error)."""
        entry = self._entry(key)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            for directory in (self.root, entry.parent):  # 0700 whatever the umask
                os.chmod(directory, 0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(blob)
            os.replace(tmp, entry)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _owned_privately(info: os.stat_result) -> bool:
    """True for a cache file or directory owned by the current user and writable by nobody else."""
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def remember_parsed(loaded: LoadResult, diagnostics: Sequence[Diagnostic]) -> None:
    """Cache the parses of files that validated cleanly and hold no plaintext secret.

    Called after validation: a file with any error may hold a secret in an odd place
    (a typo'd field, a list), and a plaintext ``clientSecret`` (allowed by the Instance)
    must not be copied into the cache.
    """
    failed = {d.file for d in diagnostics if d.is_error}
    for display, (cache, key, blob) in loaded.cache_candidates.items():
        if display not in failed:
            cache.put(key, blob)
    loaded.cache_candidates.clear()


def _cacheable(data: Any) -> bool:
    """A parsed document that may be copied into the parse cache.

    Only linkctl documents (plain or with an encrypted apiVersion), and none with a
    plaintext clientSecret: another tool's document (a Kubernetes Secret's stringData)
    may hold anything.
    """
    if data is None:
        return True
    api_version = data.get("apiVersion") if isinstance(data, dict) else None
    if not isinstance(api_version, str) or not api_version.startswith((API_GROUP + "/", SOPS_PREFIX)):
        return False
    spec = data.get("spec")
    secret = spec.get("clientSecret") if isinstance(spec, dict) else None
    return (
        secret is None
        or isinstance(secret, dict)
        or (isinstance(secret, str) and secret.startswith(SOPS_PREFIX))
    )


@dataclasses.dataclass
class _File:
    """One input file between reading and loading."""

    display: str
    path: Path
    text: str | None  # None: unreadable, see ``problems``
    problems: list[Diagnostic] = dataclasses.field(default_factory=list)
    parsed: ParseOutcome | None = None  # from the parse cache or a parse ahead
    encoded: bytes | None = None  # ``parsed`` in the cache's encoding, when the child made it
    key: str = ""  # the parse cache's key of ``text``, when there is a cache

    @property
    def cached(self) -> bool:
        """``parsed`` came from the cache (nothing to remember): the child's parses are encoded."""
        return self.parsed is not None and self.encoded is None


def _read_file(display: str, path: Path, cache: ParseCache | None) -> _File:
    """Read a file's text (size limit, UTF-8) and look its parse up in the cache."""

    def fail(
        message: str, line: int | None = None, column: int | None = None, *, hint: str, code: str
    ) -> _File:
        problem = Diagnostic(ERROR, message, display, line, column, (), hint, code)
        return _File(display, path, None, [problem])

    try:
        # O_NONBLOCK and fstat: a FIFO or device named as an argument must not block or stream.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                return fail(
                    "not a regular file (a FIFO, socket or device)",
                    hint="name a YAML or JSON file",
                    code="not-a-file",
                )
            if st.st_size > MAX_FILE_BYTES:
                return fail(
                    f"file is {st.st_size} bytes, over the {MAX_FILE_BYTES} byte limit",
                    hint="split it into several files",
                    code="too-large",
                )
            text = handle.read(MAX_FILE_BYTES + 1).decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = exc.object[: exc.start]
        return fail(
            f"file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            raw.count(b"\n") + 1,
            exc.start - (raw.rfind(b"\n") + 1) + 1,
            hint="save the file as UTF-8",
            code="encoding",
        )
    except OSError as exc:
        problem = Diagnostic(ERROR, f"cannot read file: {exc.strerror}", display, None, None, (), None, "io")
        return _File(display, path, None, [problem])
    if cache is None:
        return _File(display, path, text)
    key = cache.key(text)  # once: looked up now, written after validation
    return _File(display, path, text, parsed=cache.get(key, display), key=key)


def _load_text(
    file: _File,
    result: LoadResult,
    cache: ParseCache | None,
    *,
    env: Mapping[str, str],
    ignore_mac: bool,
) -> None:
    """Parse a read file (unless the cache or the child did) and add its documents to ``result``."""
    assert file.text is not None
    display, path, text = file.display, file.path, file.text
    outcome = file.parsed or _parse(display, path, text, result)
    if outcome is None:
        return
    parsed, per_document, json_fallback = outcome
    source = None if json_fallback else _SourceText(text)
    if cache is not None and not file.cached and all(_cacheable(data) for data, _ in parsed):
        # Encoded now: decryption later changes these objects (the sops block is removed).
        blob = file.encoded or cache.encode(parsed, per_document, json_fallback)
        result.cache_candidates[display] = (cache, file.key, blob)
    _documents_of(
        display,
        path,
        text,
        parsed,
        per_document,
        source,
        result,
        env=env,
        ignore_mac=ignore_mac,
    )


class _ParseAhead:
    """Parses of some files, made by a forked child while this process parses the others.

    The child inherits the file texts (copy-on-write), so both sides parse exactly the same
    bytes; it sends back the parse-cache encoding over a pipe. Anything missing or damaged
    in what comes back is parsed here instead, so a failed child costs time, never results.
    """

    def __init__(self, files: Sequence[_File] = ()) -> None:
        self.names = frozenset(f.display for f in files)
        self._pid: int | None = None
        self._read_fd: int | None = None
        self._results: dict[str, bytes | None] | None = None
        if files:
            self._start(files)

    def _start(self, files: Sequence[_File]) -> None:
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            self.names = frozenset()  # out of descriptors: parse everything here
            return
        try:
            pid = os.fork()
        except OSError:  # a process limit (EAGAIN) or no memory: parse everything here
            os.close(read_fd)
            os.close(write_fd)
            self.names = frozenset()
            return
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            try:
                os.close(read_fd)
                out: dict[str, bytes | None] = {}
                for file in files:
                    assert file.text is not None
                    outcome = _parse(file.display, file.path, file.text, LoadResult([], [], [], []))
                    out[file.display] = None if outcome is None else ParseCache.encode(*outcome)
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(marshal.dumps(out))
            finally:
                os._exit(0)
        os.close(write_fd)
        self._pid, self._read_fd = pid, read_fd

    def result(self, display: str) -> tuple[ParseOutcome, bytes] | None:
        """The child's parse of ``display`` and its encoding (``None``: parse it here)."""
        if self._results is None:
            self._results = self._collect()
        blob = self._results.get(display)
        outcome = None if blob is None else ParseCache.decode(blob, display)
        return None if outcome is None or blob is None else (outcome, blob)

    def _collect(self) -> dict[str, bytes | None]:
        if self._read_fd is None:
            return {}
        with os.fdopen(self._read_fd, "rb") as pipe:
            self._read_fd = None
            data = pipe.read()
        self.close()
        try:
            results = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return {}
        return results if isinstance(results, dict) else {}

    def close(self) -> None:
        """Reap the child; one whose answer is no longer wanted (an error here) is killed first."""
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None
            if self._pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
        if self._pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None


def _parse_ahead(misses: Sequence[_File], share: float, *, busy: bool) -> _ParseAhead:
    """Start a child for the tail of ``misses`` (about ``share`` of their bytes) when worth a fork.

    ``busy``: this process has other work meanwhile, so the child may take every file.
    """
    total = sum(len(f.text or "") for f in misses)
    if total < PARSE_AHEAD_MIN_BYTES or not hasattr(os, "fork") or threading.active_count() > 1:
        return _ParseAhead()
    if _usable_cpus() < 2:
        return _ParseAhead()
    # The child takes the last files (this process reaches them last), as close to its share
    # as whole files allow.
    wanted, taken = total * share, 0
    tail: list[_File] = []
    for file in reversed(misses):
        size = len(file.text or "")
        if taken + size - wanted > wanted - taken:
            break
        tail.append(file)
        taken += size
    if not tail or (len(tail) == len(misses) and not busy):
        return _ParseAhead()  # nothing to share: one process would wait for the other
    return _ParseAhead(tail[::-1])


def _usable_cpus() -> int:
    """CPUs this process may run on, within a cgroup v2 CPU quota (containers, CI runners)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def _parse(display: str, path: Path, text: str, result: LoadResult) -> ParseOutcome | None:
    """Parse a file's documents; None (with diagnostics in ``result``) when it cannot be."""

    def fail(
        message: str, line: int | None = None, column: int | None = None, code: str | None = None
    ) -> None:
        result.diagnostics.append(Diagnostic(ERROR, message, display, line, column, (), None, code))

    constructor = _Constructor(display, budget=50_000 + len(text))
    json_fallback = False
    parsed: Parsed = []
    per_document: dict[int, list[Diagnostic]] = {}  # constructor diagnostics by document index
    try:
        loader = _NodeLoader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                before = len(constructor.diagnostics)
                parsed.append((constructor.build(node), node.start_mark.line + 1))
                per_document[len(parsed) - 1] = constructor.diagnostics[before:]
                if constructor.exhausted:
                    break
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if path.suffix.lower() == ".json" and not parsed:
            try:
                parsed = [(strict_json.loads(text), 1)]
                json_fallback = True  # YAML cannot compose it: positions stay at the document
            except json.JSONDecodeError as json_exc:
                fail(f"invalid JSON: {json_exc.msg}", json_exc.lineno, json_exc.colno, code="syntax")
                return None
            except ValueError as json_exc:
                fail(f"invalid JSON: {json_exc}", code="syntax")
                return None
        else:
            if mark and _is_indentation_tab(text, mark.line, mark.column):
                problem = "tabs are not allowed for indentation"
            fail(
                f"YAML syntax error: {problem}",
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
                code="syntax",
            )
            return None
    except yaml.reader.ReaderError as exc:
        start = text.rfind("\n", 0, exc.position) + 1
        fail(
            f"character U+{exc.character:04X} is not allowed in YAML or JSON (control character)",
            text.count("\n", 0, exc.position) + 1,
            exc.position - start + 1,
            code="syntax",
        )
        return None
    except yaml.YAMLError as exc:
        fail(f"YAML error: {exc}", code="syntax")
        return None
    if constructor.exhausted:
        result.diagnostics.extend(constructor.diagnostics)
        return None
    return parsed, per_document, json_fallback


def _is_indentation_tab(text: str, line: int, column: int) -> bool:
    """True when the character at (line, column), 0-based, is a tab in the line's leading blanks."""
    lines = text.splitlines()
    if line >= len(lines):
        return False
    leading = lines[line][: column + 1]
    return "\t" in leading and not leading.strip(" \t-")


def _documents_of(
    display: str,
    path: Path,
    text: str,
    parsed: Parsed,
    per_document: dict[int, list[Diagnostic]],
    source: _SourceText | None,
    result: LoadResult,
    *,
    env: Mapping[str, str],
    ignore_mac: bool,
) -> None:
    """Turn parsed documents into ours (decrypting SOPS files), skipping other tools' documents."""
    documents = [
        Document(display, index, data, None, line, source=source)  # node: composed on demand
        for index, (data, line) in enumerate(parsed)
    ]
    if any(isinstance(d.data, dict) and isinstance(d.data.get("sops"), dict) for d in documents):
        hidden = any(
            isinstance(d.data, dict) and str(d.data.get("apiVersion", "")).startswith(SOPS_PREFIX)
            for d in documents
        )
        ours = _is_ours(documents)
        if not ours and not hidden:
            result.skipped.append(f"{display}: SOPS file with no {API_GROUP} document")
            return
        if not ours:
            # apiVersion itself is encrypted (sops's default rule): only decryption can tell
            # whether this is ours; a file we cannot open is another tool's business.
            probe = LoadResult([], [], [], [])
            if not _decrypt_into(display, path, text, documents, probe, env=env, ignore_mac=ignore_mac):
                result.skipped.append(
                    f"{display}: SOPS file whose apiVersion is encrypted and that cannot be decrypted here"
                )
                return
        elif not _decrypt_into(display, path, text, documents, result, env=env, ignore_mac=ignore_mac):
            return

    # YAML traps only matter in documents linkctl reads: other tools' documents (a Kubernetes
    # Secret with `on: no`, say) are skipped, so their quirks must not fail the file.
    for doc in documents:
        if _is_ours([doc]) or (not isinstance(doc.data, dict) and _looks_ours(doc.data)):
            result.diagnostics.extend(per_document.get(doc.index, ()))
    for doc in documents:
        data = doc.data
        if data is None:
            continue
        if not isinstance(data, dict):
            if _looks_ours(data):
                result.diagnostics.append(
                    doc.diagnostic(
                        ERROR,
                        "a document must be a mapping, not a list of documents",
                        hint="write each document as a mapping and separate them with ---",
                        code="not-a-mapping",
                    )
                )
            else:
                result.skipped.append(f"{display}#{doc.index}: not a mapping")
            continue
        api_version = data.get("apiVersion")
        if not isinstance(api_version, str) or not api_version.startswith(API_GROUP + "/"):
            if isinstance(api_version, str) and "linkctl" in api_version.lower():
                # A typo'd apiVersion would otherwise drop the link silently (and prune it).
                result.diagnostics.append(
                    doc.diagnostic(
                        WARNING,
                        f"apiVersion {api_version!r} looks like linkctl's but is not {API_VERSION};"
                        " this document is skipped",
                        ("apiVersion",),
                        hint=f"write apiVersion: {API_VERSION}",
                        code="api-version-near-miss",
                    )
                )
            result.skipped.append(f"{display}#{doc.index}: apiVersion {api_version!r} is not {API_GROUP}")
            continue
        if api_version != API_VERSION:
            result.diagnostics.append(
                doc.diagnostic(
                    ERROR,
                    f"unknown apiVersion {api_version!r}",
                    ("apiVersion",),
                    hint=f"this linkctl understands {API_VERSION}",
                    code="api-version",
                )
            )
            continue
        kind = data.get("kind")
        if kind not in KINDS:
            result.diagnostics.append(
                doc.diagnostic(
                    ERROR,
                    f"unknown kind {kind!r} for {API_VERSION}",
                    ("kind",),
                    hint=f"use one of: {', '.join(KINDS)}",
                    code="unknown-kind",
                )
            )
            continue
        result.documents.append(doc)


def _looks_ours(data: Any) -> bool:
    """True for a non-mapping document that holds linkctl documents (e.g. a list of them)."""
    if isinstance(data, list):
        return any(
            isinstance(item, dict) and str(item.get("apiVersion", "")).startswith(API_GROUP + "/")
            for item in data
        )
    return False


def _is_ours(documents: Sequence[Document]) -> bool:
    return any(
        isinstance(d.data, dict) and str(d.data.get("apiVersion", "")).startswith(API_GROUP + "/")
        for d in documents
    )


def _decrypt_into(
    display: str,
    path: Path,
    text: str,
    documents: list[Document],
    result: LoadResult,
    *,
    env: Mapping[str, str],
    ignore_mac: bool,
) -> bool:
    """Decrypt a SOPS file and overlay the plaintext onto the positioned documents."""
    from reconciler import sops
    from reconciler.errors import LinkctlError

    sops_doc = next(d for d in documents if isinstance(d.data, dict) and "sops" in d.data)
    try:
        plain = sops.decrypt_text(
            text,
            filename=display,
            fmt="json" if path.suffix.lower() == ".json" else "yaml",
            env=env,
            ignore_mac=ignore_mac,
        )
    except LinkctlError as exc:
        result.diagnostics.append(
            sops_doc.diagnostic(ERROR, str(exc), ("sops",), hint=exc.hint, code="sops", key=True)
        )
        return False
    if len(plain) != len(documents):
        result.diagnostics.append(
            sops_doc.diagnostic(ERROR, "SOPS file structure does not match its decryption", code="sops")
        )
        return False
    for doc, tree in zip(documents, plain, strict=True):
        if isinstance(doc.data, dict):
            doc.data.pop("sops", None)
        encrypted: set[JsonPath] = set()
        try:
            doc.data = _overlay(doc.data, tree, (), encrypted)
        except ValueError as exc:
            result.diagnostics.append(
                sops_doc.diagnostic(
                    ERROR, f"SOPS file structure does not match its decryption: {exc}", code="sops"
                )
            )
            return False
        doc.encrypted_paths = frozenset(encrypted)
    return True


def _overlay(mine: Any, plain: Any, path: JsonPath, encrypted: set[JsonPath]) -> Any:
    """Take decrypted values where ours are ENC[...] strings; keep our structure elsewhere."""
    from reconciler.sops import is_encrypted_comment

    if isinstance(mine, str) and mine.startswith(SOPS_PREFIX):
        encrypted.add(path)
        return plain
    if isinstance(mine, dict) and isinstance(plain, dict):
        return {k: _overlay(v, plain.get(k), (*path, k), encrypted) for k, v in mine.items()}
    if isinstance(mine, list) and isinstance(plain, list):
        # sops 3.11 writes an encrypted comment inside a list as an item; it is not data.
        items = [m for m in mine if not is_encrypted_comment(m)]
        if len(items) != len(plain):
            raise ValueError(
                f"list at {format_path(path) or 'the top'} has {len(items)} items encrypted "
                f"but {len(plain)} decrypted"
            )
        return [
            _overlay(m, p, (*path, i), encrypted) for i, (m, p) in enumerate(zip(items, plain, strict=True))
        ]
    if isinstance(mine, dict | list) or isinstance(plain, dict | list):
        raise ValueError(f"structure at {format_path(path) or 'the top'} differs after decryption")
    return mine  # an unencrypted leaf: our own (YAML 1.2, position-keeping) reading is the one validated
