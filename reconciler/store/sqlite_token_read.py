"""A stored access token read from a SQLite store without opening the store in full.

``linkctl token NAME`` runs in every CI job and script, and most calls find a fresh token:
for those, building :class:`~reconciler.store.sqlite.SQLiteStore` (every interface of the
store, from webhooks to API keys, about 15 ms of imports) is most of the command's time.
This read does what opening does before any read — the same key, the same refusal of a
file that is not a store, the same warnings about shared files, the same WAL connection,
schema and key check — and then reads the one narrow row the token API reads.

Anything it cannot vouch for (no file, no key yet, a schema to migrate, no key check yet,
no such link) is a ``None``: the caller then opens the store in full, which creates,
migrates or refuses it with its usual messages. Its warnings are said when it answers or
refuses, not on a fall-back (the full open says them then), so they are never said twice.
Unlike a full grant read it does not decrypt the refresh token, which it does not need:
a damaged refresh-token column is found by the next refresh, as by the token API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.domain.access_token import AccessToken
from reconciler.secrets import Secret
from reconciler.store import sealing
from reconciler.store.schema import latest_version
from reconciler.store.sqlite_open import (
    connect,
    read_meta,
    refuse_unless_store,
    sqlite_path,
    warn_if_shared,
)

if TYPE_CHECKING:
    from reconciler.settings import Settings

# What an access-token answer needs: no refresh token, no bookkeeping.
_SELECT_ACCESS = (
    "SELECT g.link_uid, g.access_token, g.token_type, g.scope, g.access_expires_at"
    " FROM grants g JOIN links l ON l.uid = g.link_uid WHERE l.name = ?"
)


def read_ready_access_token(
    settings: Settings, name: str, *, notice: Callable[[str], None]
) -> AccessToken | None:
    """The stored access token of ``name`` if the store is ready as it is; None: open it in full."""
    path = sqlite_path(settings.state_url)
    if not path.is_file():
        return None
    key, key_source = sealing.read_key(
        state_key=settings.state_key.reveal() if settings.state_key else None,
        key_file=settings.state_key_file,
    )
    if key is None:
        return None
    refuse_unless_store(path)
    said: list[str] = []
    if settings.state_key is None:
        warn_if_shared(settings.state_key_file, "the state key file", said.append)
    warn_if_shared(path, "the store file", said.append)
    try:
        conn = connect(path)
        try:
            version, key_check = read_meta(conn)
            if version != latest_version() or key_check is None:
                return None
            sealer = sealing.Sealer(key)
            sealing.verify_key_check(sealer, key_check, store=str(path), key_source=key_source)
            token = read_access_token(conn, sealer, name)
        finally:
            conn.close()
    except BaseException:  # a refusal ends the command here: say first what opening would
        for text in said:
            notice(text)
        raise
    if token is not None:
        for text in said:
            notice(text)
    return token


def read_access_token(conn: sqlite3.Connection, sealer: sealing.Sealer, name: str) -> AccessToken | None:
    """A link's stored access token (one narrow row, one decryption); None: no grant.

    The one reading of it: here and in :meth:`SQLiteGrants.get_access_token
    <reconciler.store.sqlite_grants.SQLiteGrants.get_access_token>` (the token API's read).
    """
    row = conn.execute(_SELECT_ACCESS, (name,)).fetchone()
    if row is None:
        return None
    uid, blob, token_type, scope, expires_at = row
    return AccessToken(name, open_token(sealer, uid, "access_token", blob), token_type, scope, expires_at)


def open_token(sealer: sealing.Sealer, uid: str, field: str, blob: bytes | None) -> Secret | None:
    """Decrypt a grant's token column into a :class:`Secret` (None stays None)."""
    if blob is None:
        return None
    return Secret(sealer.open(blob, sealing.grant_aad(uid, field)).decode("utf-8"))
