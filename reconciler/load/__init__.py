"""Load: files and directories → documents with positions, SOPS values decrypted in memory.

The first step of the flow (load → validate → plan → apply). It reads YAML and
JSON files, refuses what a YAML library would silently get wrong (duplicate
keys, YAML 1.1 look-alikes such as ``on``/``0755``/dates, alias bombs, huge
files) and keeps every node's position so later steps can report ``file:line``.
Documents of other tools (another ``apiVersion``) are skipped; encrypted SOPS
files are decrypted by :mod:`reconciler.sops` and overlaid onto the tree, so
positions still point into the encrypted file.

The package, by concern: :mod:`.files` (the walk and reading), :mod:`.parse` with
:mod:`.yaml_positions` (YAML 1.2, positions), :mod:`.parse_cache`, :mod:`.parse_ahead`
(a forked child), :mod:`.selection` (linkctl's documents) and :mod:`.sops_overlay`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from reconciler.diagnostics import ERROR, Diagnostic
from reconciler.load import parse
from reconciler.load.documents import (
    API_GROUP,
    API_VERSION,
    KINDS,
    SOPS_PREFIX,
    Document,
    LoadResult,
    SourceText,
)
from reconciler.load.files import EXTENSIONS, MAX_FILE_BYTES, InputFile, iter_files, read_file, read_once
from reconciler.load.parse_ahead import MEANWHILE_SHARE, PARSE_AHEAD_SHARE, start_parse_ahead
from reconciler.load.parse_cache import ParseCache, cacheable, remember_parsed
from reconciler.load.selection import documents_of

if TYPE_CHECKING:
    from reconciler.load.decryption_memo import DecryptionMemo

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "EXTENSIONS",
    "KINDS",
    "MAX_FILE_BYTES",
    "SOPS_PREFIX",
    "Document",
    "LoadResult",
    "ParseCache",
    "iter_files",
    "load_paths",
    "remember_parsed",
]


def load_paths(
    paths: Iterable[str],
    *,
    env: Mapping[str, str],
    ignore_mac: bool = False,
    decrypt: bool = True,
    meanwhile: Callable[[], object] | None = None,
    on_parse: Callable[[], object] | None = None,
    vouch: bool = False,
) -> LoadResult:
    """Read every file under ``paths`` into documents (never raises for bad input).

    ``decrypt=False`` leaves SOPS values encrypted (opaque), checking only what needs no key.
    ``vouch=True`` (for a caller that needs no secret value: ``validate``) loads a SOPS file
    that opened before with the same identities as *vouched* instead of opening it again, and
    remembers the files it opens (:mod:`.decryption_memo`).

    ``meanwhile`` is called while a forked child parses (see :data:`.parse_ahead.PARSE_AHEAD_MIN_BYTES`),
    or first thing otherwise: work that does not need the documents, such as imports.
    ``on_parse`` is called just before it, and only when some file is not in the parse
    cache (work worth doing only for a changed file, such as importing the validator).
    """
    result = LoadResult([], [], [], [])
    cache = ParseCache.for_env(env)
    memo = _memo_maker(env, ignore_mac=ignore_mac) if vouch and decrypt else None
    files: list[InputFile] = []
    paths = list(paths)
    result.roots = [arg if os.path.isdir(arg) else os.path.dirname(arg) or "." for arg in paths]
    for display, path, problem in read_once(iter_files(paths)):
        if path is None:
            result.diagnostics.append(
                Diagnostic(ERROR, problem or "cannot read", display, None, None, (), None, "no-file")
            )
            continue
        result.files.append(display)
        files.append(read_file(display, path, cache))
    misses = [f for f in files if f.text is not None and f.parsed is None]
    busy = meanwhile is not None
    ahead = start_parse_ahead(misses, PARSE_AHEAD_SHARE + (MEANWHILE_SHARE if busy else 0.0), busy=busy)
    try:
        if on_parse is not None and misses:
            on_parse()
        if meanwhile is not None:
            meanwhile()
        for file in files:
            if file.text is None:
                result.diagnostics.extend(file.problems)
                continue
            if file.parsed is None and file.display in ahead.names:
                file.parsed, file.encoded = ahead.result(file.display) or (None, None)
            _load_text(file, result, cache, env=env, ignore_mac=ignore_mac, decrypt=decrypt, memo=memo)
    finally:
        ahead.close()
    return result


def _memo_maker(env: Mapping[str, str], *, ignore_mac: bool) -> Callable[[], DecryptionMemo | None]:
    """The decryption memo, made when the first SOPS file needs it (it reads the key files)."""

    @functools.cache
    def memo() -> DecryptionMemo | None:
        from reconciler.load.decryption_memo import DecryptionMemo

        return DecryptionMemo.for_env(env, ignore_mac=ignore_mac)

    return memo


def _load_text(
    file: InputFile,
    result: LoadResult,
    cache: ParseCache | None,
    *,
    env: Mapping[str, str],
    ignore_mac: bool,
    decrypt: bool = True,
    memo: Callable[[], DecryptionMemo | None] | None = None,
) -> None:
    """Parse a read file (unless the cache or the child did) and add its documents to ``result``."""
    assert file.text is not None
    display, path, text = file.display, file.path, file.text
    outcome = file.parsed or parse.parse_text(display, path, text, result)
    if outcome is None:
        return
    parsed, per_document, json_fallback = outcome
    if file.key:
        result.file_keys[display] = file.key
    source = None if json_fallback else SourceText(text)
    if cache is not None and not file.cached and all(cacheable(data) for data, _ in parsed):
        # Encoded now: decryption later changes these objects (the sops block is removed).
        blob = file.encoded or cache.encode(parsed, per_document, json_fallback)
        result.cache_candidates[display] = (cache, file.key, blob)
    documents_of(
        display,
        path,
        text,
        parsed,
        per_document,
        source,
        result,
        env=env,
        ignore_mac=ignore_mac,
        decrypt=decrypt,
        memo=memo,
        file_key=file.key,
    )
