"""The SOPS tree: the walk that encrypts and decrypts a document, AAD paths, selection rules,
the MAC, metadata and data-key wrapping for new files.

Single values (``ENC[AES256_GCM,…]``) are in :mod:`reconciler.sops.values`; opening an
existing file's data key (age, Shamir key groups) is in :mod:`reconciler.sops.data_key`.

Called by :mod:`reconciler.sops` (``decrypt_text`` / ``encrypt_text``). Every failure is a
:class:`~reconciler.errors.CryptoError` whose message names the file and, where it helps,
the key path; values and keys never appear in messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.errors import CryptoError, LinkctlError
from reconciler.sops import age, data_key, keys, shamir, values, yamlv3
from reconciler.sops.config import EncryptionRule
from reconciler.sops.yamlv3 import Comment

SOPS_VERSION = "3.11.0"
DEFAULT_SUFFIX = "_unencrypted"
_MAC_ONLY_PREFIX = hashlib.sha256(b"sops").digest()


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
            sealed = values.encrypt_scalar(text, self.key, aad, kind="comment")
            return sealed if in_list else Comment(sealed)
        sel = self.selector
        if not (text.startswith("ENC[") if sel.by_appearance else sel(path)):
            return Comment(text)
        enc = values.parse_enc(text)
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
                raw = values.to_bytes(value)
            except ValueError as exc:
                raise CryptoError(f"{self._where(path)}: cannot encrypt: {exc}") from None
            if encrypted or not sel.mac_only:
                self.mac.update(raw)
            return values.encrypt_scalar(value, self.key, ":".join(path) + ":") if encrypted else value
        if not encrypted:
            if not sel.mac_only:
                try:
                    self.mac.update(values.to_bytes(value))
                except ValueError as exc:
                    raise CryptoError(f"{self._where(path)}: {exc}") from None
            return value
        if not isinstance(value, str):
            raise CryptoError(
                f"{self._where(path)}: expected an encrypted value (a string),"
                f" found a {values.type_name(value)}"
            )
        if value == "":
            return ""
        plain = self.open(value, ":".join(path) + ":", self._where(path))
        if isinstance(plain, Comment):  # a list's encrypted comment (see comment()): not in the MAC
            return plain
        self.mac.update(values.to_bytes(plain))
        return values.friendly(plain)

    def open(self, text: str, aad: str, where: str) -> Any:
        enc = values.parse_enc(text)
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
            return values.from_bytes(enc.kind, raw)
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
        parsed = values.parse_rfc3339(value)
    else:
        parsed = None
    if parsed is None:
        raise CryptoError(f"{filename}: sops metadata 'lastmodified' is missing or not an RFC3339 time")
    # sops uses time.Parse(...).Format(time.RFC3339): fractions are dropped, offsets kept.
    return yamlv3.format_time(parsed.replace(microsecond=0))


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
    key = data_key.recover_data_key(meta, filename, ring_factory())
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
    hint = (
        "the file was modified without sops; restore it from git (or pass --ignore-mac if you are sure)."
        " Edit encrypted files with `linkctl secrets edit FILE` (or `sops edit`), which keeps the MAC"
    )
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
    meta["mac"] = values.encrypt_scalar(walker.digest(), key, lastmodified)
    chosen = rule.selector() or ("unencrypted_suffix", DEFAULT_SUFFIX)
    meta[chosen[0]] = chosen[1]
    if rule.mac_only_encrypted:
        meta["mac_only_encrypted"] = True
    meta["version"] = SOPS_VERSION
    return [{**doc, "sops": meta} for doc in encrypted]
