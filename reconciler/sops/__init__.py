"""SOPS-compatible encrypted files with age recipients, read and written without a sops binary.

The public surface is this module: :func:`decrypt_text`,
:func:`encrypt_text`, :func:`detect_format` and :class:`EncryptionRule`. The loader
(``reconciler.load``) calls :func:`decrypt_text` for files with a ``sops:`` block;
the CLI (``linkctl secrets …``) calls both directions. Everything else in the package
is private. Every failure is a :class:`~reconciler.errors.CryptoError` naming the file.

Decrypted trees hold ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``, plus
``datetime.datetime`` (timezone-aware) for YAML timestamps and ``type:time`` values, and
``bytes`` for the rare ``type:bytes``. ``type:float`` values without a fraction come back
as ``int`` (sops stores JSON integers as floats).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError, CryptoError

if TYPE_CHECKING:
    from reconciler.sops.config import EncryptionRule
    from reconciler.sops.tree import KeyPlan

    LINK_DEFAULT_RULE: EncryptionRule

__all__ = [
    "LINK_DEFAULT_RULE",
    "CryptoError",
    "EncryptionRule",
    "decrypt_text",
    "detect_format",
    "dump_documents",
    "encrypt_text",
    "is_encrypted_comment",
    "parse_documents",
]

LINK_API_PREFIX = "linkctl.dev/"
_LINK_DEFAULT_REGEX = "^(clientSecret)$"


if not TYPE_CHECKING:  # for mypy the names are declared above: an unknown one stays an error

    def __getattr__(name: str) -> Any:
        """``EncryptionRule`` and ``LINK_DEFAULT_RULE``, imported on first use.

        Their module reads ``.sops.yaml`` and imports YAML: a caller of the light modules
        (:mod:`.key_sources`, :func:`is_encrypted_comment`) must not pay for it.
        """
        if name in ("EncryptionRule", "LINK_DEFAULT_RULE"):
            from reconciler.sops.config import EncryptionRule

            if name == "EncryptionRule":
                return EncryptionRule
            return EncryptionRule(encrypted_regex=_LINK_DEFAULT_REGEX)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def detect_format(filename: str, text: str | None = None) -> str:
    """``"yaml"`` or ``"json"`` from the file name (content sniffed for other names); dotenv/INI refused."""
    lower = filename.lower()
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if lower.endswith(".env") or os.path.basename(lower) == ".env":
        raise CryptoError(
            f"{filename}: the dotenv sops format is not supported by linkctl; use YAML or JSON",
            hint="decrypt it with the sops binary, or convert the file to YAML",
        )
    if lower.endswith(".ini"):
        raise CryptoError(
            f"{filename}: the INI sops format is not supported by linkctl; use YAML or JSON",
            hint="decrypt it with the sops binary, or convert the file to YAML",
        )
    if text is not None and text.lstrip().startswith("{"):
        return "json"
    return "yaml"


def _parse(text: str, *, filename: str, fmt: str, comments: bool = False) -> list[Any]:
    from reconciler.sops import yamlv3

    if fmt not in ("yaml", "json"):
        raise CryptoError(f"{filename}: unsupported format {fmt!r} (expected yaml or json)")
    if not text.strip() and fmt == "yaml" and not text:
        raise CryptoError(
            f"{filename}: file cannot be completely empty, it must contain at least one document"
        )
    try:
        docs = [yamlv3.load_json(text)] if fmt == "json" else yamlv3.load_all(text, comments=comments)
    except yamlv3.YAMLError as exc:
        raise CryptoError(f"{filename}: {exc}") from None
    if not docs:
        raise CryptoError(f"{filename}: the file contains no document")
    out: list[Any] = []
    for index, doc in enumerate(docs):
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise CryptoError(f"{filename}: document {index + 1} is not a mapping (sops needs a mapping)")
        out.append(doc)
    return out


def dump_documents(
    documents: Sequence[Any], *, fmt: str, yaml_indent: int = 4, json_indent: str | int = "\t"
) -> str:
    """Serialize documents the way sops writes them (YAML block style / JSON)."""
    from reconciler.sops import yamlv3

    if fmt == "json":
        if len(documents) != 1:
            raise CryptoError("JSON output needs exactly one document")
        return yamlv3.dump_json(documents[0], indent=json_indent)
    return yamlv3.dump_yaml(list(documents), indent=yaml_indent)


def decrypt_text(
    text: str,
    *,
    filename: str,
    fmt: str,
    env: Mapping[str, str],
    ignore_mac: bool = False,
    comments: bool = False,
) -> list[Any]:
    """Decrypt a whole SOPS file (fmt "yaml" or "json"); return its documents as plain
    Python trees (dict/list/str/int/float/bool/None; `sops` key removed), in document order,
    with the same mapping keys and list lengths as the encrypted file, except for list items
    that are encrypted comments (see :func:`is_encrypted_comment`), which are left out.
    Raises CryptoError.

    ``comments=True`` (for writing the plaintext back out with :func:`dump_documents`) keeps
    the YAML comments, decrypted, as ``yamlv3.Comment`` items where sops keeps them."""
    from reconciler.sops import keys, tree, yamlv3

    docs = _parse(text, filename=filename, fmt=fmt, comments=comments)
    plain = tree.decrypt_documents(
        docs, filename=filename, ring_factory=lambda: keys.load_keyring(env), ignore_mac=ignore_mac
    )
    return plain if comments else [yamlv3.strip_comments(doc) for doc in plain]


def parse_documents(text: str, *, filename: str, fmt: str) -> list[Any]:
    """The documents of a SOPS file as sops reads them (mappings; ``sops`` block kept). Raises CryptoError."""
    return _parse(text, filename=filename, fmt=fmt)


def is_encrypted_comment(value: object) -> bool:
    """True for an ``ENC[…,type:comment]`` string: sops 3.11 writes an encrypted comment of a
    list as a list item of that form. It is not data; :func:`decrypt_text` leaves it out."""
    return isinstance(value, str) and value.startswith("ENC[AES256_GCM,") and value.endswith(",type:comment]")


def _is_link_file(docs: list[Any]) -> bool:
    bodies = [d for d in docs if d]
    return bool(bodies) and all(
        isinstance(d.get("apiVersion"), str) and d["apiVersion"].startswith(LINK_API_PREFIX) for d in bodies
    )


def encrypt_text(
    text: str,
    *,
    filename: str,
    fmt: str,
    env: Mapping[str, str],
    recipients: Sequence[str] | None = None,
    rule: EncryptionRule | None = None,
    config_path: str | None = None,
) -> str:
    """Encrypt a plaintext YAML/JSON file for age recipients; the result is readable by sops 3.x.

    Recipients: ``recipients`` (like ``--age``), else the matching ``.sops.yaml`` creation rule
    (found from the working directory upwards, or ``config_path`` / ``SOPS_CONFIG``), else
    ``SOPS_AGE_RECIPIENTS``. The rule: ``rule`` over the creation rule; with neither, link files
    encrypt only ``clientSecret`` and other files use sops's ``unencrypted_suffix: _unencrypted``.
    """
    from reconciler.sops import config, tree

    docs = _parse(text, filename=filename, fmt=fmt, comments=True)
    if any("sops" in doc for doc in docs):
        raise CryptoError(f"{filename}: file already encrypted (it has a top-level 'sops' key)")
    cfg = config.load_config(config.find_config(env=env, cwd=os.getcwd(), override=config_path))
    try:
        creation = cfg.match(filename)
    except ConfigError:
        if not recipients:
            raise
        creation = None
    if recipients:
        groups: tuple[tuple[str, ...], ...] = (_split_recipients(recipients),)
        threshold = 0
    elif creation is not None and creation.key_groups:
        if creation.other_keys:
            raise CryptoError(_other_keys_message(filename, creation.other_keys))
        groups, threshold = creation.key_groups, creation.shamir_threshold
    elif creation is not None and creation.other_keys:
        raise CryptoError(_other_keys_message(filename, creation.other_keys))
    elif env.get("SOPS_AGE_RECIPIENTS"):
        groups, threshold = (_split_recipients([env["SOPS_AGE_RECIPIENTS"]]),), 0
    else:
        raise CryptoError(
            f"{filename}: no age recipients: pass --age, add a .sops.yaml creation rule, "
            "or set SOPS_AGE_RECIPIENTS"
        )
    base = creation.rule if creation is not None else config.EncryptionRule()
    chosen = rule.merged_over(base) if rule is not None else base
    if chosen.selector() is None and _is_link_file(docs):
        chosen = config.EncryptionRule(encrypted_regex=_LINK_DEFAULT_REGEX).merged_over(chosen)
    encrypted = tree.encrypt_documents(
        docs, filename=filename, plan=tree.KeyPlan(groups, threshold), rule=chosen
    )
    return dump_documents(encrypted, fmt=fmt, yaml_indent=cfg.yaml_indent, json_indent=cfg.json_indent)


def reencrypt_text(plaintext: str, *, like: str, filename: str, fmt: str, env: Mapping[str, str]) -> str:
    """Encrypt ``plaintext`` for the recipients, Shamir threshold and rule of the encrypted file ``like``.

    What ``secrets edit`` writes back: the file keeps who can read it and which values are
    encrypted, whatever ``.sops.yaml`` says now (as ``sops edit`` does); a new data key is drawn.
    """
    from reconciler.sops import config, tree

    meta = _sops_block(like, filename=filename, fmt=fmt)
    plan = _key_plan(meta, filename)
    rule = config.EncryptionRule.from_mapping(meta, f"{filename}: sops")
    docs = _parse(plaintext, filename=filename, fmt=fmt, comments=True)
    if any("sops" in doc for doc in docs):
        raise CryptoError(f"{filename}: the edited text has a top-level 'sops' key; remove it")
    try:
        cfg = config.load_config(config.find_config(env=env, cwd=os.getcwd()))
    except ConfigError:
        cfg = config.SopsConfig(path=None)  # only the indentation comes from it
    encrypted = tree.encrypt_documents(docs, filename=filename, plan=plan, rule=rule)
    return dump_documents(encrypted, fmt=fmt, yaml_indent=cfg.yaml_indent, json_indent=cfg.json_indent)


def _sops_block(text: str, *, filename: str, fmt: str) -> Mapping[str, Any]:
    docs = _parse(text, filename=filename, fmt=fmt)
    meta = docs[0].get("sops")
    if not isinstance(meta, dict):
        raise CryptoError(f"{filename}: not a SOPS file (no top-level 'sops' key)")
    return meta


def _key_plan(meta: Mapping[str, Any], filename: str) -> KeyPlan:
    from reconciler.sops import config, tree

    def recipients(holder: Mapping[str, Any], where: str) -> tuple[str, ...]:
        other = [kind for kind in config.OTHER_KEY_TYPES if holder.get(kind)]
        if other:
            raise CryptoError(
                f"{filename}: {where} has {', '.join(other)} keys; linkctl writes age recipients only"
                " (refusing rather than silently dropping those keys); use `sops edit` for this file"
            )
        entries = holder.get("age") or []
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("recipient"), str) for e in entries
        ):
            raise CryptoError(f"{filename}: {where}.age is not a list of recipients")
        return tuple(e["recipient"] for e in entries)

    groups_meta = meta.get("key_groups")
    if isinstance(groups_meta, list) and groups_meta:
        groups = tuple(
            recipients(group if isinstance(group, dict) else {}, f"sops.key_groups[{index}]")
            for index, group in enumerate(groups_meta)
        )
        threshold = meta.get("shamir_threshold") or 0
        if not isinstance(threshold, int):
            raise CryptoError(f"{filename}: sops.shamir_threshold is not a number")
        plan = tree.KeyPlan(groups, threshold)
    else:
        plan = tree.KeyPlan((recipients(meta, "sops"),))
    if not plan.groups or any(not group for group in plan.groups):
        raise CryptoError(f"{filename}: the file names no age recipient to encrypt for again")
    return plan


def _split_recipients(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(out))


def _other_keys_message(filename: str, kinds: Sequence[str]) -> str:
    return (
        f"{filename}: the matching .sops.yaml rule uses {', '.join(kinds)} keys; "
        "linkctl writes age recipients "
        "only (refusing rather than silently dropping those keys); use sops for this file"
    )
