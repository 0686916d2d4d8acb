"""The state store: open one by URL.

Called by the CLI and server edges (``Context.store``) and by tests; everything
else receives a :class:`~reconciler.store.base.Store` and uses its interface.
Backends are imported lazily so that importing this package (e.g. for
``reconciler.store.base``) stays cheap and backends never import each other.

Accepted URLs: ``sqlite:////absolute/path/state.db`` or ``sqlite:///relative/to/cwd.db``
(the embedded default, SQLAlchemy's convention) and ``postgresql://…`` (libpq's URI, plus
linkctl's ``pool_size``; see docs/postgresql.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.errors import StateError

if TYPE_CHECKING:
    from reconciler.domain.access_token import AccessToken
    from reconciler.settings import Settings
    from reconciler.store.base import Store

ACCEPTED_FORMS = (
    "sqlite:////absolute/path/state.db, sqlite:///relative/path.db or postgresql://user@host/dbname"
)


def _scheme(url: str) -> str:
    """The scheme of a state URL, lower-cased ("" without one)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def read_ready_access_token(
    settings: Settings, name: str, *, notice: Callable[[str], None]
) -> AccessToken | None:
    """A link's stored access token read without opening the store in full; None: open it.

    Only SQLite has such a read (:mod:`reconciler.store.sqlite_token_read`); a PostgreSQL
    store's pool and clock offset are what opening it costs, so its callers open it.
    """
    if _scheme(settings.state_url) != "sqlite":
        return None
    from reconciler.store.sqlite_token_read import read_ready_access_token as read

    return read(settings, name, notice=notice)


def open_store(
    settings: Settings,
    *,
    notice: Callable[[str], None] | None = None,
    create: bool = True,
    read_only: bool = False,
) -> Store:
    """Open the store named by ``settings.state_url``; ``notice`` receives one-line messages for the user.

    ``create=False`` opens only a store that is ready as it is (it exists, its key is at hand,
    its schema is current): opening then writes nothing, else it raises ``StoreNotReady``.
    ``read_only=True`` never writes either: a missing store reads as empty and an older
    schema is migrated in a private in-memory copy; such a store refuses writes.
    """
    url = settings.state_url
    scheme = _scheme(url)
    if scheme == "sqlite":
        from reconciler.store.sqlite import SQLiteStore

        return SQLiteStore.open(settings, notice=notice, create=create, read_only=read_only)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from reconciler.store.postgres import PostgresStore

        return PostgresStore.open(settings, notice=notice, create=create, read_only=read_only)
    shown = f"{scheme}://…" if scheme else "a value without a scheme"
    raise StateError(
        f"unsupported state URL ({shown})",
        hint=f"use {ACCEPTED_FORMS} (via --state or LINKCTL_STATE)",
    )


class MetadataCacheOpener:
    """The store's discovery cache, opening its own connection per call.

    Safe from any thread (the keeper's workers share one HTTP client); discovery
    happens once per issuer and process, so the cost of opening does not matter.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def get_provider_metadata(self, issuer: str) -> tuple[Mapping[str, Any], float] | None:
        """A cached metadata document and when it was fetched."""
        with open_store(self._settings) as store:
            return store.get_provider_metadata(issuer)

    def put_provider_metadata(self, issuer: str, metadata: Mapping[str, Any], *, fetched_at: float) -> None:
        """Cache a metadata document."""
        with open_store(self._settings) as store:
            store.put_provider_metadata(issuer, metadata, fetched_at=fetched_at)


__all__ = ["MetadataCacheOpener", "open_store"]
