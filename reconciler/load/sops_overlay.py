"""SOPS files: decrypt in memory and overlay the plaintext onto the positioned documents.

:mod:`reconciler.sops` is imported only when a file has a ``sops:`` block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.diagnostics import ERROR, format_path
from reconciler.diagnostics import Path as JsonPath
from reconciler.load.documents import Document, LoadResult, is_encrypted


def sops_format(path: Path) -> str:
    """The format a SOPS file is read as: JSON for a ``.json`` name, YAML otherwise."""
    return "json" if path.suffix.lower() == ".json" else "yaml"


def decrypt_into(
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
            fmt=sops_format(path),
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
            doc.data = overlay(doc.data, tree, (), encrypted)
        except ValueError as exc:
            result.diagnostics.append(
                sops_doc.diagnostic(
                    ERROR, f"SOPS file structure does not match its decryption: {exc}", code="sops"
                )
            )
            return False
        doc.encrypted_paths = frozenset(encrypted)
    return True


def overlay(mine: Any, plain: Any, path: JsonPath, encrypted: set[JsonPath]) -> Any:
    """Take decrypted values where ours are ENC[...] strings; keep our structure elsewhere."""
    from reconciler.sops import is_encrypted_comment

    if is_encrypted(mine):
        encrypted.add(path)
        return plain
    if isinstance(mine, dict) and isinstance(plain, dict):
        return {k: overlay(v, plain.get(k), (*path, k), encrypted) for k, v in mine.items()}
    if isinstance(mine, list) and isinstance(plain, list):
        # sops 3.11 writes an encrypted comment inside a list as an item; it is not data.
        items = [m for m in mine if not is_encrypted_comment(m)]
        if len(items) != len(plain):
            raise ValueError(
                f"list at {format_path(path) or 'the top'} has {len(items)} items encrypted "
                f"but {len(plain)} decrypted"
            )
        return [
            overlay(m, p, (*path, i), encrypted) for i, (m, p) in enumerate(zip(items, plain, strict=True))
        ]
    if isinstance(mine, dict | list) or isinstance(plain, dict | list):
        raise ValueError(f"structure at {format_path(path) or 'the top'} differs after decryption")
    return mine  # an unencrypted leaf: our own (YAML 1.2, position-keeping) reading is the one validated


def opaque_into(display: str, text: str, documents: list[Document], result: LoadResult, *, fmt: str) -> bool:
    """Check a SOPS file without decrypting it; its encrypted values stay opaque ``ENC[…]`` strings.

    For ``validate --no-decrypt``: the ``sops`` block and the form of every encrypted value are
    checked (problems reported at ``file:line``); each document is marked :attr:`Document.opaque`
    and its encrypted paths recorded, so validation treats them as present, of unknown content.
    """
    from reconciler import sops
    from reconciler.errors import LinkctlError
    from reconciler.sops.unopened import check_unopened

    sops_doc = next(d for d in documents if isinstance(d.data, dict) and "sops" in d.data)
    try:
        # Parsed again as sops reads it (YAML 1.2 via its own reader): the tree it would check.
        trees = sops.parse_documents(text, filename=display, fmt=fmt)
    except LinkctlError as exc:
        result.diagnostics.append(sops_doc.diagnostic(ERROR, str(exc), ("sops",), hint=exc.hint, code="sops"))
        return False
    problems = check_unopened(trees, filename=display)
    for problem in problems:
        in_body = problem.path[:1] != ("sops",) and problem.document < len(documents)
        doc = documents[problem.document] if in_body else sops_doc
        result.diagnostics.append(
            doc.diagnostic(ERROR, problem.message, problem.path, hint=problem.hint, code="sops", key=True)
        )
    if problems:
        return False
    for doc in documents:
        if isinstance(doc.data, dict):
            doc.data.pop("sops", None)
        encrypted: set[JsonPath] = set()
        doc.data = _opaque(doc.data, (), encrypted)
        doc.encrypted_paths = frozenset(encrypted)
        doc.opaque = True
    return True


def _opaque(node: Any, path: JsonPath, encrypted: set[JsonPath]) -> Any:
    """Record the paths of ``ENC[…]`` values; drop list items that are encrypted comments (as overlay)."""
    from reconciler.sops import is_encrypted_comment

    if is_encrypted(node):
        encrypted.add(path)
        return node
    if isinstance(node, dict):
        return {k: _opaque(v, (*path, k), encrypted) for k, v in node.items()}
    if isinstance(node, list):
        items = [item for item in node if not is_encrypted_comment(item)]
        return [_opaque(item, (*path, i), encrypted) for i, item in enumerate(items)]
    return node
