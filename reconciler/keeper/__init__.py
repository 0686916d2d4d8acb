"""The token keeper: obtains client-credentials tokens and refreshes every grant before expiry.

One module per job: :mod:`~reconciler.keeper.timing` (every timing rule),
:mod:`~reconciler.keeper.classify` (error → grant status), :mod:`~reconciler.keeper.lease`
(the lease protocol, written once), :mod:`~reconciler.keeper.refresh` (one link, a batch),
:mod:`~reconciler.keeper.daemon` (the worker pool of ``linkctl keeper``),
:mod:`~reconciler.keeper.fresh` (``linkctl token``), :mod:`~reconciler.keeper.revoke`
(revocation for prune), :mod:`~reconciler.keeper.report` (outcomes), plus
:mod:`~reconciler.keeper.config` (the one builder of a link's ClientConfig) and
:mod:`~reconciler.keeper.audit` (status-change events). Everything it stores goes
through the ``GrantStore`` lease API, so the invariants of docs/testing.md hold across
processes and machines. Importing it is cheap (``linkctl token`` starts with it): the names below are
imported from their modules on first use (PEP 562), so a fresh token never loads the
worker pool, revocation or httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.domain.owners import holder_is_dead, new_owner
    from reconciler.keeper.audit import process_actor, record_status_change
    from reconciler.keeper.classify import classify, failure_message
    from reconciler.keeper.config import TokenClientLike, client_config
    from reconciler.keeper.daemon import Keeper
    from reconciler.keeper.fresh import fresh_token
    from reconciler.keeper.lease import Attempt, run_leased
    from reconciler.keeper.refresh import refresh_batch, refresh_leased, refresh_link
    from reconciler.keeper.report import FAILED, OBTAINED, REFRESHED, SKIPPED, KeeperReport, Outcome
    from reconciler.keeper.revoke import (
        PendingRevocation,
        RevocationResult,
        prepare_revocation,
        revoke_grant,
        revokes_on_delete,
    )
    from reconciler.keeper.timing import (
        KeeperPolicy,
        access_lifetime,
        access_valid_for,
        backoff_delay,
        is_due,
        send_deadline,
    )

# Where each public name lives; imported on first access.
_HOMES = {
    "holder_is_dead": "reconciler.domain.owners",
    "new_owner": "reconciler.domain.owners",
    "process_actor": "reconciler.keeper.audit",
    "record_status_change": "reconciler.keeper.audit",
    "classify": "reconciler.keeper.classify",
    "failure_message": "reconciler.keeper.classify",
    "TokenClientLike": "reconciler.keeper.config",
    "client_config": "reconciler.keeper.config",
    "Keeper": "reconciler.keeper.daemon",
    "fresh_token": "reconciler.keeper.fresh",
    "Attempt": "reconciler.keeper.lease",
    "run_leased": "reconciler.keeper.lease",
    "refresh_batch": "reconciler.keeper.refresh",
    "refresh_leased": "reconciler.keeper.refresh",
    "refresh_link": "reconciler.keeper.refresh",
    "FAILED": "reconciler.keeper.report",
    "OBTAINED": "reconciler.keeper.report",
    "REFRESHED": "reconciler.keeper.report",
    "SKIPPED": "reconciler.keeper.report",
    "KeeperReport": "reconciler.keeper.report",
    "Outcome": "reconciler.keeper.report",
    "PendingRevocation": "reconciler.keeper.revoke",
    "RevocationResult": "reconciler.keeper.revoke",
    "prepare_revocation": "reconciler.keeper.revoke",
    "revoke_grant": "reconciler.keeper.revoke",
    "revokes_on_delete": "reconciler.keeper.revoke",
    "KeeperPolicy": "reconciler.keeper.timing",
    "access_lifetime": "reconciler.keeper.timing",
    "access_valid_for": "reconciler.keeper.timing",
    "backoff_delay": "reconciler.keeper.timing",
    "is_due": "reconciler.keeper.timing",
    "send_deadline": "reconciler.keeper.timing",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (then it is a plain attribute)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, imported or not."""
    return sorted({*globals(), *_HOMES})


__all__ = [
    "FAILED",
    "OBTAINED",
    "REFRESHED",
    "SKIPPED",
    "Attempt",
    "Keeper",
    "KeeperPolicy",
    "KeeperReport",
    "Outcome",
    "PendingRevocation",
    "RevocationResult",
    "TokenClientLike",
    "access_lifetime",
    "access_valid_for",
    "backoff_delay",
    "classify",
    "client_config",
    "failure_message",
    "fresh_token",
    "holder_is_dead",
    "is_due",
    "new_owner",
    "prepare_revocation",
    "process_actor",
    "record_status_change",
    "refresh_batch",
    "refresh_leased",
    "refresh_link",
    "revoke_grant",
    "revokes_on_delete",
    "run_leased",
    "send_deadline",
]
