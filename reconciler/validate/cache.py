"""The validation cache: what validation concluded about unchanged documents, keyed by content.

``validate`` in pre-commit and ``plan`` from cron read the same files again and again;
validating them costs the pydantic import (most of a small run) and the rules. An entry
is written per file that validated with no error, and keyed like the parse cache by the
file's text, plus the Instance (its file's text and its place there) and the rules'
version (:func:`rules_version`: linkctl's version, :data:`RULES_FORMAT` and the size and
mtime of every module the rules are made of, pydantic's included) — an edit of the file, of the Instance or of
linkctl is a miss. Entries live beside the parse cache's, with the same trust rules
(directories 0700 and files 0600, owned by the user, never followed through a symlink),
and carry a SHA-256 of their contents: a damaged or foreign entry is a miss, never a result.

An entry holds, per document: the effective spec (secret fields hold markers), the
warnings, and where ``clientSecret`` comes from (a variable's name, a file's path or "the
SOPS file") — never a secret. A document with any encrypted field but ``clientSecret``
(its decrypted value would be in the spec) or a plaintext secret is not cached. What
depends on the environment (the secret's value: the variable set, the file readable, the
SOPS file decrypted, or for ``validate`` vouched for by
:mod:`reconciler.load.decryption_memo`) or on other files (duplicate names, renames, one
Instance) is checked again on every run by :func:`replay`, with the validator's own rules
and messages.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import marshal
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.diagnostics import ERROR, WARNING, Diagnostic
from reconciler.domain.links import DesiredLink
from reconciler.domain.records import record_builder
from reconciler.load import Document, LoadResult
from reconciler.load.parse_cache import ParseCache, cache_home, source_fingerprint
from reconciler.validate.names import check_renames, remember_name
from reconciler.validate.results import ValidationResult
from reconciler.validate.secret_sources import read_source

RULES_FORMAT = "1"  # bump when what an entry means changes (the modules' mtimes cover edits)
# Encrypted values that never reach the effective spec: found by, not stored, or the secret.
_UNSTORED = frozenset({("apiVersion",), ("kind",), ("metadata", "name"), ("spec", "clientSecret")})
# What the rules are made of: a change to any of these files is a new rules version.
_RULE_SOURCES = ("validate", "load", "oauth/providers", "models.py", "diagnostics.py", "domain/links.py")
# Libraries whose version changes what validation accepts (the models' structure pass).
_RULE_LIBRARIES = ("pydantic", "pydantic_core")
_SECRET_KINDS = frozenset({"env", "file", "sops", "none"})

DiagnosticRow = tuple[str, str, int | None, int | None, tuple[str | int, ...], str | None, str | None]


@functools.cache
def rules_version() -> str:
    """linkctl's version, :data:`RULES_FORMAT` and a fingerprint of the rules' source files."""
    parts = [__version__, RULES_FORMAT, *source_fingerprint(_RULE_SOURCES)]
    parts.extend(_library_fingerprints())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _library_fingerprints() -> list[str]:
    """Size and mtime of the libraries the structure pass is made of (pydantic), found unimported.

    Upgrading pydantic under the same linkctl may change what the models accept: a new
    installation of it is a new rules version too.
    """
    from importlib.machinery import PathFinder

    found = []
    for library in _RULE_LIBRARIES:
        spec = PathFinder.find_spec(library)
        origin = spec.origin if spec is not None else None
        try:
            info = os.stat(origin) if origin else None
        except OSError:
            info = None
        found.append(f"{library}:{origin}:{info and info.st_size}:{info and info.st_mtime_ns}")
    return found


def _row(d: Diagnostic) -> DiagnosticRow:
    return (d.severity, d.message, d.line, d.column, tuple(d.path), d.hint, d.code)


def _diagnostic(row: Any, file: str) -> Diagnostic:
    severity, message, line, column, path, hint, code = row
    if (
        severity not in (ERROR, WARNING)
        or not isinstance(message, str)
        or not all(isinstance(v, int | None) for v in (line, column))
        or not isinstance(path, tuple)
        or not all(isinstance(v, str | None) for v in (hint, code))
    ):
        raise ValueError("not a diagnostic")
    return Diagnostic(severity, message, file, line, column, path, hint, code)


@dataclasses.dataclass
class Entry:
    """One document's conclusion: its kind, warnings (in order) and what a replay needs."""

    kind: str
    name: str
    encrypted_paths: frozenset[tuple[str | int, ...]]
    diagnostics: list[DiagnosticRow]
    base_url: str = ""  # Instance
    desired: tuple[Any, ...] = ()  # OutgoingLink: see :meth:`ValidationCache.link_entry`
    secret: tuple[str, str, int] = ("none", "", 0)  # kind, reference, diagnostics before it

    def rest(self) -> tuple[Any, ...]:
        """The stored fields after the encrypted paths, in their stored order."""
        return (self.diagnostics, self.base_url, self.desired, self.secret)


def cacheable_paths(doc: Document) -> bool:
    """True when no decrypted value of ``doc`` would be in its entry (only clientSecret encrypted)."""
    return all(p in _UNSTORED or p[:2] == ("metadata", "annotations") for p in doc.encrypted_paths)


class ValidationCache:
    """Entries per file under ``valid-<version>-<format>`` in linkctl's cache directory."""

    def __init__(self, root: Path) -> None:
        self.blobs = ParseCache(root)  # the same private, content-keyed files

    @classmethod
    def for_env(cls, env: Mapping[str, str]) -> ValidationCache | None:
        """The cache of this environment, or None when caching is off (``LINKCTL_NO_CACHE``)."""
        base = cache_home(env)
        return None if base is None else cls(base / f"valid-{__version__}-{RULES_FORMAT}")

    @staticmethod
    def instance_key(loaded: LoadResult) -> str | None:
        """What the Instance contributes to every key; None when it cannot be told (no caching)."""
        instances = [d for d in loaded.documents if d.kind == "Instance"]
        if not instances:
            return "no-instance"
        if len(instances) > 1 or instances[0].file not in loaded.file_keys:
            return None
        return f"{loaded.file_keys[instances[0].file]}#{instances[0].index}"

    @staticmethod
    def key(loaded: LoadResult, file: str, instance: str) -> str | None:
        """The entry key of ``file``: its text, the Instance and the rules' version."""
        text = loaded.file_keys.get(file)
        if text is None:
            return None
        return hashlib.sha256(f"{rules_version()}\n{instance}\n{text}".encode()).hexdigest()

    def put(self, key: str, entries: Mapping[int, Entry]) -> None:
        """Store a file's entries (best effort, like the parse cache)."""
        payload = marshal.dumps(
            [
                (i, e.kind, e.name, tuple(sorted(e.encrypted_paths, key=repr)), *e.rest())
                for i, e in sorted(entries.items())
            ]
        )
        self.blobs.put(key, hashlib.sha256(payload).digest() + payload)

    def get(self, key: str) -> dict[int, Entry] | None:
        """A file's entries, or None for a miss, a damaged or a malformed entry."""
        blob = self.blobs.read(key)
        if blob is None or len(blob) < 32 or hashlib.sha256(blob[32:]).digest() != blob[:32]:
            return None
        try:
            rows = marshal.loads(blob[32:])
            entries = {}
            for index, kind, name, paths, diagnostics, base_url, desired, secret in rows:
                if not (
                    isinstance(index, int) and kind in ("Instance", "OutgoingLink") and isinstance(name, str)
                ):
                    return None
                if not (
                    isinstance(base_url, str) and isinstance(desired, tuple) and isinstance(secret, tuple)
                ):
                    return None
                if (
                    secret[0] not in _SECRET_KINDS
                    or not isinstance(secret[1], str)
                    or not isinstance(secret[2], int)
                ):
                    return None
                for row in diagnostics:
                    _diagnostic(row, "")  # shape check
                entries[index] = Entry(
                    kind, name, frozenset(paths), list(diagnostics), base_url, desired, secret
                )
        except (ValueError, EOFError, TypeError):
            return None
        return entries


@dataclasses.dataclass(frozen=True)
class CachedMetadata:
    """The Instance's name, as a replay knows it."""

    name: str


@dataclasses.dataclass(frozen=True)
class CachedInstanceSpec:
    """The Instance's base URL, as a replay knows it."""

    baseUrl: str  # the model's field name


@dataclasses.dataclass(frozen=True)
class CachedInstance:
    """What planning and applying read of the Instance, without the pydantic model."""

    metadata: CachedMetadata
    spec: CachedInstanceSpec


def link_entry(
    doc: Document, link: DesiredLink, diagnostics: list[Diagnostic], secret: tuple[str, str, int]
) -> Entry:
    """The entry of a valid link (``diagnostics``: its warnings, in order)."""
    desired = (
        link.name,
        link.provider,
        link.spec if isinstance(link.spec, dict) else dict(link.spec),
        link.deletion_policy,
        link.renamed_from,
        tuple(sorted(link.sensitive_fields)),
        None if link.renamed_from_at is None else _row(link.renamed_from_at),
    )
    return Entry(
        "OutgoingLink", link.name, doc.encrypted_paths, [_row(d) for d in diagnostics], "", desired, secret
    )


def instance_entry(doc: Document, name: str, base_url: str, diagnostics: list[Diagnostic]) -> Entry:
    """The entry of a valid Instance."""
    return Entry("Instance", name, doc.encrypted_paths, [_row(d) for d in diagnostics], base_url)


def remember(
    loaded: LoadResult,
    entries: Mapping[tuple[str, int], Entry],
    diagnostics: Sequence[Diagnostic],
    *,
    env: Mapping[str, str],
) -> None:
    """Store the entries of every file that validated with no error and whose documents all have one."""
    cache = ValidationCache.for_env(env)
    instance = ValidationCache.instance_key(loaded)
    if cache is None or instance is None:
        return
    failed = {d.file for d in diagnostics if d.is_error}
    by_file: dict[str, list[Document]] = {}
    for doc in loaded.documents:
        by_file.setdefault(doc.file, []).append(doc)
    for file, docs in by_file.items():
        if file in failed or not all((file, d.index) in entries for d in docs):
            continue
        key = ValidationCache.key(loaded, file, instance)
        if key is not None:
            cache.put(key, {d.index: entries[(file, d.index)] for d in docs})


class _Replay:
    """A validation run from the cache: the rules that depend on the environment or other files."""

    def __init__(self, loaded: LoadResult) -> None:
        self.diagnostics: list[Diagnostic] = list(loaded.diagnostics)
        self.errors = 0

    def error(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        """Record an error (the link is then not desired)."""
        self.errors += 1
        self.diagnostics.append(doc.diagnostic(ERROR, message, path, **kw))

    def warn(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        """Record a warning."""
        self.diagnostics.append(doc.diagnostic(WARNING, message, path, **kw))


def replay(loaded: LoadResult, *, env: Mapping[str, str]) -> ValidationResult | None:
    """The validation result of ``loaded`` from the cache, or None unless every document is cached.

    Never more lenient than :class:`~reconciler.validate.validator.Validator`: anything it
    cannot vouch for (a load error, a miss, a changed set of encrypted fields) is a None,
    and the caller validates in full.
    """
    cache = ValidationCache.for_env(env)
    instance_key = ValidationCache.instance_key(loaded)
    if cache is None or instance_key is None or not loaded.documents:
        return None
    if any(d.is_error for d in loaded.diagnostics):
        return None
    entries: dict[tuple[str, int], Entry] = {}
    for file in dict.fromkeys(d.file for d in loaded.documents):
        key = ValidationCache.key(loaded, file, instance_key)
        found = None if key is None else cache.get(key)
        if found is None:
            return None
        entries.update(((file, i), e) for i, e in found.items())
    docs: list[tuple[Document, Entry]] = []
    for doc in loaded.documents:
        entry = entries.get((doc.file, doc.index))
        if entry is None or entry.kind != doc.kind or entry.encrypted_paths != doc.encrypted_paths:
            return None
        if entry.kind == "OutgoingLink" and not _usable(entry, doc):
            return None
        docs.append((doc, entry))
    run = _Replay(loaded)
    instance = None
    for doc, entry in docs:
        if entry.kind == "Instance":
            instance = CachedInstance(CachedMetadata(entry.name), CachedInstanceSpec(entry.base_url))
            run.diagnostics.extend(_diagnostic(row, doc.file) for row in entry.diagnostics)
    links: list[DesiredLink] = []
    seen: dict[str, Document] = {}
    for doc, entry in docs:
        if entry.kind == "OutgoingLink":
            link = _replay_link(run, doc, entry, env=env, roots=loaded.roots, seen=seen)
            if link is not None:
                links.append(link)
    check_renames(run, [(doc, e.desired[0], e.desired[4]) for doc, e in docs if e.kind == "OutgoingLink"])
    return ValidationResult(run.diagnostics, instance, links, loaded.skipped, loaded.files)


def _usable(entry: Entry, doc: Document) -> bool:
    """An OutgoingLink entry of the expected shape, for this document (else: validate in full)."""
    if len(entry.desired) != 7:
        return False
    name, provider, spec, deletion_policy, renamed_from, sensitive, renamed_at = entry.desired
    if entry.secret[0] == "sops":
        spec_data = doc.data.get("spec") if isinstance(doc.data, dict) else None
        if not isinstance(spec_data, dict) or not isinstance(spec_data.get("clientSecret"), str):
            return False
    return (
        name == entry.name == doc.name
        and isinstance(provider, str)
        and isinstance(spec, dict)
        and isinstance(deletion_policy, str)
        and isinstance(renamed_from, str | None)
        and isinstance(sensitive, tuple)
        and (not sensitive or all(isinstance(s, str) for s in sensitive))
        and (renamed_at is None or _is_row(renamed_at))
        and 0 <= entry.secret[2] <= len(entry.diagnostics)
    )


def _is_row(row: Any) -> bool:
    try:
        _diagnostic(row, "")
    except (ValueError, TypeError):
        return False
    return True


def _replay_link(
    run: _Replay,
    doc: Document,
    entry: Entry,
    *,
    env: Mapping[str, str],
    roots: Sequence[str],
    seen: dict[str, Document],
) -> DesiredLink | None:
    """A cached link checked again where it depends on the environment and other files."""
    name, provider, spec, deletion_policy, renamed_from, sensitive, renamed_at = entry.desired
    if not remember_name(run, seen, doc, name):
        return None
    kind, reference, before = entry.secret
    # Most links have no warnings: no lists to build or slice for them (10,000 per replay).
    cached = [_diagnostic(row, doc.file) for row in entry.diagnostics] if entry.diagnostics else []
    if before:
        run.diagnostics.extend(cached[:before])
    errors = run.errors
    if kind == "sops":  # decrypted in memory by load (checked by _usable)
        reference = doc.data["spec"]["clientSecret"]
    value = read_source(
        run,
        doc,
        kind,
        reference,
        ("spec", "clientSecret"),
        what="clientSecret",
        env=env,
        roots=roots,
        allow_plaintext=False,
    )
    secrets = {} if value is None else {"clientSecret": value}
    if len(cached) > before:
        run.diagnostics.extend(cached[before:])
    if run.errors > errors:
        return None
    return _build_desired(
        (
            name,
            provider,
            spec,
            secrets,
            doc.file,
            doc.line,
            deletion_policy,
            renamed_from,
            frozenset(sensitive),
            None if renamed_at is None else _diagnostic(renamed_at, doc.file),
        )
    )


_build_desired = record_builder(DesiredLink)  # all fields, in order (10,000 per replay)
