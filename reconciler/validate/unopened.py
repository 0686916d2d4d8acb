"""``validate --no-decrypt``: every check that needs no decrypted value, and a list of what was not checked.

Where secrets are not available (a pull request from a fork) SOPS files are checked without
being opened (:func:`reconciler.load.sops_overlay.opaque_into`): their metadata and the form
of each encrypted value. Encrypted values stay ``ENC[…]`` strings, so they count as present;
a finding about an encrypted value's content (a URL's form, a secret's length, a type) would
be about the ciphertext, so it is set aside and the value is listed as not checked instead.
Nothing here reads a key, the store or the network, and no cache is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from reconciler.diagnostics import Diagnostic, format_path
from reconciler.diagnostics import Path as JsonPath
from reconciler.load import Document, load_paths
from reconciler.load.selection import NOT_CHECKED_ENCRYPTED_API_VERSION
from reconciler.validate.paths import lookup
from reconciler.validate.results import ValidationResult

# The diagnostic code of a secret written in plaintext (``linkctl secrets check`` reports these).
PLAINTEXT_SECRET = "plaintext-secret"

# Only presence matters for these: an opaque value is a full check of them.
_PRESENCE_ONLY_LEAF = "clientSecret"


@dataclasses.dataclass(frozen=True)
class NotChecked:
    """One thing ``--no-decrypt`` could not check, and why (never a value)."""

    file: str
    line: int | None
    path: JsonPath
    reason: str

    def render(self) -> str:
        """``file:line: not checked: reason (at path)``."""
        where = self.file + (f":{self.line}" if self.line is not None else "")
        at = f" (at {format_path(self.path)})" if self.path else ""
        return f"{where}: not checked: {self.reason}{at}"

    def to_json(self) -> dict[str, object]:
        """The note as ``validate -o json`` lists it under ``not_checked``."""
        return {"file": self.file, "line": self.line, "path": list(self.path), "reason": self.reason}


@dataclasses.dataclass
class UnopenedValidation:
    """What ``validate --no-decrypt`` found: the result, what it could not check, the links that passed."""

    result: ValidationResult
    not_checked: list[NotChecked]
    # Links whose file has no error left: a link with an opaque value or an unset fromEnv
    # is not desired (not fully checked), yet it passed every check that could be made.
    link_names: list[str]


def validate_without_decryption(paths: Iterable[str], *, env: Mapping[str, str]) -> UnopenedValidation:
    """Load ``paths`` without decrypting, validate, and say what could not be checked."""
    from reconciler.validate import validate

    loaded = load_paths(paths, env=env, decrypt=False)
    result = validate(loaded, env=env)
    opaque: dict[str, list[JsonPath]] = {}
    notes: list[NotChecked] = []
    for doc in loaded.documents:
        if not doc.opaque:
            continue
        for path in sorted(doc.encrypted_paths, key=str):
            opaque.setdefault(doc.file, []).append(path)
            line, _ = doc.locate(path)
            reason = (
                "encrypted, so counted as present; its content (and the rules on it) not checked"
                if path[-1:] == (_PRESENCE_ONLY_LEAF,)
                else "encrypted value: the rules on its content (form, URL, length, type) were not run"
            )
            notes.append(NotChecked(doc.file, line, path, reason))
    for skipped in result.skipped:
        file, _, reason = skipped.partition(": ")
        if reason == NOT_CHECKED_ENCRYPTED_API_VERSION:
            notes.append(NotChecked(file, None, (), "its apiVersion is encrypted: nothing in it was checked"))
    kept: list[Diagnostic] = []
    for diagnostic in result.diagnostics:
        if _about_opaque(diagnostic, opaque):
            continue
        if _unset_env(diagnostic, loaded.documents):
            # A fork's job has no CI secrets either: an unset fromEnv variable is not checked here.
            reason = "its environment variable is not set here, so the secret was not read"
            if diagnostic.code == "secret-empty":
                diagnostic = dataclasses.replace(diagnostic, path=(*diagnostic.path, "fromEnv"))
            notes.append(NotChecked(diagnostic.file or "", diagnostic.line, diagnostic.path, reason))
            continue
        kept.append(diagnostic)
    result.diagnostics[:] = kept
    failed = {d.file for d in result.diagnostics if d.is_error}
    names = {link.name for link in result.links}
    names.update(
        doc.name
        for doc in loaded.documents
        if doc.kind == "OutgoingLink" and doc.name and doc.file not in failed
    )
    return UnopenedValidation(result, notes, sorted(names))


def _unset_env(diagnostic: Diagnostic, documents: Sequence[Document]) -> bool:
    """True for a ``fromEnv`` variable that is unset or empty (CI gives a missing secret as "")."""
    if diagnostic.code == "secret-unresolved":
        return diagnostic.path[-1:] == ("fromEnv",)
    if diagnostic.code != "secret-empty":
        return False
    return any(
        doc.file == diagnostic.file
        and isinstance(source := lookup(doc, diagnostic.path), dict)
        and "fromEnv" in source
        for doc in documents
    )


def _about_opaque(diagnostic: Diagnostic, opaque: Mapping[str, list[JsonPath]]) -> bool:
    """True for a finding on an opaque value (at or under it, or on the list/mapping holding it).

    Those were computed from the ciphertext, not the value. The encrypted-readable-field
    warning is about which paths are encrypted, not their content: it stays.
    """
    paths = opaque.get(diagnostic.file or "", ())
    if diagnostic.code in ("encrypted-readable-field", "sops"):
        return False
    at = tuple(diagnostic.path)
    for path in paths:
        if at[: len(path)] == path:
            return True
        if len(at) >= 2 and path[: len(at)] == at:
            return True
    return False
