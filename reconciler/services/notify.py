"""Status webhooks: detect link status changes, enqueue them once, deliver them signed, retry.

Who runs it: ``linkctl keeper`` and ``linkctl serve`` (with or without ``--keeper``) each
start a :class:`NotifierThread`; any number of them may run on one store. Each pass
(:meth:`Notifier.run_once`):

1. compares every link's status with the one last announced and, for each change,
   enqueues one outbox row per ``spec.notify`` target — in one store transaction, so a
   change is enqueued exactly once however many processes look
   (:meth:`~reconciler.store.notifications.Notifications.record_status_changes`);
2. leases due outbox rows and POSTs them, signed, through
   :class:`reconciler.oauth.webhook.WebhookSender`; a failure is retried with
   exponential backoff (jitter, a cap, ``Retry-After`` honoured) and, after
   :attr:`NotifyPolicy.max_attempts`, given up with a ``notify.given_up`` audit event.

It runs on its own thread with its own store connection: a slow receiver never delays a
refresh. Signing (documented in docs/notifications.md)::

    X-Linkctl-Timestamp: <unix seconds>
    X-Linkctl-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.domain.clock import iso_time
from reconciler.domain.grants import GrantStatus
from reconciler.domain.notify import NOTIFIED_STATUSES
from reconciler.domain.owners import new_owner
from reconciler.errors import LinkctlError

if TYPE_CHECKING:
    from reconciler.oauth.webhook import WebhookSender
    from reconciler.secrets import Secret
    from reconciler.store.base import Store
    from reconciler.store.notifications import Delivery, NotifyTarget, StatusChange

__all__ = [
    "EVENT_TYPE",
    "Notifier",
    "NotifierThread",
    "NotifyPolicy",
    "notify_once",
    "render_body",
    "sign",
    "verify",
]

log = logging.getLogger("linkctl.notify")

EVENT_TYPE = "link.status_changed"
SIGNATURE_HEADER = "X-Linkctl-Signature"
TIMESTAMP_HEADER = "X-Linkctl-Timestamp"
DELIVERED, RETRY, GIVEN_UP = "delivered", "retry", "given_up"


@dataclasses.dataclass(frozen=True)
class NotifyPolicy:
    """Timing of the notifier: how often it looks, how it retries, when it gives up."""

    interval: float = 2.0  # seconds between passes
    http_timeout: float = 10.0
    retry_base: float = 10.0  # first retry after about this long, doubling each time
    retry_cap: float = 900.0  # never wait longer than this between attempts
    max_attempts: int = 12  # about 2.5 hours of retries with the defaults
    jitter: float = 0.2  # +-20 % so that many rows do not retry in lockstep

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifyPolicy:
        """The defaults, overridden by ``LINKCTL_NOTIFY_*`` variables (bad values: ``ConfigError``)."""
        from reconciler.errors import ConfigError
        from reconciler.settings import MAX_COUNT, MAX_TIMEOUT_SECONDS, parse_number

        values: dict[str, Any] = {}
        for field, (var, integer) in _ENV_FIELDS.items():
            text = env.get(var)
            if text is None:
                continue
            try:
                value = parse_number(
                    text, maximum=MAX_COUNT if integer else MAX_TIMEOUT_SECONDS, integer=integer
                )
            except ValueError as exc:
                raise ConfigError(
                    f"not a usable value: {exc}",
                    file=var,
                    hint=f"set it to a {'whole number' if integer else 'number of seconds'}, or unset it",
                ) from None
            if value <= 0:
                raise ConfigError("must be more than 0", file=var, hint="unset it for the default")
            values[field] = int(value) if integer else value
        return cls(**values)

    @property
    def lease_ttl(self) -> float:
        """How long a claimed row is ours: every claimed POST fits in it twice over."""
        return max(30.0, 2 * self.http_timeout * self.claim_limit)

    @property
    def claim_limit(self) -> int:
        """Rows claimed per pass (small: a dead receiver must not hold many leases)."""
        return 5

    def retry_delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds until attempt ``attempts + 1``: doubling from the base, capped, with jitter."""
        delay = min(self.retry_cap, self.retry_base * 2.0 ** max(attempts - 1, 0))
        delay *= 1 + rng.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_cap))
        return max(delay, 0.0)


_ENV_FIELDS = {
    "interval": ("LINKCTL_NOTIFY_INTERVAL", False),
    "http_timeout": ("LINKCTL_NOTIFY_TIMEOUT", False),
    "retry_base": ("LINKCTL_NOTIFY_RETRY_BASE", False),
    "retry_cap": ("LINKCTL_NOTIFY_RETRY_CAP", False),
    "max_attempts": ("LINKCTL_NOTIFY_MAX_ATTEMPTS", True),
}


def notify_once(store: Store, *, actor: str, policy: NotifyPolicy, deliver: bool = True) -> None:
    """One detection and (unless not ``deliver``) every due delivery, then return (``keeper --once``)."""
    from reconciler.oauth.webhook import WebhookSender

    if not deliver:
        Notifier(store, None, actor=actor, policy=policy).detect()
        return
    with WebhookSender(timeout=policy.http_timeout) as sender:
        notifier = Notifier(store, sender, actor=actor, policy=policy)
        notifier.detect()
        while notifier.deliver():
            pass


def _fix(change: StatusChange) -> str | None:
    """What to do about the new status, in the words ``linkctl doctor`` uses."""
    from reconciler.oauth.providers import find_preset

    name, state = change.link, change.state
    preset = find_preset(state.provider)
    meaning = preset.explain(None, state.last_error) if preset and state.last_error else None
    if change.new == GrantStatus.NEEDS_AUTHORIZATION:
        return f"authorize the link again: `linkctl authorize {name}` (or Authorize on its page)"
    if change.new == GrantStatus.CONFIGURATION_ERROR:
        return (
            meaning.fix
            if meaning
            else f"fix the app registration or client secret and apply; `linkctl doctor {name}` checks it"
        )
    if change.new == GrantStatus.TRANSIENT_ERROR:
        return f"none needed: linkctl retries on its own; if it persists, run `linkctl doctor {name}`"
    if change.new == GrantStatus.PENDING_CREDENTIALS:
        return "declare clientId and clientSecret in the link's file, then `linkctl apply`"
    return None


def render_body(change: StatusChange, *, instance: str | None) -> str:
    """The JSON body of one status change (no token, key or URL; ``id`` is for deduplication)."""
    state = change.state
    body = {
        "type": EVENT_TYPE,
        "id": uuid.uuid4().hex,
        "instance": instance,
        "link": change.link,
        "provider": state.provider,
        "old_status": change.old,
        "new_status": change.new,
        "changed_at": iso_time(change.at, zulu=True),
        "reason": state.last_error if change.new != GrantStatus.HEALTHY else None,
        "error_class": state.error_class if change.new != GrantStatus.HEALTHY else None,
        "retry_at": iso_time(state.retry_at, zulu=True)
        if change.new == GrantStatus.TRANSIENT_ERROR
        else None,
        "fix": _fix(change),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def sign(secret: Secret, timestamp: int, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 over ``"<timestamp>." + body``."""
    digest = hmac.new(secret.reveal().encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, "sha256")
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is within ``tolerance`` s."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, "sha256").hexdigest()
    return hmac.compare_digest("sha256=" + expected, signature)


def _body_link(delivery: Delivery) -> str | None:
    try:
        link = json.loads(delivery.body).get("link")
    except (ValueError, AttributeError):
        return None
    return link if isinstance(link, str) else None


class Notifier:
    """One pass of detection and delivery over a store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        sender: WebhookSender | None,
        *,
        actor: str,
        policy: NotifyPolicy | None = None,
        clock: Callable[[], float] = time.time,
        observe: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``observe`` gets each delivery outcome (delivered | retry | given_up), e.g. for metrics."""
        self.store = store
        self.sender = sender
        self.actor = actor
        self.policy = policy or NotifyPolicy()
        self.clock = clock
        self.observe = observe
        self.rng = rng or random.Random()
        self.owner = new_owner("notify")

    def detect(self) -> list[StatusChange]:
        """Enqueue every status change since the last look (exactly once across processes)."""
        targets = [t.id for t in self.store.notify_targets()]
        instance = self.store.instance_name()
        return self.store.record_status_changes(
            now=self.clock(),
            targets=targets,
            render=lambda change: render_body(change, instance=instance),
            announced=NOTIFIED_STATUSES,
        )

    def deliver(self) -> int:
        """Send the deliveries that are due (leased first); how many were attempted."""
        claimed = self.store.claim_deliveries(
            owner=self.owner,
            now=self.clock(),
            lease_ttl=self.policy.lease_ttl,
            limit=self.policy.claim_limit,
        )
        if not claimed:
            return 0
        targets = {t.id: t for t in self.store.notify_targets()}
        for delivery in claimed:
            self._deliver_one(delivery, targets.get(delivery.target))
        return len(claimed)

    def _deliver_one(self, delivery: Delivery, target: NotifyTarget | None) -> None:
        link = _body_link(delivery)
        attempts = delivery.attempts + 1
        detail: dict[str, object] = {"attempts": attempts, "delivery": delivery.id}
        if target is None:
            detail["error"] = "the webhook target is no longer declared in spec.notify"
            self._finish(delivery, link, detail, error=str(detail["error"]), give_up=True)
            return
        detail["target"] = target.origin
        assert self.sender is not None, "a Notifier that delivers needs a sender"
        body = delivery.body.encode("utf-8")
        timestamp = int(self.clock())
        delivery_id = json.loads(delivery.body).get("id", str(delivery.id))
        answer = self.sender.post(
            target.url,
            body,
            {
                SIGNATURE_HEADER: sign(target.secret, timestamp, body),
                TIMESTAMP_HEADER: str(timestamp),
                "X-Linkctl-Event": EVENT_TYPE,
                "X-Linkctl-Delivery": str(delivery_id),
            },
        )
        if answer.delivered:
            detail["http_status"] = answer.status_code
            self._finish(delivery, link, detail)
            return
        error = answer.error or "no answer"
        detail["error"] = error
        if answer.status_code is not None:
            detail["http_status"] = answer.status_code
        if attempts >= self.policy.max_attempts:
            log.warning(
                "webhook to %s for %s given up after %d attempts: %s", target.origin, link, attempts, error
            )
            self._finish(delivery, link, detail, error=error, give_up=True)
            return
        delay = self.policy.retry_delay(attempts, answer.retry_after, self.rng)
        log.info("webhook to %s for %s failed (%s); retry in %.0f s", target.origin, link, error, delay)
        self._finish(delivery, link, detail, error=error, retry_at=self.clock() + delay)

    def _finish(
        self,
        delivery: Delivery,
        link: str | None,
        detail: dict[str, object],
        *,
        error: str | None = None,
        retry_at: float | None = None,
        give_up: bool = False,
    ) -> None:
        done = self.store.finish_delivery(
            delivery.id,
            owner=self.owner,
            now=self.clock(),
            actor=self.actor,
            link=link,
            detail=detail,
            error=error,
            retry_at=retry_at,
            give_up=give_up,
        )
        if done and self.observe is not None:
            self.observe(GIVEN_UP if give_up else RETRY if error else DELIVERED)

    def run_once(self) -> None:
        """One pass: detect, then deliver what is due."""
        self.detect()
        self.deliver()


class NotifierThread:
    """Runs a :class:`Notifier` every ``policy.interval`` s on a daemon thread with its own store."""

    def __init__(
        self,
        store_factory: Callable[[], Store],
        *,
        actor: str,
        policy: NotifyPolicy | None = None,
        observe: Callable[[str], None] | None = None,
        verify_tls: bool | str = True,
    ) -> None:
        """``store_factory`` opens the thread's own store (SQLite connections are per thread)."""
        self.store_factory = store_factory
        self.actor = actor
        self.policy = policy or NotifyPolicy()
        self.observe = observe
        self.verify_tls = verify_tls
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> NotifierThread:
        """Start the loop (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="linkctl-notify", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait up to ``timeout`` s (an in-flight POST ends by its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.policy.http_timeout + 5)

    def _run(self) -> None:
        from reconciler.oauth.webhook import WebhookSender

        store: Store | None = None
        with WebhookSender(timeout=self.policy.http_timeout, verify=self.verify_tls) as sender:
            while not self._stop.is_set():
                try:
                    if store is None:
                        store = self.store_factory()
                    notifier = Notifier(
                        store, sender, actor=self.actor, policy=self.policy, observe=self.observe
                    )
                    while not self._stop.is_set():
                        notifier.detect()
                        while notifier.deliver() and not self._stop.is_set():
                            pass  # more rows may be due: drain them before resting
                        self._stop.wait(self.policy.interval)
                except Exception as error:  # a busy or unreachable store: try again next time
                    text = (
                        error.message
                        if isinstance(error, LinkctlError)
                        else f"{type(error).__name__}: {error}"
                    )
                    log.warning("status notifications: %s", text)
                    if store is not None:
                        with contextlib.suppress(Exception):
                            store.close()
                        store = None
                    self._stop.wait(self.policy.interval)
        if store is not None:
            store.close()
