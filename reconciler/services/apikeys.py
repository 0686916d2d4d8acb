"""API keys: create (shown once), verify (constant time), list, revoke; which links a key may read.

A key is ``lk_`` followed by 43 URL-safe base64 characters (256 random bits); the store
keeps only its SHA-256. Verification hashes what was presented, finds the row by that
hash and compares the hashes with :func:`hmac.compare_digest`, so neither the lookup nor
the comparison depends on how much of a guess was right.

Two kinds of key: a **link key** reads tokens and status of the links its glob patterns
name through the token API; an **admin key** (``--admin``) logs in to the pages and is
refused by the token API (and a link key is refused by ``/login``), so a key leaked from a
CI job never opens the admin pages and an admin's key never hands out tokens.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import Clock, iso_time
from reconciler.errors import LinkctlError, UsageError
from reconciler.secrets import Secret
from reconciler.store.api_keys import ApiKeyRecord

if TYPE_CHECKING:
    from reconciler.store.base import Store

KEY_PREFIX = "lk_"
KEY_BYTES = 32
MAX_EXPIRY_DAYS = 3650
MAX_LABEL = 100
_KEY_SHAPE = re.compile(r"^lk_[A-Za-z0-9_-]{43}$")
_PATTERN_SHAPE = re.compile(r"^[A-Za-z0-9._\-*?\[\]!]{1,200}$")
_ID_SHAPE = re.compile(r"^key_[0-9a-f]{16}$")


class KeyRefused(LinkctlError):
    """A presented key is missing, unknown, revoked or expired (HTTP 401), or not for this use (403)."""

    error_code = "unauthorized"

    def __init__(self, message: str, *, reason: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason  # missing | unknown | revoked | expired | admin_only | not_admin
        self.status = status


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256 (hex) of its text."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> Secret:
    """A fresh random key (256 bits), shown to its creator once."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode("ascii")
    return Secret(KEY_PREFIX + raw)


def split_patterns(values: Iterable[str]) -> tuple[str, ...]:
    """Glob patterns from repeated or comma-separated ``--links`` values, checked and de-duplicated."""
    patterns: list[str] = []
    for value in values:
        for part in value.split(","):
            pattern = part.strip()
            if not pattern:
                continue
            if not _PATTERN_SHAPE.match(pattern):
                raise UsageError(
                    f"--links {pattern[:60]!r} is not a glob over link names",
                    hint="use link names with * ? [...] wildcards, e.g. --links 'ci-*'",
                )
            if pattern not in patterns:
                patterns.append(pattern)
    if not patterns:
        raise UsageError("--links needs at least one pattern", hint="e.g. --links 'ci-*' or --links '*'")
    return tuple(patterns)


def allows(record: ApiKeyRecord, link_name: str) -> bool:
    """Whether a key's patterns name a link (case-sensitive glob, like link names)."""
    return _patterns_name(record.patterns, link_name)


@functools.lru_cache(maxsize=4096)
def _patterns_name(patterns: tuple[str, ...], link_name: str) -> bool:
    # Asked on every token request with the same few keys and links: the globs are matched
    # once per pair (bounded; patterns and link names are no secret).
    return any(fnmatch.fnmatchcase(link_name, pattern) for pattern in patterns)


def create(
    store: Store,
    *,
    patterns: Sequence[str],
    label: str | None = None,
    expires_days: float | None = None,
    admin: bool = False,
    clock: Clock = time.time,
) -> tuple[ApiKeyRecord, Secret]:
    """Create a key: the record as stored and the key itself (never stored, never shown again)."""
    if label is not None and (len(label) > MAX_LABEL or not label.isprintable()):
        raise UsageError(f"--name must be printable and at most {MAX_LABEL} characters")
    if expires_days is not None and not 0 < expires_days <= MAX_EXPIRY_DAYS:
        raise UsageError(f"--expires must be from 1 to {MAX_EXPIRY_DAYS} days")
    now = clock()
    key = new_key()
    record = ApiKeyRecord(
        id="key_" + secrets.token_hex(8),
        key_hash=key_hash(key.reveal()),
        label=label,
        patterns=split_patterns(patterns),
        admin=admin,
        created_at=now,
        expires_at=None if expires_days is None else now + expires_days * 86_400,
        last_used_at=None,
        revoked_at=None,
    )
    store.put_api_key(record)
    return record, key


def check_record(record: ApiKeyRecord | None, presented_hash: str, now: float) -> ApiKeyRecord:
    """The record if it matches the presented hash and is live; :class:`KeyRefused` otherwise."""
    # compare_digest against a dummy keeps the unknown-key path as long as the known one.
    stored = record.key_hash if record is not None else "0" * 64
    if not hmac.compare_digest(stored.encode("ascii"), presented_hash.encode("ascii")) or record is None:
        raise KeyRefused("the API key is not known", reason="unknown")
    if record.revoked_at is not None:
        raise KeyRefused("the API key was revoked", reason="revoked")
    if record.expires_at is not None and now >= record.expires_at:
        raise KeyRefused(f"the API key expired at {iso_time(record.expires_at, zulu=True)}", reason="expired")
    return record


def presented_hash(key: str | None) -> str:
    """The hash of a presented key; :class:`KeyRefused` when there is none or it has the wrong shape."""
    if not key:
        raise KeyRefused("no API key: send it as 'Authorization: Bearer <key>'", reason="missing")
    if not _KEY_SHAPE.match(key):
        raise KeyRefused("the API key is not known", reason="unknown")
    return key_hash(key)


def verify(store: Store, key: str | None, *, clock: Clock = time.time) -> ApiKeyRecord:
    """The live record of a presented key (any kind); :class:`KeyRefused` says why not."""
    hashed = presented_hash(key)
    return check_record(store.get_api_key_by_hash(hashed), hashed, clock())


def verify_admin(store: Store, key: str | None, *, clock: Clock = time.time) -> ApiKeyRecord:
    """The live record of an admin key (what ``/login`` takes); a link key is refused (403)."""
    record = verify(store, key, clock=clock)
    if not record.admin:
        raise KeyRefused(
            "this is not an admin key; create one with `linkctl apikey create --admin`",
            reason="not_admin",
            status=403,
        )
    return record


def revoke(store: Store, key_id: str, *, clock: Clock = time.time) -> ApiKeyRecord:
    """Revoke a key by id (its sessions end with it); ``LinkctlError`` if there is none."""
    if not _ID_SHAPE.match(key_id):
        raise UsageError(f"{key_id[:40]!r} is not an API key id", hint="ids look like key_0123456789abcdef")
    record = store.revoke_api_key(key_id, now=clock())
    if record is None:
        raise LinkctlError(f"no API key with id {key_id}", hint="see `linkctl apikey list`")
    return record


def record_view(record: ApiKeyRecord, now: float) -> dict[str, Any]:
    """A key as ``apikey list`` shows it: never the key or its hash."""
    state = "active"
    if record.revoked_at is not None:
        state = "revoked"
    elif record.expires_at is not None and now >= record.expires_at:
        state = "expired"
    return {
        "id": record.id,
        "label": record.label,
        "patterns": list(record.patterns),
        "admin": record.admin,
        "state": state,
        "created_at": iso_time(record.created_at, zulu=True),
        "last_used_at": iso_time(record.last_used_at, zulu=True),
        "expires_at": iso_time(record.expires_at, zulu=True),
        "revoked_at": iso_time(record.revoked_at, zulu=True),
    }


def list_views(store: Store, *, clock: Clock = time.time) -> list[dict[str, Any]]:
    """Every key's view, oldest first."""
    now = clock()
    return [record_view(record, now) for record in store.list_api_keys()]


@dataclasses.dataclass
class _Cached:
    record: ApiKeyRecord | None
    read_at: float


class KeyCache:
    """Per-process cache of key lookups by hash, each entry re-read from the store after ``ttl`` s.

    Holds hashes and records only, never a key. Revocation therefore takes effect in every
    process within ``ttl`` seconds; an unknown hash is cached too (so a flood of wrong keys
    costs no store reads), bounded by ``max_entries``.
    """

    def __init__(self, *, ttl: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, _Cached] = {}

    def lookup(self, store: Store, hashed: str, now: float) -> ApiKeyRecord | None:
        """The record of a hash, from the cache when read less than ``ttl`` s ago."""
        entry = self._entries.get(hashed)
        if entry is None or now - entry.read_at >= self.ttl or now < entry.read_at:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            entry = _Cached(store.get_api_key_by_hash(hashed), now)
            self._entries[hashed] = entry
        return entry.record

    def verify(self, store: Store, key: str | None, now: float) -> ApiKeyRecord:
        """Like :func:`verify`, through the cache."""
        hashed = presented_hash(key)
        return check_record(self.lookup(store, hashed, now), hashed, now)
