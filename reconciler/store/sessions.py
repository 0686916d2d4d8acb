"""Admin sessions of the pages: the store half of ``/login`` and ``/logout``.

:class:`Sessions` is part of the :class:`~reconciler.store.base.Store` interface;
:mod:`reconciler.services.sessions` creates and looks them up. Only the SHA-256 of the
cookie value is stored, and the per-session CSRF secret is sealed like every secret, so
the table holds nothing that lets a reader act as a logged-in admin.
"""

from __future__ import annotations

import abc
import dataclasses

from reconciler.secrets import Secret


def csrf_aad(session_hash: str) -> bytes:
    """Associated data of a sealed CSRF secret: bound to its session row."""
    return b"linkctl/session/" + session_hash.encode("ascii") + b"/csrf_secret"


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One admin session as stored (the cookie value is never kept)."""

    session_hash: str
    api_key_id: str
    csrf_secret: Secret
    created_at: float
    expires_at: float
    ended_at: float | None


class Sessions(abc.ABC):
    """Store methods for admin sessions (one row per session)."""

    @abc.abstractmethod
    def put_session(
        self, session_hash: str, *, api_key_id: str, csrf_secret: Secret, created_at: float, expires_at: float
    ) -> None:
        """Record a new session; rows expired before ``created_at`` are dropped."""

    @abc.abstractmethod
    def get_session(self, session_hash: str) -> SessionRecord | None:
        """The session row of a cookie hash (ended and expired ones too)."""

    @abc.abstractmethod
    def end_session(self, session_hash: str, *, now: float) -> bool:
        """Mark a session ended (``/logout``); False if there was none still open."""
