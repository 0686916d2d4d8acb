"""API keys: who may call the token API (and, with ``admin``, log in to the pages).

:class:`ApiKeys` is part of the :class:`~reconciler.store.base.Store` interface;
:mod:`reconciler.services.apikeys` creates, verifies, lists and revokes keys through it.
Only the SHA-256 of a key is stored: keys are 256 random bits, so a plain hash cannot
be searched backwards and no password KDF is needed. Patterns are globs over link names.
"""

from __future__ import annotations

import abc
import dataclasses


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    """One API key as stored: never the key, only its hash."""

    id: str
    key_hash: str  # SHA-256 of the key (hex)
    label: str | None
    patterns: tuple[str, ...]  # globs over link names (fnmatch, case-sensitive)
    admin: bool  # a key for the pages' log-in, not for the token API
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None


class ApiKeys(abc.ABC):
    """Store methods for API keys (one row per key)."""

    @abc.abstractmethod
    def put_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a new key (its id and hash are unique)."""

    @abc.abstractmethod
    def get_api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key whose hash is ``key_hash`` (revoked and expired ones too)."""

    @abc.abstractmethod
    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key by id."""

    @abc.abstractmethod
    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""

    @abc.abstractmethod
    def revoke_api_key(self, key_id: str, *, now: float) -> ApiKeyRecord | None:
        """Mark a key revoked (idempotent: the first revocation time stays); None if unknown."""

    @abc.abstractmethod
    def touch_api_key(self, key_id: str, *, now: float) -> None:
        """Record that a key was used at ``now`` (never moves ``last_used_at`` back)."""
