"""The pending-authorization half of the PostgreSQL store (``pending_authorizations`` table).

:class:`PostgresPendingAuthorizations` is a mixin of :class:`reconciler.store.postgres.PostgresStore`,
the twin of :mod:`reconciler.store.sqlite_pending`. A row is taken once under a row lock
(``SELECT … FOR UPDATE``), so two servers receiving the same callback cannot both finish
it. Expiry: rows are dropped by the database clock; the moments handed back are in the
caller's clock, so its ``expires_at`` check agrees with the database's.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import TYPE_CHECKING, Any

from reconciler.errors import StateError
from reconciler.secrets import Secret
from reconciler.store import sealing
from reconciler.store.pending import PendingAuthorization, PendingAuthorizations, state_hash, verifier_aad

if TYPE_CHECKING:
    from reconciler.store.postgres_conn import Connector, Tx


class PostgresPendingAuthorizations(PendingAuthorizations):
    """Pending authorizations over the store's connector ``self._db``."""

    _db: Connector
    _sealer: sealing.Sealer

    if TYPE_CHECKING:

        def _check_writable(self) -> None: ...

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
        """Record a started authorization; rows expired by the database clock are dropped."""
        self._check_writable()
        hashed = state_hash(state)
        sealed = self._sealer.seal(code_verifier.reveal().encode("ascii"), verifier_aad(hashed))
        clock = self._db.clock

        def work(tx: Tx) -> None:
            row = tx.execute("SELECT uid FROM links WHERE name = %s", (link,)).fetchone()
            if row is None:
                raise StateError(f"no link named {link!r} in the store")
            now = clock.now(tx.db_now, created_at)
            tx.execute("DELETE FROM pending_authorizations WHERE expires_at < %s", (now,))
            tx.execute(
                "INSERT INTO pending_authorizations (state_hash, link_uid, code_verifier, redirect_uri,"
                " issuer, require_iss, created_at, expires_at, session_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    hashed,
                    row[0],
                    sealed,
                    redirect_uri,
                    issuer,
                    int(require_iss),
                    now,
                    clock.to_db(expires_at),
                    session_hash,
                ),
            )

        self._db.run(work, write=True, action="record a pending authorization")

    def consume_pending_authorization(
        self, state: str, *, now: float, link: str | None = None, session_hash: str | None = None
    ) -> PendingAuthorization | None:
        """Take the row of ``state`` exactly once, atomically (None: unknown state).

        With ``link`` or ``session_hash``, a row bound to another link or admin session
        (or to none) is not taken: it comes back with ``refused`` and no verifier.
        """
        self._check_writable()
        hashed = state_hash(state)
        clock = self._db.clock

        def work(tx: Tx) -> tuple[Any, ...] | None:
            row = tx.execute(
                "SELECT l.name, p.code_verifier, p.redirect_uri, p.issuer, p.require_iss, p.created_at,"
                " p.expires_at, p.consumed_at, p.session_hash FROM pending_authorizations p"
                " JOIN links l ON l.uid = p.link_uid WHERE p.state_hash = %s FOR UPDATE OF p",
                (hashed,),
            ).fetchone()
            if row is not None and row[7] is None and _refusal(row[0], row[8], link, session_hash) is None:
                tx.execute(
                    "UPDATE pending_authorizations SET consumed_at = %s, code_verifier = ''::bytea"
                    " WHERE state_hash = %s",
                    (clock.now(tx.db_now, now), hashed),
                )
            return tuple(row) if row is not None else None

        found = self._db.run(work, write=True, action="take a pending authorization")
        if found is None:
            return None
        name, sealed, redirect_uri, issuer, require_iss, created_at, expires_at, consumed_at, bound = found
        refused = _refusal(name, bound, link, session_hash)
        verifier = Secret("")
        binding: dict[str, Any] = {}
        if {f.name for f in dataclasses.fields(PendingAuthorization)} >= _BINDING_FIELDS:
            binding = {"session_hash": bound, "refused": refused}
        if consumed_at is None and refused is None:
            verifier = Secret(self._sealer.open(bytes(sealed), verifier_aad(hashed)).decode("ascii"))
        return PendingAuthorization(
            link_name=name,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            issuer=issuer,
            require_iss=bool(require_iss),
            created_at=clock.from_db(created_at) or 0.0,
            expires_at=clock.from_db(expires_at) or 0.0,
            consumed_before=consumed_at is not None,
            **binding,
        )


_BINDING_FIELDS = frozenset({"session_hash", "refused"})


def _refusal(
    row_link: str, row_session: str | None, link: str | None, session_hash: str | None
) -> str | None:
    """Why a row may not be taken by this caller ("link" | "session"), or None: it may."""
    if link is not None and row_link != link:
        return "link"
    if session_hash is not None and not (
        row_session is not None and hmac.compare_digest(row_session, session_hash)
    ):
        return "session"
    return None
