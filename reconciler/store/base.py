"""The store interface: what the core and the keeper may ask of a state backend.

Only ``reconciler.store`` touches SQL. Backends (SQLite now, PostgreSQL later)
implement :class:`Store`; everything above talks to this interface only.

Tables (same schema on every backend, versioned migrations):
``meta`` (serial, schema version, key check), ``links``, ``secrets``
(AES-256-GCM, AAD binds ciphertext to link uid and field), ``grants``
(encrypted tokens, fencing version, status, lease), ``events`` (audit, never a
secret), ``locks`` (the apply lock), ``provider_metadata`` (discovery cache).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from reconciler.errors import StateError
from reconciler.secrets import REDACTED, Secret
from reconciler.store.api_keys import ApiKeys
from reconciler.store.grants import GrantStore
from reconciler.store.health import StoreHealth
from reconciler.store.notifications import Notifications
from reconciler.store.pending import PendingAuthorizations
from reconciler.store.sessions import Sessions
from reconciler.store.transfer import StateTransfer


@dataclasses.dataclass(frozen=True)
class StoredLink:
    """A link as the last apply (or an out-of-band edit) left it; no secret values."""

    uid: str  # stable across renames; binds secrets and tokens (AAD)
    name: str
    provider: str
    spec_json: str  # resolved spec as JSON text; secret fields hold {"$secret": field}
    spec_hash: str  # hash of (spec, secret fingerprints) written by apply; a mismatch is drift
    secret_fingerprints: Mapping[str, str]  # field -> keyed HMAC of the value
    generation: int  # +1 on every applied change of this link
    source_file: str | None
    source_line: int | None
    managed_by: str
    deletion_policy: str  # "delete" | "retain"
    created_at: float
    updated_at: float

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The spec as JSON data (decoded on first access, then kept)."""
        return self.fresh_spec()

    def fresh_spec(self) -> dict[str, Any]:
        """A newly decoded copy of the spec that this object does not keep.

        For one pass over many links (a plan of 10,000): keeping every decoded spec
        alive next to the parsed files cost about 40 MB.
        """
        spec: dict[str, Any] = loads_stored_json(self.spec_json)
        return spec


# The C scanner behind json.loads (typeshed does not declare the attribute).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads_stored_json(text: str) -> Any:
    """``json.loads`` for the compact JSON the store writes, without its per-call overhead.

    A plan of 10,000 links decodes 20,000 stored texts; skipping json.loads' two whitespace
    scans and wrapper calls saves about 15 ms. Anything but one compact value (whitespace,
    trailing data, a syntax error) goes to json.loads itself, which decides or raises as always.
    """
    if text.__class__ is not str:  # bytes from a driver: json.loads reads those too
        return json.loads(text)
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


@dataclasses.dataclass(frozen=True)
class LinkWrite:
    """What apply writes for one link (insert or update by name)."""

    name: str
    provider: str
    spec: Mapping[str, Any]
    spec_hash: str
    secrets: Mapping[str, Secret | None]  # field -> value; None removes the stored secret
    secret_fingerprints: Mapping[str, str]
    source_file: str | None
    source_line: int | None
    deletion_policy: str = "delete"
    managed_by: str = "linkctl"


@dataclasses.dataclass(frozen=True)
class Event:
    """One audit record; ``detail`` must never hold a secret value."""

    action: str  # e.g. "link.created", "link.updated", "link.deleted", "grant.refreshed"
    link: str | None
    actor: str
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    at: float | None = None  # filled by the store when None
    id: int | None = None


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """Who holds the apply lock."""

    id: str
    operation: str
    host: str
    pid: int
    since: float
    user: str


class WriteTransaction(abc.ABC):
    """The writes apply may do inside one transaction (see :meth:`Store.write`)."""

    @abc.abstractmethod
    def put_link(self, link: LinkWrite) -> StoredLink:
        """Insert or update a link by name; generation +1 on update."""

    @abc.abstractmethod
    def delete_link(self, name: str) -> None:
        """Delete a link with its secrets and grant."""

    @abc.abstractmethod
    def rename_link(self, old: str, new: str) -> None:
        """Rename a link, keeping uid, secrets and grant."""

    @abc.abstractmethod
    def add_event(self, event: Event) -> None:
        """Append an audit event that commits with the transaction."""

    @abc.abstractmethod
    def set_instance(self, name: str) -> None:
        """Record the Instance (``metadata.name``) the store is applied from."""


class Store(GrantStore, PendingAuthorizations, ApiKeys, Sessions, Notifications, StoreHealth, StateTransfer):
    """A state backend. Implementations are safe to use from one thread each.

    Grant methods (leases, fenced token writes) are declared in :mod:`reconciler.store.grants`,
    pending authorizations in :mod:`reconciler.store.pending`.
    """

    url: str

    # -- declared state -------------------------------------------------------------
    @abc.abstractmethod
    def state_serial(self) -> int:
        """The serial that every successful apply increments."""

    @abc.abstractmethod
    def instance_name(self) -> str | None:
        """The Instance the store was last applied from (None before the first such apply)."""

    @abc.abstractmethod
    def list_links(self) -> list[StoredLink]:
        """All links, ordered by name."""

    @abc.abstractmethod
    def get_link(self, name: str) -> StoredLink | None:
        """One link by name."""

    @abc.abstractmethod
    def read_secret(self, name: str, field: str) -> Secret | None:
        """Decrypt one stored secret of a link."""

    @abc.abstractmethod
    def fingerprint_key(self) -> bytes:
        """Key for :meth:`Secret.fingerprint`, derived from the state key."""

    @abc.abstractmethod
    def write(
        self, *, expected_serial: int | None, actor: str
    ) -> contextlib.AbstractContextManager[WriteTransaction]:
        """One atomic transaction; serial +1 on commit; ``StalePlan`` if the serial moved."""

    # -- the apply lock ------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lock(self, *, operation: str, timeout: float) -> LockInfo:
        """Wait up to ``timeout`` s for the apply lock; ``LockTimeout`` names the holder."""

    @abc.abstractmethod
    def release_lock(self, lock_id: str) -> None:
        """Release a lock this process holds."""

    @abc.abstractmethod
    def force_unlock(self, lock_id: str) -> LockInfo:
        """Remove a lock by id (``linkctl state unlock ID``)."""

    @abc.abstractmethod
    def current_lock(self) -> LockInfo | None:
        """The lock holder, if any."""

    # -- provider discovery cache (OIDC / RFC 8414 metadata; public data) ---------
    @abc.abstractmethod
    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        """Cached discovery metadata of an issuer and when it was fetched."""

    @abc.abstractmethod
    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        """Cache an issuer's discovery metadata."""

    # -- wake-ups of idle keepers (PostgreSQL LISTEN/NOTIFY; polling stays the truth) ------
    def announce_work(self) -> None:
        """Tell idle keepers elsewhere that work may be due sooner than they planned (best effort)."""

    def listen_for_work(self, wake: Callable[[], None]) -> contextlib.AbstractContextManager[object]:
        """While the block runs, call ``wake`` when work is announced; a backend without it never calls."""
        return contextlib.nullcontext()

    # -- audit ---------------------------------------------------------------------
    @abc.abstractmethod
    def add_event(self, event: Event) -> None:
        """Append an audit event in its own transaction."""

    @abc.abstractmethod
    def list_events(self, *, link: str | None = None, limit: int = 100) -> list[Event]:
        """Newest events first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def locked(store: Store, *, operation: str, timeout: float) -> Iterator[LockInfo]:
    """Hold the apply lock for the ``with`` block."""
    info = store.acquire_lock(operation=operation, timeout=timeout)
    try:
        yield info
    finally:
        store.release_lock(info.id)


def event_json(detail: Mapping[str, Any]) -> str:
    """Audit detail as JSON (any backend); a Secret that slipped in is written as ``***``, not its value."""

    def default(value: object) -> object:
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        raise StateError(f"an audit event detail holds a value of type {type(value).__name__} (not JSON)")

    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), default=default)


def stderr_notice(message: str) -> None:
    """The default notice of a store opened outside the CLI: one ``linkctl:`` line on stderr."""
    print(f"linkctl: {message}", file=sys.stderr)
