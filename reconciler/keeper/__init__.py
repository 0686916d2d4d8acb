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
processes and machines. Importing it stays cheap (``linkctl token`` starts with it):
httpx is imported only where a request is really made.
"""

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
