"""The pending-authorization half of the SQLite store (``pending_authorizations`` table).

:class:`SQLitePendingAuthorizations` is a mixin of :class:`reconciler.store.sqlite.SQLiteStore`
(like :mod:`reconciler.store.sqlite_grants`); it relies on ``self._conn``,
``self._sealer`` and ``self._immediate()`` of the concrete store.
"""

from __future__ import annotations

import contextlib
import sqlite3

from reconciler.errors import StateError
from reconciler.secrets import Secret
from reconciler.store import sealing
from reconciler.store.pending import (
    PendingAuthorization,
    PendingAuthorizations,
    binding_refusal,
    state_hash,
    verifier_aad,
)


class SQLitePendingAuthorizations(PendingAuthorizations):
    """Pending authorizations over the connection of the store that mixes this in."""

    _conn: sqlite3.Connection
    _sealer: sealing.Sealer

    def _immediate(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    def put_pending_authorization(
        self,
        link: str,
        *,
        state: str,
        code_verifier: Secret,
        redirect_uri: str,
        issuer: str | None,
        require_iss: bool,
        created_at: float,
        expires_at: float,
        session_hash: str | None = None,
    ) -> None:
        """Record a started authorization; rows expired before ``created_at`` are dropped."""
        hashed = state_hash(state)
        sealed = self._sealer.seal(code_verifier.reveal().encode("ascii"), verifier_aad(hashed))
        with self._immediate() as conn:
            row = conn.execute("SELECT uid FROM links WHERE name = ?", (link,)).fetchone()
            if row is None:
                raise StateError(f"no link named {link!r} in the store")
            conn.execute("DELETE FROM pending_authorizations WHERE expires_at < ?", (created_at,))
            conn.execute(
                "INSERT INTO pending_authorizations (state_hash, link_uid, code_verifier, redirect_uri,"
                " issuer, require_iss, created_at, expires_at, session_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    hashed,
                    row[0],
                    sealed,
                    redirect_uri,
                    issuer,
                    int(require_iss),
                    created_at,
                    expires_at,
                    session_hash,
                ),
            )

    def consume_pending_authorization(
        self, state: str, *, now: float, link: str | None = None, session_hash: str | None = None
    ) -> PendingAuthorization | None:
        """Take the row of ``state`` exactly once, atomically (None: unknown state)."""
        hashed = state_hash(state)
        with self._immediate() as conn:
            row = conn.execute(
                "SELECT l.name, p.code_verifier, p.redirect_uri, p.issuer, p.require_iss, p.created_at,"
                " p.expires_at, p.consumed_at, p.session_hash FROM pending_authorizations p"
                " JOIN links l ON l.uid = p.link_uid WHERE p.state_hash = ?",
                (hashed,),
            ).fetchone()
            if row is None:
                return None
            name, sealed, redirect_uri, issuer, require_iss, created_at, expires_at, consumed_at, bound = row
            refused = binding_refusal(name, bound, link=link, session_hash=session_hash)
            if consumed_at is None and refused is None:
                # Taken: the row stays until it expires (so a second finish says "already
                # finished"), without the verifier, which only this first taker gets.
                conn.execute(
                    "UPDATE pending_authorizations SET consumed_at = ?, code_verifier = X''"
                    " WHERE state_hash = ?",
                    (now, hashed),
                )
        verifier = Secret("")
        if consumed_at is None and refused is None:
            verifier = Secret(self._sealer.open(sealed, verifier_aad(hashed)).decode("ascii"))
        return PendingAuthorization(
            link_name=name,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            issuer=issuer,
            require_iss=bool(require_iss),
            created_at=created_at,
            expires_at=expires_at,
            consumed_before=consumed_at is not None,
            session_hash=bound,
            refused=refused,
        )
