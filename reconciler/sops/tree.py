"""The SOPS tree: value encryption (``ENC[AES256_GCM,…]``), AAD paths, selection rules, MAC,
metadata and data-key wrapping (age, Shamir key groups).

Called by :mod:`reconciler.sops` (``decrypt_text`` / ``encrypt_text``). Every failure is a
:class:`~reconciler.errors.CryptoError` whose message names the file and, where it helps,
the key path; values and keys never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import math
import os
import re
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.errors import CryptoError, LinkctlError
from reconciler.sops import age, keys, shamir, yamlv3
from reconciler.sops.config import EncryptionRule
from reconciler.sops.yamlv3 import Comment

SOPS_VERSION = "3.11.0"
IV_SIZE = 32
DEFAULT_SUFFIX = "_unencrypted"
_MAC_ONLY_PREFIX = hashlib.sha256(b"sops").digest()
_KEY_TYPES = ("age", "pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")
_TYPE_NAMES = {
    "pgp": "PGP",
    "kms": "AWS KMS",
    "gcp_kms": "GCP KMS",
    "azure_kv": "Azure Key Vault",
    "hc_vault": "HashiCorp Vault transit",
    "hckms": "HuaweiCloud KMS",
}
_INT_RE = re.compile(r"[+-]?[0-9]+")
_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
         "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip
_RFC3339_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|z|[+-]\d{2}:\d{2})")


# -- scalar encoding ----------------------------------------------------------------------------


def go_float(value: float) -> str:
    """Go ``strconv.FormatFloat(f, 'f', -1, 64)``: shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(decimal.Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def to_bytes(value: Any) -> bytes:
    """The bytes sops encrypts and hashes for a typed leaf."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        if not yamlv3.INT64_MIN <= value <= yamlv3.INT64_MAX:
            raise ValueError("integer outside the int64 range (sops: unknown type uint64)")
        return str(value).encode("ascii")
    if isinstance(value, float):
        return go_float(value).encode("ascii")
    if isinstance(value, dt.datetime):
        return yamlv3.format_time(value).encode("ascii")
    if isinstance(value, bytes):
        return value
    raise ValueError(f"unsupported value type {type(value).__name__}")


def _type_name(value: Any) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):
        return "time"
    if isinstance(value, bytes):
        return "bytes"
    raise ValueError(f"unsupported value type {type(value).__name__}")


def _from_bytes(kind: str, raw: bytes) -> Any:
    text = raw.decode("utf-8")
    if kind == "str":
        return text
    if kind == "int":
        if not _INT_RE.fullmatch(text):
            raise ValueError("bad int")
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return _BOOL[text]
    if kind == "time":
        parsed = parse_rfc3339(text)
        if parsed is None:
            raise ValueError("bad time")
        return parsed
    raise ValueError("unknown type")


def _friendly(value: Any) -> Any:
    """sops stores JSON integers as type:float; an integral float comes back as an int (8080, not 8080.0)."""
    if (
        isinstance(value, float)
        and value.is_integer()
        and abs(value) <= 2**53
        and not (value == 0 and math.copysign(1.0, value) < 0)
    ):
        return int(value)
    return value


def parse_rfc3339(text: str) -> dt.datetime | None:
    """Go ``time.Parse(time.RFC3339Nano, …)``, at microsecond precision."""
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        return None
    zone = m[8]
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        delta = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = dt.UTC if not delta else dt.timezone(sign * delta)
    frac = (m[7] or ".0")[1:7].ljust(6, "0")
    try:
        return dt.datetime(
            int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), int(frac), tzinfo=tz
        )
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class EncValue:
    """The parts of an ``ENC[AES256_GCM,…]`` string."""

    data: bytes
    iv: bytes
    tag: bytes
    kind: str


def parse_enc(text: str) -> EncValue | None:
    """Split an ``ENC[…]`` string on its fixed field names; None if it is not one."""
    if not text.startswith("ENC[AES256_GCM,") or not text.endswith("]"):
        return None
    fields = text[len("ENC[AES256_GCM,") : -1].split(",")
    if len(fields) != 4:
        return None
    names = ("data:", "iv:", "tag:", "type:")
    if not all(f.startswith(n) for f, n in zip(fields, names, strict=True)):
        return None
    try:
        data, iv, tag = (
            base64.b64decode(f[len(n) :], validate=True) for f, n in zip(fields[:3], names[:3], strict=True)
        )
    except (binascii.Error, ValueError):
        return None
    return EncValue(data, iv, tag, fields[3][len("type:") :])


def encrypt_scalar(value: Any, key: bytes, aad: str, *, kind: str | None = None) -> str:
    """``ENC[AES256_GCM,…]`` for a typed leaf (an empty string stays empty, as in sops);
    ``kind`` overrides the type name (``comment``)."""
    if isinstance(value, str) and value == "":
        return ""
    raw = to_bytes(value)
    iv = os.urandom(IV_SIZE)
    sealed = AESGCM(key).encrypt(iv, raw, aad.encode("utf-8"))
    b64 = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b64(sealed[:-16]).decode()},iv:{b64(iv).decode()},"
        f"tag:{b64(sealed[-16:]).decode()},type:{kind or _type_name(value)}]"
    )


# -- selection --------------------------------------------------------------------------------


class Selector:
    """Decides per key path whether a leaf is encrypted (cached: paths repeat in lists)."""

    def __init__(self, rule: EncryptionRule, *, by_appearance: bool = False) -> None:
        chosen = rule.selector()
        self.name, self.value = chosen if chosen else ("unencrypted_suffix", DEFAULT_SUFFIX)
        # Comment-driven rules depend on comments, which are not kept: trust the ENC[ form instead.
        self.by_appearance = by_appearance or self.name.endswith("_comment_regex")
        self.mac_only = rule.mac_only_encrypted
        self._regex = re.compile(self.value) if self.name.endswith("_regex") else None
        self._cache: dict[tuple[str, ...], bool] = {}

    def __call__(self, path: tuple[str, ...]) -> bool:
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        name, value = self.name, self.value
        if name == "unencrypted_suffix":
            result = not any(k.endswith(value) for k in path)
        elif name == "encrypted_suffix":
            result = any(k.endswith(value) for k in path)
        elif name == "unencrypted_regex":
            assert self._regex is not None
            result = not any(self._regex.search(k) for k in path)
        elif name == "encrypted_regex":
            assert self._regex is not None
            result = any(self._regex.search(k) for k in path)
        else:
            result = True
        self._cache[path] = result
        return result


# -- walking ----------------------------------------------------------------------------------


class _Walker:
    def __init__(self, filename: str, key: bytes, selector: Selector, *, encrypting: bool) -> None:
        self.filename = filename
        self.aead = AESGCM(key)
        self.key = key
        self.selector = selector
        self.encrypting = encrypting
        self.mac = hashlib.sha512()
        if selector.mac_only:
            self.mac.update(_MAC_ONLY_PREFIX)

    def walk(self, node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {
                self.comment(k, path) if isinstance(k, Comment) else k: (
                    None if isinstance(k, Comment) else self.walk(v, (*path, k))
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [
                self.comment(item, path, in_list=True) if isinstance(item, Comment) else self.walk(item, path)
                for item in node
            ]
        if node is None:
            return None
        return self.leaf(node, path)

    def comment(self, comment: Comment, path: tuple[str, ...], *, in_list: bool = False) -> Comment | str:
        """A comment is encrypted by the rules of its enclosing path (AAD: that path plus ":",
        ":" at the top); it is never in the MAC. One that does not decrypt is kept as it is,
        as sops does (files written before sops encrypted comments).

        sops 3.11 writes an encrypted comment of a list as a list *value*
        (``- ENC[…,type:comment]``, or ``- ""`` for an empty comment); so do we.
        """
        text = comment.text
        aad = ":".join(path) + ":"
        if self.encrypting:
            if not self.selector(path):
                return Comment(text)
            sealed = encrypt_scalar(text, self.key, aad, kind="comment")
            return sealed if in_list else Comment(sealed)
        sel = self.selector
        if not (text.startswith("ENC[") if sel.by_appearance else sel(path)):
            return Comment(text)
        enc = parse_enc(text)
        if enc is None:
            return Comment(text)
        try:
            raw = self.aead.decrypt(enc.iv, enc.data + enc.tag, aad.encode("utf-8"))
        except (InvalidTag, ValueError):
            return Comment(text)
        return Comment(raw.decode("utf-8", "replace"))

    def _where(self, path: tuple[str, ...]) -> str:
        return f"{self.filename}: {'.'.join(path) or '<root>'}"

    def leaf(self, value: Any, path: tuple[str, ...]) -> Any:
        sel = self.selector
        if sel.by_appearance and not self.encrypting:
            encrypted = isinstance(value, str) and value.startswith("ENC[")
        else:
            encrypted = sel(path)
        if self.encrypting:
            try:
                raw = to_bytes(value)
            except ValueError as exc:
                raise CryptoError(f"{self._where(path)}: cannot encrypt: {exc}") from None
            if encrypted or not sel.mac_only:
                self.mac.update(raw)
            return encrypt_scalar(value, self.key, ":".join(path) + ":") if encrypted else value
        if not encrypted:
            if not sel.mac_only:
                try:
                    self.mac.update(to_bytes(value))
                except ValueError as exc:
                    raise CryptoError(f"{self._where(path)}: {exc}") from None
            return value
        if not isinstance(value, str):
            raise CryptoError(
                f"{self._where(path)}: expected an encrypted value (a string), found a {_type_name(value)}"
            )
        if value == "":
            return ""
        plain = self.open(value, ":".join(path) + ":", self._where(path))
        if isinstance(plain, Comment):  # a list's encrypted comment (see comment()): not in the MAC
            return plain
        self.mac.update(to_bytes(plain))
        return _friendly(plain)

    def open(self, text: str, aad: str, where: str) -> Any:
        enc = parse_enc(text)
        if enc is None:
            raise CryptoError(f"{where}: value does not match sops' data format (ENC[AES256_GCM,…])")
        try:
            raw = self.aead.decrypt(enc.iv, enc.data + enc.tag, aad.encode("utf-8"))
        except (InvalidTag, ValueError):
            raise CryptoError(
                f"{where}: cannot decrypt the value: it was modified, moved from another key path, "
                "or encrypted with another data key",
                hint="the file was edited without sops; restore it from git",
            ) from None
        if enc.kind == "bytes":
            return raw
        if enc.kind == "comment":
            return Comment(raw.decode("utf-8", "replace"))
        try:
            return _from_bytes(enc.kind, raw)
        except (ValueError, KeyError, UnicodeDecodeError):
            pass  # raised below, outside this block: the parse error quotes the decrypted value
        raise CryptoError(f"{where}: decrypted value is not a valid {enc.kind!r}")

    def digest(self) -> str:
        return self.mac.hexdigest().upper()


# -- metadata ---------------------------------------------------------------------------------


def _lastmodified_text(value: Any, filename: str) -> str:
    if isinstance(value, dt.datetime):
        parsed: dt.datetime | None = value
    elif isinstance(value, str):
        parsed = parse_rfc3339(value)
    else:
        parsed = None
    if parsed is None:
        raise CryptoError(f"{filename}: sops metadata 'lastmodified' is missing or not an RFC3339 time")
    # sops uses time.Parse(...).Format(time.RFC3339): fractions are dropped, offsets kept.
    return yamlv3.format_time(parsed.replace(microsecond=0))


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


# -- whole files ------------------------------------------------------------------------------


def decrypt_documents(
    docs: list[Any], *, filename: str, ring_factory: Callable[[], keys.KeyRing], ignore_mac: bool
) -> list[Any]:
    """Decrypt parsed documents whose first carries the ``sops`` metadata; verify the MAC."""
    if not docs or not isinstance(docs[0], dict) or not isinstance(docs[0].get("sops"), dict):
        raise CryptoError(f"{filename}: not a sops-encrypted file (no top-level 'sops' mapping)")
    meta: dict[str, Any] = docs[0]["sops"]
    try:
        rule = EncryptionRule.from_mapping(meta, f"{filename}: sops metadata")
    except CryptoError:
        raise
    except LinkctlError as exc:  # its message already names the file and the field
        raise CryptoError(exc.message) from None
    except Exception as exc:
        raise CryptoError(f"{filename}: {exc}") from None
    key = recover_data_key(meta, filename, ring_factory())
    walker = _Walker(filename, key, Selector(rule), encrypting=False)
    out: list[Any] = []
    for doc in docs:
        if doc is None:
            out.append({})
            continue
        if not isinstance(doc, dict):
            raise CryptoError(f"{filename}: every document must be a mapping")
        body = {k: v for k, v in doc.items() if k != "sops"}
        out.append(walker.walk(body, ()))
    computed = walker.digest()
    stored = meta.get("mac")
    if not ignore_mac:
        _check_mac(walker, stored, meta.get("lastmodified"), computed, filename)
    return out


def _check_mac(walker: _Walker, stored: Any, lastmodified: Any, computed: str, filename: str) -> None:
    hint = "the file was modified without sops; restore it from git (or pass --ignore-mac if you are sure)"
    if not isinstance(stored, str) or not stored:
        raise CryptoError(
            f"{filename}: MAC mismatch: the file has no MAC (it was modified without sops)", hint=hint
        )
    aad = _lastmodified_text(lastmodified, filename)
    try:
        mac = walker.open(stored, aad, f"{filename}: sops.mac")
    except CryptoError:
        raise CryptoError(
            f"{filename}: MAC mismatch: the MAC or lastmodified was modified without sops", hint=hint
        ) from None
    if not isinstance(mac, str) or not _ct_equal(mac, computed):
        raise CryptoError(f"{filename}: MAC mismatch: the file was modified without sops", hint=hint)


def _ct_equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


@dataclasses.dataclass(frozen=True)
class KeyPlan:
    """Who gets the data key: recipient groups (>1 means Shamir) and the threshold."""

    groups: tuple[tuple[str, ...], ...]
    threshold: int = 0


def _wrap(secret: bytes, recipient: str) -> dict[str, str]:
    enc = age.encrypt(secret, [recipient], armored=True).decode("ascii")
    return {"recipient": recipient, "enc": enc}


def build_metadata(key: bytes, plan: KeyPlan, rule: EncryptionRule) -> dict[str, Any]:
    """The ``sops`` block without ``lastmodified``/``mac`` (3.11 key order is restored later)."""
    for group in plan.groups:
        for recipient in group:
            age.parse_recipient(recipient)
    meta: dict[str, Any] = {}
    if len(plan.groups) == 1:
        meta["age"] = [_wrap(key, r) for r in plan.groups[0]]
    else:
        threshold = plan.threshold or len(plan.groups)
        if not 1 < threshold <= len(plan.groups):
            raise CryptoError(f"shamir_threshold {threshold} must be between 2 and {len(plan.groups)}")
        shares = shamir.split(key, len(plan.groups), threshold)
        meta["shamir_threshold"] = threshold
        meta["key_groups"] = [
            {"hc_vault": [], "age": [_wrap(share, r) for r in group]}
            for share, group in zip(shares, plan.groups, strict=True)
        ]
    return meta


def encrypt_documents(
    docs: list[dict[str, Any]],
    *,
    filename: str,
    plan: KeyPlan,
    rule: EncryptionRule,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Encrypt documents; each gets the same ``sops`` block, last, as sops writes it."""
    if not plan.groups or any(not g for g in plan.groups):
        raise CryptoError(f"{filename}: no age recipients to encrypt for")
    key = os.urandom(32)
    selector = Selector(rule)
    if selector.by_appearance:
        raise CryptoError(
            f"{filename}: {selector.name} is not supported when writing by linkctl; "
            "use sops, or encrypted_regex/encrypted_suffix"
        )
    walker = _Walker(filename, key, selector, encrypting=True)
    encrypted = [walker.walk(doc, ()) for doc in docs]
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    lastmodified = yamlv3.format_time(stamp)
    partial = build_metadata(key, plan, rule)
    meta: dict[str, Any] = {}
    for name in ("shamir_threshold", "key_groups", "age"):
        if name in partial:
            meta[name] = partial[name]
    meta["lastmodified"] = lastmodified
    meta["mac"] = encrypt_scalar(walker.digest(), key, lastmodified)
    chosen = rule.selector() or ("unencrypted_suffix", DEFAULT_SUFFIX)
    meta[chosen[0]] = chosen[1]
    if rule.mac_only_encrypted:
        meta["mac_only_encrypted"] = True
    meta["version"] = SOPS_VERSION
    return [{**doc, "sops": meta} for doc in encrypted]
