"""What can be checked of a SOPS file without its data key (``validate --no-decrypt``).

Without a key the MAC cannot be verified (it is encrypted with the data key) and no value
can be read; what remains checkable is the shape sops itself needs to open the file: a
well-formed ``sops`` block (its encryption rule, at least one key, ``lastmodified``, a MAC)
and every value its rule encrypts written in sops' ``ENC[AES256_GCM,…]`` form. Nothing here
reads an identity, a key file or the network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconciler.errors import LinkctlError
from reconciler.sops import data_key, tree, values
from reconciler.sops.config import EncryptionRule

# Where a problem is, relative to the document holding the ``sops`` block or to a body.
Where = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One reason sops would refuse the file: a message (no value quoted) and where."""

    message: str
    path: Where
    document: int = 0
    hint: str | None = None


_RESTORE = "the file was modified without sops; restore it from git, or re-encrypt it with sops"


def check_unopened(docs: list[Any], *, filename: str) -> list[Problem]:
    """Problems sops would report for parsed documents whose first holds the ``sops`` block."""
    meta = docs[0].get("sops") if docs and isinstance(docs[0], dict) else None
    if not isinstance(meta, dict):
        return [Problem(f"{filename}: the 'sops' metadata is not a mapping", ("sops",))]
    problems: list[Problem] = []
    try:
        rule = EncryptionRule.from_mapping(meta, f"{filename}: sops metadata")
    except LinkctlError as exc:
        return [Problem(exc.message, ("sops",), hint=_RESTORE)]
    try:
        groups = data_key._groups(meta, filename)
    except LinkctlError as exc:
        problems.append(Problem(exc.message, ("sops",), hint=_RESTORE))
    else:
        if not any(_has_wrapped_key(entries) for group in groups for entries in group.values()):
            problems.append(
                Problem(f"{filename}: the sops metadata holds no wrapped data key", ("sops",), hint=_RESTORE)
            )
    try:
        tree._lastmodified_text(meta.get("lastmodified"), filename)
    except LinkctlError as exc:
        problems.append(Problem(exc.message, ("sops", "lastmodified"), hint=_RESTORE))
    mac = meta.get("mac")
    if not isinstance(mac, str) or not mac:
        problems.append(
            Problem(
                f"{filename}: MAC missing: the file has no MAC (it was modified without sops)",
                ("sops", "mac"),
                hint=_RESTORE,
            )
        )
    elif values.parse_enc(mac) is None:
        problems.append(
            Problem(
                f"{filename}: the MAC does not match sops' data format (ENC[AES256_GCM,…])",
                ("sops", "mac"),
                hint=_RESTORE,
            )
        )
    selector = tree.Selector(rule)
    for index, doc in enumerate(docs):
        if isinstance(doc, dict):
            body = {k: v for k, v in doc.items() if k != "sops"}
            _check_leaves(body, (), (), selector, filename, index, problems)
    return problems


def _has_wrapped_key(entries: Any) -> bool:
    """True when a key group's entry list holds at least one wrapped key (``enc``)."""
    return isinstance(entries, list) and any(isinstance(e, dict) and e.get("enc") for e in entries)


def _check_leaves(
    node: Any,
    keys: tuple[str, ...],
    where: Where,
    selector: tree.Selector,
    filename: str,
    document: int,
    problems: list[Problem],
) -> None:
    """Every leaf the rule encrypts must be an ``ENC[…]`` string (or empty, as sops leaves it)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_leaves(value, (*keys, str(key)), (*where, key), selector, filename, document, problems)
        return
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_leaves(item, keys, (*where, i), selector, filename, document, problems)
        return
    if node is None:
        return
    encrypted = (
        isinstance(node, str) and node.startswith("ENC[") if selector.by_appearance else selector(keys)
    )
    if not encrypted or node == "":
        return
    shown = ".".join(str(p) for p in where) or "<root>"
    if not isinstance(node, str) or values.parse_enc(node) is None:
        problems.append(
            Problem(
                f"{filename}: {shown}: value does not match sops' data format (ENC[AES256_GCM,…]):"
                " the file's rule encrypts it",
                where,
                document,
                hint=_RESTORE,
            )
        )
