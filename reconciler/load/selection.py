"""Which parsed documents are linkctl's: other tools' documents are skipped, with a reason."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.diagnostics import ERROR, WARNING, Diagnostic
from reconciler.load.documents import (
    API_GROUP,
    API_VERSION,
    KINDS,
    SOPS_PREFIX,
    Document,
    LoadResult,
    SourceText,
)
from reconciler.load.parse import Parsed
from reconciler.load.sops_overlay import decrypt_into, opaque_into, sops_format

if TYPE_CHECKING:
    from reconciler.load.decryption_memo import DecryptionMemo

# Why a SOPS file is skipped by ``validate --no-decrypt`` (its "not checked" note quotes it).
NOT_CHECKED_ENCRYPTED_API_VERSION = (
    "SOPS file whose apiVersion is encrypted: without decryption nothing in it can be checked"
)


def documents_of(
    display: str,
    path: Path,
    text: str,
    parsed: Parsed,
    per_document: dict[int, list[Diagnostic]],
    source: SourceText | None,
    result: LoadResult,
    *,
    env: Mapping[str, str],
    ignore_mac: bool,
    decrypt: bool = True,
    memo: Callable[[], DecryptionMemo | None] | None = None,
    file_key: str = "",
) -> None:
    """Turn parsed documents into ours (decrypting SOPS files), skipping other tools' documents.

    ``decrypt=False`` (``validate --no-decrypt``) checks SOPS files without opening them;
    with a ``memo`` (made on first use), a file that opened before is vouched for instead of
    opened again.
    """
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
        if not decrypt:
            if not ours:
                result.skipped.append(f"{display}: {NOT_CHECKED_ENCRYPTED_API_VERSION}")
                return
            if not opaque_into(display, text, documents, result, fmt=sops_format(path)):
                return
        elif not ours:
            # apiVersion itself is encrypted (sops's default rule): only decryption can tell
            # whether this is ours; a file we cannot open is another tool's business.
            probe = LoadResult([], [], [], [])
            if not decrypt_into(display, path, text, documents, probe, env=env, ignore_mac=ignore_mac):
                result.skipped.append(
                    f"{display}: SOPS file whose apiVersion is encrypted and that cannot be decrypted here"
                )
                return
        else:
            opened = memo() if memo is not None else None
            fmt = sops_format(path)  # the memo key holds the format decrypt_into reads
            known = opened is not None and opened.opened_before(file_key, fmt)
            if known and _vouch_into(documents):
                pass  # opened before with these identities: its ENC[...] values stand in for secrets
            elif not decrypt_into(display, path, text, documents, result, env=env, ignore_mac=ignore_mac):
                return
            elif opened is not None and not known:
                opened.remember(file_key, fmt, documents)

    # YAML traps only matter in documents linkctl reads: other tools' documents (a Kubernetes
    # Secret with `on: no`, say) are skipped, so their quirks must not fail the file.
    for doc in documents:
        found = per_document.get(doc.index)
        if found and (_is_ours([doc]) or (not isinstance(doc.data, dict) and _looks_ours(doc.data))):
            result.diagnostics.extend(found)
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


def _vouch_into(documents: list[Document]) -> bool:
    """:func:`.decryption_memo.vouch_into` (its module is imported by then: the memo was made)."""
    from reconciler.load.decryption_memo import vouch_into

    return vouch_into(documents)
