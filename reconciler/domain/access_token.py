"""``AccessToken``: a link's stored access token and what an answer about it needs, as plain data.

Apart from :mod:`reconciler.domain.grants` (which re-exports it) because ``linkctl token``
reads one and must start fast: a named tuple needs no :mod:`dataclasses` (which imports
:mod:`inspect`, 6 ms) and grants' other records are never built by a token read. No
``from __future__ import annotations``: string annotations of a named tuple become
``typing.ForwardRef``s, whose first ``compile()`` sets up the AST types (0.75 ms).
"""

from typing import NamedTuple

from reconciler.secrets import Secret


class AccessToken(NamedTuple):
    """A link's stored access token and what an answer about it needs: no refresh token, no bookkeeping.

    What the token API reads per request (``GrantStore.get_access_token``): one narrow row
    and one decryption instead of a whole :class:`~reconciler.domain.grants.Grant` with
    both tokens opened.
    """

    link_name: str
    access_token: Secret | None
    token_type: str | None = None
    scope: str | None = None
    access_expires_at: float | None = None

    def valid_for(self, now: float) -> float | None:
        """Seconds the token stays valid at ``now`` (inf without an expiry; None without a token)."""
        if self.access_token is None:
            return None
        return float("inf") if self.access_expires_at is None else self.access_expires_at - now
