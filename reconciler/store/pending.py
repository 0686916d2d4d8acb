"""Pending authorizations: the store half of "start here, finish anywhere" (single use, short-lived).

:class:`PendingAuthorizations` is part of the :class:`~reconciler.store.base.Store`
interface; :mod:`reconciler.services.authorize` writes a row when an authorization
starts and consumes it when the callback arrives, possibly in another process. The
``state`` is stored only as its SHA-256 and the PKCE verifier is sealed, so the
table holds nothing that would let a reader finish someone else's consent.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib

from reconciler.secrets import Secret


def state_hash(state: str) -> str:
    """The lookup key of a pending authorization: SHA-256 of its ``state`` (hex)."""
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
    ) -> None:
        """Record a started authorization; rows expired before ``created_at`` are dropped."""

    @abc.abstractmethod
    def consume_pending_authorization(self, state: str, *, now: float) -> PendingAuthorization | None:
        """Take the row of ``state`` exactly once, atomically (None: unknown state).

        A row taken before comes back with ``consumed_before=True``; expiry is the
        caller's check (``expires_at``), so it can say which of the two happened.
        """
