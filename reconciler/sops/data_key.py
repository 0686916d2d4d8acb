"""The data key: unwrapped from the file's age recipients (or enough Shamir key-group shares).

When no identity opens the file, the error lists its recipients, the identities tried and
where they were read from; other key types (PGP, KMS, Vault) are named, never used.
"""

from __future__ import annotations

from typing import Any

from reconciler.errors import CryptoError
from reconciler.sops import age, keys, shamir

_KEY_TYPES = ("age", "pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")
_TYPE_NAMES = {
    "pgp": "PGP",
    "kms": "AWS KMS",
    "gcp_kms": "GCP KMS",
    "azure_kv": "Azure Key Vault",
    "hc_vault": "HashiCorp Vault transit",
    "hckms": "HuaweiCloud KMS",
}


def _groups(meta: dict[str, Any], filename: str) -> list[dict[str, Any]]:
    top = {k: meta.get(k) for k in _KEY_TYPES if meta.get(k)}
    if top:
        return [top]
    groups = meta.get("key_groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise CryptoError(f"{filename}: sops metadata 'key_groups' is malformed")
    if not groups:
        raise CryptoError(f"{filename}: no keys found in the sops metadata")
    return groups


def _describe_entry(kind: str, entry: Any) -> str:
    if not isinstance(entry, dict):
        return kind
    if kind == "age":
        recipient = str(entry.get("recipient", "?"))
        unsupported = age.describe_key_type(recipient)
        return f"age {recipient}" + (f" ({unsupported}, not supported)" if unsupported else "")
    ident = (
        entry.get("fp")
        or entry.get("arn")
        or entry.get("resource_id")
        or entry.get("vault_url")
        or entry.get("key_id")
        or entry.get("vault_address")
    )
    return f"{_TYPE_NAMES.get(kind, kind)} {ident or ''}".strip() + " (not supported by linkctl)"


def recover_data_key(meta: dict[str, Any], filename: str, ring: keys.KeyRing) -> bytes:
    """Unwrap the data key (or enough Shamir shares) with the identities in ``ring``."""
    groups = _groups(meta, filename)
    threshold = meta.get("shamir_threshold") or 0
    if not isinstance(threshold, int):
        raise CryptoError(f"{filename}: sops metadata 'shamir_threshold' is not an integer")
    needed = 1 if len(groups) == 1 else (threshold or len(groups))
    shares: list[bytes] = []
    failures: list[str] = []
    for group in groups:
        secret = _open_group(group, filename, ring, failures)
        if secret is not None:
            shares.append(secret)
            if len(shares) >= needed:
                break
    if len(shares) < needed:
        raise CryptoError(
            _no_key_message(filename, groups, ring, failures, needed, len(shares)), hint=_hint(groups)
        )
    if len(groups) == 1:
        key = shares[0]
    else:
        try:
            key = shamir.combine(shares)
        except ValueError as exc:
            raise CryptoError(f"{filename}: cannot combine the key-group shares: {exc}") from None
    if len(key) != 32:
        raise CryptoError(f"{filename}: the data key has the wrong length")
    return key


def _open_group(
    group: dict[str, Any], filename: str, ring: keys.KeyRing, failures: list[str]
) -> bytes | None:
    entries = group.get("age") or []
    if not isinstance(entries, list):
        raise CryptoError(f"{filename}: sops metadata 'age' is not a list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("enc"), str):
            raise CryptoError(f"{filename}: malformed age entry in the sops metadata")
        recipient = str(entry.get("recipient", "")).strip()
        if age.describe_key_type(recipient):
            continue
        identities = ring.for_recipient(recipient)
        if not identities:
            continue
        try:
            return age.decrypt(entry["enc"].encode("utf-8"), identities)
        except age.NoMatch:
            continue
        except age.AgeError as exc:
            failures.append(f"age {recipient}: {exc}")
    return None


def _no_key_message(
    filename: str,
    groups: list[dict[str, Any]],
    ring: keys.KeyRing,
    failures: list[str],
    needed: int,
    got: int,
) -> str:
    lines = [f"{filename}: no key can open this file"]
    if len(groups) > 1:
        lines[0] += f" (Shamir key groups: {got} of the {needed} needed shares recovered)"
    lines.append("  recipients of the file:")
    for index, group in enumerate(groups):
        label = f"group {index + 1}: " if len(groups) > 1 else ""
        for kind in _KEY_TYPES:
            for entry in group.get(kind) or []:
                lines.append(f"    - {label}{_describe_entry(kind, entry)}")
    tried = ring.tried()
    lines.append("  identities tried (public keys): " + (", ".join(tried) if tried else "none found"))
    sources = ring.sources or ["none (set SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or SOPS_AGE_KEY_CMD)"]
    lines.append("  identity sources read: " + ", ".join(sources))
    lines += [f"  note: {p}" for p in ring.problems + failures]
    return "\n".join(lines)


def _hint(groups: list[dict[str, Any]]) -> str:
    kinds = {k for g in groups for k in _KEY_TYPES if g.get(k)}
    if kinds and "age" not in kinds:
        names = ", ".join(sorted(_TYPE_NAMES.get(k, k) for k in kinds))
        return (
            f"this file is encrypted only for {names}; linkctl decrypts age recipients only. "
            "Add an age recipient with `sops updatekeys` (or `sops -r -i --add-age …`)"
        )
    return "point SOPS_AGE_KEY_FILE at the identity for one of the recipients listed"
