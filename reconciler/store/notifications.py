"""Status notifications: the store half of the status webhooks (``link_notifications``, the outbox).

:class:`Notifications` is part of the :class:`~reconciler.store.base.Store` interface;
:mod:`reconciler.services.notify` runs on top of it in every keeper and ``serve``
process at once. What makes that safe:

* a status change is detected and enqueued in **one write transaction**
  (:meth:`Notifications.record_status_changes`): the last announced status of each link
  is compared and updated there, so however many processes look, each change is
  enqueued exactly once (one outbox row per webhook target);
* an outbox row is **leased** before it is sent (:meth:`Notifications.claim_deliveries`)
  and finished only by its lease holder (:meth:`Notifications.finish_delivery`), so one
  process at a time delivers it; a process that died leaves a lease that expires;
* the targets (URL and HMAC key) are **sealed** like client secrets
  (:meth:`Notifications.put_notify_targets`, written by apply); only their origin is
  readable.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.domain.notify import NotifyTargetDecl
from reconciler.secrets import Secret

__all__ = ["Delivery", "LinkState", "Notifications", "NotifyTarget", "StatusChange", "target_aad"]


def target_aad(target_id: str, field: str) -> bytes:
    """Associated data of a sealed webhook URL or key: bound to the target and the field."""
    return b"linkctl/notify/" + target_id.encode("ascii") + b"/" + field.encode("ascii")


@dataclasses.dataclass(frozen=True)
class NotifyTarget:
    """A webhook target as stored: an id, its origin, and the sealed URL and key (opened)."""

    id: str  # keyed fingerprint of the URL: stable across applies, says nothing about it
    origin: str
    url: Secret
    secret: Secret


@dataclasses.dataclass(frozen=True)
class LinkState:
    """What one query tells of a link: status and timing, never a token (metrics, change detection)."""

    name: str
    provider: str
    status: str | None  # None: no grant row
    last_error: str | None = None
    error_class: str | None = None
    retry_at: float | None = None
    access_expires_at: float | None = None


@dataclasses.dataclass(frozen=True)
class StatusChange:
    """A link whose status differs from the one last announced."""

    link: str
    old: str
    new: str
    at: float
    state: LinkState


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One leased outbox row: the body to POST to a target, and how often it was tried."""

    id: int
    target: str  # NotifyTarget.id
    body: str
    attempts: int
    created_at: float


class Notifications(abc.ABC):
    """Store methods of the status webhooks (targets, announced statuses, the outbox)."""

    @abc.abstractmethod
    def put_notify_targets(self, targets: Sequence[NotifyTargetDecl], *, actor: str, now: float) -> bool:
        """Replace the declared webhook targets (sealed); False (nothing written) when unchanged."""

    @abc.abstractmethod
    def notify_targets(self) -> list[NotifyTarget]:
        """The stored webhook targets, URLs and keys opened."""

    @abc.abstractmethod
    def link_states(self) -> list[LinkState]:
        """Every link's status and timing in one read, ordered by name (no token decrypted)."""

    @abc.abstractmethod
    def record_status_changes(
        self,
        *,
        now: float,
        targets: Sequence[str],
        render: Callable[[StatusChange], str],
        announced: frozenset[str],
    ) -> list[StatusChange]:
        """Detect and enqueue, in one write transaction, every change of a link's announced status.

        A link's status counts when it is in ``announced``; a link seen the first time is
        recorded silently (its status is the baseline), a deleted link is forgotten. Each
        change gets one outbox row per id in ``targets`` with the body ``render`` makes
        (called inside the transaction: it must be pure). Returns the changes enqueued.
        """

    @abc.abstractmethod
    def claim_deliveries(self, *, owner: str, now: float, lease_ttl: float, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` undelivered rows that are due and not leased by a live holder."""

    @abc.abstractmethod
    def finish_delivery(
        self,
        delivery_id: int,
        *,
        owner: str,
        now: float,
        actor: str,
        link: str | None,
        detail: Mapping[str, Any],
        error: str | None = None,
        retry_at: float | None = None,
        give_up: bool = False,
    ) -> bool:
        """End a leased delivery: delivered (no ``error``), retried at ``retry_at``, or given up.

        Delivered and given-up rows get an audit event (``notify.delivered``,
        ``notify.given_up``: ``link``, ``detail``, never a URL or key) in the same
        transaction; a given-up row is removed. False (nothing written) when ``owner`` no
        longer holds the lease.
        """

    @abc.abstractmethod
    def delivery_backlog(self) -> int:
        """How many deliveries are still to make (metrics)."""
