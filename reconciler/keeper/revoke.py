"""Revocation at the provider (RFC 7009) for prune: tokens read under the lease, sent after the delete.

Apply calls :func:`prepare_revocation` before its transaction (holding the lease means
no keeper rotates the refresh token in between), commits the deletion, then
:meth:`PendingRevocation.send`; a failed apply calls :meth:`PendingRevocation.abandon`.
:func:`revokes_on_delete` tells plan, without the network, whether a deletion revokes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from reconciler.domain.grants import GrantStatus
from reconciler.domain.owners import holder_is_dead, new_owner
from reconciler.errors import LinkctlError
from reconciler.keeper.audit import process_actor
from reconciler.keeper.config import client_config
from reconciler.keeper.timing import Now, Sleep
from reconciler.store.grants import LeaseLost

if TYPE_CHECKING:
    from reconciler.domain.grants import Grant
    from reconciler.domain.tokens import ClientConfig
    from reconciler.keeper.config import TokenClientLike
    from reconciler.secrets import Secret
    from reconciler.store.base import Store, StoredLink

__all__ = ["PendingRevocation", "RevocationResult", "prepare_revocation", "revoke_grant", "revokes_on_delete"]

log = logging.getLogger("linkctl.keeper")


@dataclasses.dataclass(frozen=True)
class RevocationResult:
    """What revocation at the provider did before a link is deleted (apply reports it)."""

    link: str
    attempted: bool  # False: no revocation endpoint, or no tokens
    revoked: bool  # every token sent was accepted
    endpoint: str | None = None
    revoked_tokens: tuple[str, ...] = ()  # token type hints accepted, e.g. ("refresh_token",)
    error: str | None = None  # why it failed (never a token)
    reason: str | None = None  # why nothing was attempted

    @property
    def failed(self) -> bool:
        """True when revocation was attempted and did not fully succeed."""
        return self.attempted and not self.revoked


@dataclasses.dataclass(frozen=True)
class PendingRevocation:
    """Tokens of a link about to be deleted, read under its refresh lease.

    Holding the lease means no keeper rotates the refresh token between the read and
    the revocation. Apply takes these before its transaction, commits the deletion,
    then calls :meth:`send`; if apply fails it calls :meth:`abandon` and the grant is
    exactly as it was.
    """

    name: str
    owner: str
    config: ClientConfig
    tokens: tuple[tuple[str, Secret], ...]  # (token_type_hint, token), refresh token first
    token_version: int
    audit: Store | None = None  # where the revocation is recorded (grant.revoked)

    def send(self, client: TokenClientLike) -> RevocationResult:
        """Revoke every token at the provider (RFC 7009); failures are returned, never raised."""
        result = self._send(client)
        if self.audit is not None:
            from reconciler.store.base import Event

            detail = {
                "endpoint": result.endpoint,
                "revoked": result.revoked,
                "revoked_tokens": list(result.revoked_tokens),
            }
            try:
                self.audit.add_event(Event("grant.revoked", self.name, process_actor(), detail))
            except LinkctlError as failure:
                log.warning("%s: cannot record the revocation: %s", self.name, failure.message)
        return result

    def _send(self, client: TokenClientLike) -> RevocationResult:
        done: list[str] = []
        errors: list[str] = []
        for hint, token in self.tokens:
            try:
                client.revoke(self.config, token, token_type_hint=hint)
                done.append(hint)
            except LinkctlError as error:
                errors.append(f"{hint}: {error.message}")
        return RevocationResult(
            self.name,
            attempted=True,
            revoked=not errors,
            endpoint=self.config.revocation_endpoint,
            revoked_tokens=tuple(done),
            error="; ".join(errors) or None,
        )

    def abandon(self, store: Store) -> None:
        """Give the lease back untouched (the deletion did not happen)."""
        store.release_lease(self.name, owner=self.owner)


def _has_tokens(grant: Grant | None) -> bool:
    return grant is not None and (grant.obtained_at is not None or grant.has_refresh_token)


def revokes_on_delete(store: Store, link: StoredLink) -> bool:
    """True when deleting ``link`` revokes tokens at the provider (decided without the network).

    That takes ``revokeOnDelete`` (default true), a stored grant with tokens, and a revocation
    endpoint: declared, or expected from discovery unless the cached discovery document has none.
    """
    if not link.spec.get("revokeOnDelete", True) or not _has_tokens(store.get_grant(link.name)):
        return False
    if link.spec.get("revocationEndpoint"):
        return True
    issuer = link.spec.get("issuer")
    if not issuer or link.provider != "custom":  # a preset without one (Microsoft) has none
        return False
    cached = store.get_provider_metadata(str(issuer))
    return cached is None or bool(cached[0].get("revocation_endpoint"))


def prepare_revocation(
    store: Store,
    name: str,
    client: TokenClientLike,
    *,
    clock: Now = time.time,
    sleep: Sleep = time.sleep,
    lease_ttl: float = 120.0,
    wait_timeout: float = 15.0,
) -> PendingRevocation | RevocationResult:
    """Take the lease and read the tokens to revoke, or say why there is nothing to revoke."""
    link = store.get_link(name)
    if link is None:
        return RevocationResult(name, attempted=False, revoked=False, reason="no such link")
    try:
        config = client_config(store, link)
    except LinkctlError as error:
        return RevocationResult(name, attempted=False, revoked=False, error=error.message, reason="no config")
    if not config.revocation_endpoint and not config.issuer:
        return RevocationResult(
            name, attempted=False, revoked=False, reason="the provider has no revocation endpoint (RFC 7009)"
        )
    if not _has_tokens(store.get_grant(name)):
        # Never authorized: nothing to revoke, so no discovery, no request, no lease left behind.
        return RevocationResult(
            name, attempted=False, revoked=False, endpoint=config.revocation_endpoint, reason="no tokens"
        )
    if not config.revocation_endpoint:
        try:  # a custom link with an issuer: the endpoint may come from discovery
            config = client.with_endpoints(config, revoking=True)
        except LinkctlError as error:
            return RevocationResult(name, attempted=True, revoked=False, error=f"discovery: {error.message}")
    if not config.revocation_endpoint:
        return RevocationResult(
            name, attempted=False, revoked=False, reason="the provider has no revocation endpoint (RFC 7009)"
        )
    owner = new_owner("revoke")
    deadline = clock() + wait_timeout
    grant = store.acquire_lease(name, owner=owner, ttl=lease_ttl, now=clock())
    while grant is None and clock() < deadline:
        holder = store.get_grant(name)
        if holder is not None and holder_is_dead(holder.lease_owner):
            # A killed apply or keeper on this host: its lease would block us until it expires.
            store.release_lease(name, owner=str(holder.lease_owner))
        else:
            sleep(0.1)
        grant = store.acquire_lease(name, owner=owner, ttl=lease_ttl, now=clock())
    if grant is None:
        return RevocationResult(
            name,
            attempted=True,
            revoked=False,
            endpoint=config.revocation_endpoint,
            error=f"the refresh lease stayed held for {wait_timeout:g} s; tokens were not revoked",
        )
    pairs = (("refresh_token", grant.refresh_token), ("access_token", grant.access_token))
    tokens = tuple((hint, token) for hint, token in pairs if token is not None)
    if not tokens:
        store.release_lease(name, owner=owner)
        return RevocationResult(
            name, attempted=False, revoked=False, endpoint=config.revocation_endpoint, reason="no tokens"
        )
    return PendingRevocation(name, owner, config, tokens, grant.token_version, audit=store)


def revoke_grant(
    store: Store,
    name: str,
    client: TokenClientLike,
    *,
    clock: Now = time.time,
    sleep: Sleep = time.sleep,
    lease_ttl: float = 120.0,
    wait_timeout: float = 15.0,
) -> RevocationResult:
    """Revoke a link's tokens now and mark its grant as needing authorization.

    For a link that stays; apply's deletions use :func:`prepare_revocation` so that a
    failed apply never leaves a stored link with dead tokens.
    """
    pending = prepare_revocation(
        store, name, client, clock=clock, sleep=sleep, lease_ttl=lease_ttl, wait_timeout=wait_timeout
    )
    if isinstance(pending, RevocationResult):
        return pending
    result = pending.send(client)
    if result.revoked:
        with contextlib.suppress(LeaseLost):  # deleted or re-authorized meanwhile: nothing to mark
            store.record_failure(
                name,
                owner=pending.owner,
                expected_version=pending.token_version,
                status=GrantStatus.NEEDS_AUTHORIZATION,
                error_class="revoked",
                message="tokens were revoked at the provider",
                retry_at=None,
                lost_response=False,
                now=clock(),
            )
    else:
        pending.abandon(store)
    return result
