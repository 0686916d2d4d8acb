"""Pending authorizations: the store half of "start here, finish anywhere" (single use, short-lived).

:class:`PendingAuthorizations` is part of the :class:`~reconciler.store.base.Store`
interface; :mod:`reconciler.services.authorize` writes a row when an authorization
starts and consumes it when the callback arrives, possibly in another process. The
``state`` is stored only as its SHA-256 and the PKCE verifier is sealed, so the
table holds nothing that would let a reader finish someone else's consent.

An authorization started from the server's pages is bound to the admin session that
started it (``session_hash``, the SHA-256 the sessions table keys on) and always to its
link: a callback from another session, or naming another link, is refused without
taking the row, so the admin's own callback can still finish it.
"""

from __future__ import annotations

import abc
import dataclasses

from reconciler.secrets import Secret


def state_hash(state: str) -> str:
    """The lookup key of a pending authorization: SHA-256 of its ``state`` (hex)."""
    import hashlib  # here: hashlib loads OpenSSL's hashes, which a token read does not need

    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def verifier_aad(hashed_state: str) -> bytes:
    """Associated data of a sealed PKCE verifier: bound to the row's state hash."""
    return b"linkctl/pending/" + hashed_state.encode("ascii") + b"/code_verifier"


@dataclasses.dataclass(frozen=True)
class PendingAuthorization:
    """An authorization code request waiting for its callback."""

    link_name: str
    code_verifier: Secret
    redirect_uri: str
    issuer: str | None  # expected RFC 9207 ``iss`` (None: not checked)
    require_iss: bool
    created_at: float
    expires_at: float
    consumed_before: bool = False  # a finish already took it (this one must fail)
    session_hash: str | None = None  # the admin session that started it (None: the CLI)
    refused: str | None = None  # "link" | "session": left untouched, the binding did not match


class PendingAuthorizations(abc.ABC):
    """Store methods for pending authorizations (one row per ``state``)."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    def consume_pending_authorization(
        self, state: str, *, now: float, link: str | None = None, session_hash: str | None = None
    ) -> PendingAuthorization | None:
        """Take the row of ``state`` exactly once, atomically (None: unknown state).

        A row taken before comes back with ``consumed_before=True``; expiry is the
        caller's check (``expires_at``), so it can say which of the two happened.
        With ``link`` or ``session_hash``, a row bound to another link or session (or
        to none) is not taken: it comes back with ``refused`` set and no verifier.
        """


def binding_refusal(
    row_link: str, row_session: str | None, *, link: str | None, session_hash: str | None
) -> str | None:
    """Why a row may not be taken by this caller ("link" | "session"), or None: it may."""
    import hmac

    if link is not None and row_link != link:
        return "link"
    if session_hash is not None and not (
        row_session is not None and hmac.compare_digest(row_session, session_hash)
    ):
        return "session"
    return None
