"""``.sops.yaml``: lookup (CWD upwards, ``--config``/``SOPS_CONFIG``), creation rules, stores.

Mirrors sops's rule semantics for the parts linkctl writes (age recipients, key
groups with Shamir, the encryption-selection rules, ``stores.*.indent``). Used by
:func:`reconciler.sops.encrypt_text` and the ``linkctl secrets encrypt`` command.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError
from reconciler.sops import yamlv3

CONFIG_NAME = ".sops.yaml"
MAX_LEVELS = 100
SELECTORS = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)
OTHER_KEY_TYPES = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "hckms", "hc_vault")


@dataclasses.dataclass(frozen=True)
class EncryptionRule:
    """Which leaves get encrypted: at most one selector, plus ``mac_only_encrypted``."""

    unencrypted_suffix: str | None = None
    encrypted_suffix: str | None = None
    unencrypted_regex: str | None = None
    encrypted_regex: str | None = None
    unencrypted_comment_regex: str | None = None
    encrypted_comment_regex: str | None = None
    mac_only_encrypted: bool = False

    def selector(self) -> tuple[str, str] | None:
        """The one selector that is set, as (name, value), or None; more than one is an error."""
        chosen = [(name, getattr(self, name)) for name in SELECTORS if getattr(self, name)]
        if len(chosen) > 1:
            names = ", ".join(n for n, _ in chosen)
            raise ConfigError(f"only one of {', '.join(SELECTORS)} may be set (got {names})")
        return chosen[0] if chosen else None

    def merged_over(self, base: EncryptionRule) -> EncryptionRule:
        """This rule's selector if it has one, else ``base``'s; ``mac_only_encrypted`` from either."""
        chosen = self if self.selector() else base
        return dataclasses.replace(
            chosen, mac_only_encrypted=self.mac_only_encrypted or base.mac_only_encrypted
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> EncryptionRule:
        """Read the selector fields of a creation rule or a ``sops:`` block."""
        values: dict[str, Any] = {}
        for name in SELECTORS:
            value = data.get(name)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {name} must be a string")
            values[name] = value
        mac_only = data.get("mac_only_encrypted", False)
        if not isinstance(mac_only, bool):
            raise ConfigError(f"{where}: mac_only_encrypted must be true or false")
        rule = cls(**values, mac_only_encrypted=mac_only)
        rule.selector()
        for name in (
            "unencrypted_regex",
            "encrypted_regex",
            "unencrypted_comment_regex",
            "encrypted_comment_regex",
        ):
            pattern = values.get(name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"{where}: {name} is not a valid regular expression: {exc}") from None
        return rule


@dataclasses.dataclass(frozen=True)
class CreationRule:
    """One ``creation_rules`` entry: which files, which recipients, which leaves."""

    path_regex: str | None
    key_groups: tuple[tuple[str, ...], ...]
    shamir_threshold: int
    rule: EncryptionRule
    other_keys: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SopsConfig:
    """A parsed ``.sops.yaml``."""

    path: Path | None
    creation_rules: tuple[CreationRule, ...] = ()
    has_creation_rules: bool = False
    yaml_indent: int = 4
    json_indent: str | int = "\t"

    def match(self, filename: str) -> CreationRule | None:
        """The first rule whose ``path_regex`` matches (relative to the config's directory)."""
        if not self.has_creation_rules:
            return None
        target = os.path.abspath(filename)
        if self.path is not None:
            base = str(self.path.resolve().parent) + os.sep
            if target.startswith(base):
                target = target[len(base) :]
        for rule in self.creation_rules:
            if rule.path_regex is None or re.search(rule.path_regex, target):
                return rule
        raise ConfigError(
            f"no matching creation rules found in {self.path} for {filename}",
            hint="add a creation rule whose path_regex matches, or pass --age",
        )


def find_config(*, env: Mapping[str, str], cwd: str, override: str | None = None) -> Path | None:
    """``--config``, else ``SOPS_CONFIG``, else the first ``.sops.yaml`` from ``cwd`` upwards."""
    explicit = override or env.get("SOPS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"sops config file {explicit} does not exist")
        return path
    here = Path(cwd).resolve()
    for _ in range(MAX_LEVELS):
        candidate = here / CONFIG_NAME
        if candidate.is_file():
            return candidate
        if here.parent == here:
            break
        here = here.parent
    return None


def _age_list(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: age recipients must be strings")
        out += [part.strip() for part in item.split(",") if part.strip()]
    return out


def _other_keys(data: Mapping[str, Any]) -> list[str]:
    return [name for name in OTHER_KEY_TYPES if data.get(name)]


def load_config(path: Path | None) -> SopsConfig:
    """Parse a ``.sops.yaml`` (``None`` gives the empty configuration)."""
    if path is None:
        return SopsConfig(path=None)
    try:
        docs = yamlv3.load_all(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except yamlv3.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    data = docs[0] if docs else None
    if data is None:
        return SopsConfig(path=path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    stores = data.get("stores") or {}
    yaml_indent = (stores.get("yaml") or {}).get("indent", 4) if isinstance(stores, dict) else 4
    json_indent = (stores.get("json") or {}).get("indent", "\t") if isinstance(stores, dict) else "\t"
    if not isinstance(yaml_indent, int) or isinstance(yaml_indent, bool) or not 1 <= yaml_indent <= 16:
        raise ConfigError(f"{path}: stores.yaml.indent must be a small positive integer")
    raw_rules = data.get("creation_rules")
    if raw_rules is None:
        return SopsConfig(path=path, yaml_indent=yaml_indent, json_indent=json_indent)
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{path}: creation_rules must be a list")
    rules: list[CreationRule] = []
    for index, raw in enumerate(raw_rules):
        where = f"{path}: creation_rules[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping")
        path_regex = raw.get("path_regex")
        if path_regex is not None:
            try:
                re.compile(str(path_regex))
            except re.error as exc:
                raise ConfigError(f"{where}: path_regex is invalid: {exc}") from None
        groups: list[tuple[str, ...]] = []
        other: list[str] = []
        if raw.get("key_groups"):
            for g_index, group in enumerate(raw["key_groups"]):
                if not isinstance(group, dict):
                    raise ConfigError(f"{where}: key_groups[{g_index}] must be a mapping")
                other += _other_keys(group)
                recipients = tuple(dict.fromkeys(_age_list(group.get("age") or [], where)))
                groups.append(recipients)
        else:
            other += _other_keys(raw)
            recipients = tuple(_age_list(raw.get("age") or [], where))
            if recipients:
                groups.append(recipients)
        threshold = raw.get("shamir_threshold") or 0
        if not isinstance(threshold, int):
            raise ConfigError(f"{where}: shamir_threshold must be an integer")
        rules.append(
            CreationRule(
                path_regex=None if path_regex is None else str(path_regex),
                key_groups=tuple(groups),
                shamir_threshold=threshold,
                rule=EncryptionRule.from_mapping(raw, where),
                other_keys=tuple(dict.fromkeys(other)),
            )
        )
    return SopsConfig(
        path=path,
        creation_rules=tuple(rules),
        has_creation_rules=True,
        yaml_indent=yaml_indent,
        json_indent=json_indent,
    )
