"""The token keeper: obtains client-credentials tokens and refreshes every grant before expiry.

Owns scheduling policy (backoff, classification of failures into grant statuses), the
single-flight refresh of one link (:func:`refresh_link`), the worker pool of
``linkctl keeper`` (:class:`Keeper`), the on-demand path of ``linkctl token``
(:func:`fresh_token`) and revocation (:func:`prepare_revocation` then
:meth:`PendingRevocation.send`, around apply's prune; :func:`revoke_grant` for a link
that stays). Everything it stores goes through the
:class:`~reconciler.store.grants.GrantStore` lease API, so the invariants of
The invariants in docs/testing.md (one refresh in flight per link, fencing, rotated refresh token durable
before anything else, classified errors) hold across processes and machines.

Time, sleep and randomness are injected so tests control them. This module must
stay cheap to import (``linkctl token`` starts with it): httpx and the token client
are imported only where a request is really made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from reconciler.errors import (
    ConflictError,
    GrantError,
    LinkctlError,
    NeedsAuthorization,
    ProviderConfigError,
    ProviderError,
    ProviderUnavailable,
    ResponseLost,
    StateError,
    TokenLifetimeTooShort,
    TransientProviderError,
    UnknownLink,
)
from reconciler.store import grants
from reconciler.store.grants import Grant, LeaseLost

if TYPE_CHECKING:
    from reconciler.oauth.client import ClientConfig, TokenResponse
    from reconciler.secrets import Secret
    from reconciler.store.base import Store, StoredLink

log = logging.getLogger("linkctl.keeper")

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# Outcomes of one attempt on one link.
REFRESHED = "refreshed"
OBTAINED = "obtained"  # client credentials: tokens without a human step
FAILED = "failed"
SKIPPED = "skipped"  # lease held elsewhere, or no longer due


class TokenClientLike(Protocol):
    """What the keeper needs of :class:`reconciler.oauth.client.TokenClient`."""

    def refresh(self, config: ClientConfig, refresh_token: Secret) -> TokenResponse:
        """Refresh grant (RFC 6749 §6)."""

    def client_credentials(self, config: ClientConfig) -> TokenResponse:
        """Client credentials grant (RFC 6749 §4.4)."""

    def revoke(self, config: ClientConfig, token: Secret, *, token_type_hint: str = "refresh_token") -> None:
        """Token revocation (RFC 7009)."""

    def with_endpoints(self, config: ClientConfig, *, revoking: bool = False) -> ClientConfig:
        """``config`` with endpoints discovered from its issuer when it lacks some."""


@dataclasses.dataclass(frozen=True)
class KeeperPolicy:
    """Tunables of the keeper; the defaults suit production."""

    lease_ttl: float = 30.0  # must exceed http_timeout: a lease never expires mid-request
    http_timeout: float = 10.0
    backoff_base: float = 2.0  # full-jitter exponential backoff on transient errors ...
    backoff_cap: float = 900.0  # ... capped at 15 minutes (Retry-After may ask for longer)
    poll_interval: float = 5.0  # longest sleep of the daemon between looks at the store
    batch: int = 200  # links taken from the store per round
    chunk: int = 50  # links per worker batch: one transaction each to lease, mark and commit them

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError("the chunk size must be at least 1")
        if self.lease_ttl <= self.http_timeout:
            raise ValueError(
                f"lease TTL ({self.lease_ttl:g} s) must be longer than the HTTP timeout"
                f" ({self.http_timeout:g} s), or two refreshes of one link could overlap"
            )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one link in one attempt."""

    name: str
    result: str  # refreshed | obtained | failed | skipped
    status: str | None = None
    message: str | None = None


@dataclasses.dataclass
class KeeperReport:
    """Counts and names of one keeper run (``linkctl keeper --once`` prints it)."""

    refreshed: list[str] = dataclasses.field(default_factory=list)
    obtained: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> status message
    skipped: list[str] = dataclasses.field(default_factory=list)
    waiting_for_authorization: list[str] = dataclasses.field(default_factory=list)  # never authorized
    broken: dict[str, str] = dataclasses.field(default_factory=dict)  # needs re-authorization / config

    @property
    def ok(self) -> bool:
        """False when a refresh failed now or a link is broken; waiting links are not failures."""
        return not self.failed and not self.broken

    def add(self, outcome: Outcome) -> None:
        """Count one outcome."""
        if outcome.result == REFRESHED:
            self.refreshed.append(outcome.name)
        elif outcome.result == OBTAINED:
            self.obtained.append(outcome.name)
        elif outcome.result == FAILED:
            self.failed[outcome.name] = outcome.message or outcome.status or "failed"
        else:
            self.skipped.append(outcome.name)

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"refreshed {len(self.refreshed)}, obtained {len(self.obtained)}, failed {len(self.failed)},"
            f" skipped {len(self.skipped)}, waiting for authorization {len(self.waiting_for_authorization)},"
            f" broken {len(self.broken)}"
        )

    def as_dict(self) -> dict[str, object]:
        """JSON form (``--output json``); names and status messages only, never tokens."""
        return {
            "ok": self.ok,
            "refreshed": sorted(self.refreshed),
            "obtained": sorted(self.obtained),
            "failed": dict(sorted(self.failed.items())),
            "skipped": sorted(self.skipped),
            "waiting_for_authorization": sorted(self.waiting_for_authorization),
            "broken": dict(sorted(self.broken.items())),
        }


# -- pure policy ----------------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    """A timestamp as ISO 8601 UTC (seconds)."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def backoff_delay(
    attempts: int,
    *,
    retry_after: float | None,
    rng: random.Random,
    base: float = KeeperPolicy.backoff_base,
    cap: float = KeeperPolicy.backoff_cap,
) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure (0-based): full jitter.

    ``uniform(0, min(cap, base * 2**attempts))``, but never sooner than the provider's
    ``Retry-After`` and never less than one second (no hot loop).
    """
    ceiling = min(cap, base * (2 ** min(max(attempts, 0), 30)))
    delay = max(1.0, rng.uniform(0.0, ceiling))
    if retry_after is not None and retry_after > 0:
        delay = max(delay, float(retry_after))
    return delay


def classify(error: LinkctlError, *, client_credentials: bool) -> tuple[str, str]:
    """``(grant status, error_class)`` for a failed token request ("errors classified" in docs/testing.md)."""
    if isinstance(error, TransientProviderError):  # ResponseLost included
        return grants.TRANSIENT_ERROR, "transient"
    if isinstance(error, GrantError):
        # Client credentials have no grant a human could renew: the registration is wrong.
        if client_credentials:
            return grants.CONFIGURATION_ERROR, "configuration_error"
        return grants.NEEDS_AUTHORIZATION, "needs_authorization"
    if isinstance(error, ProviderConfigError | StateError):
        return grants.CONFIGURATION_ERROR, "configuration_error"
    if isinstance(error, ProviderError):  # an unclassified provider answer: try again later
        return grants.TRANSIENT_ERROR, "transient"
    return grants.CONFIGURATION_ERROR, "configuration_error"


def failure_message(error: LinkctlError, grant: Grant, *, name: str, now: float) -> str:
    """The status message of a failed attempt; explains an invalid_grant after a lost response."""
    text = error.message
    if error.hint:
        text = f"{text} (hint: {error.hint})"
    if isinstance(error, ResponseLost):
        return (
            f"no response to the token request sent at {iso(now)}: the provider may have consumed"
            f" the refresh token; will retry ({text})"
        )
    if isinstance(error, GrantError) and grant.lost_response:
        sent = grant.details.get("lost_response_sent_at") or grant.in_flight_since
        return (
            f"the refresh token was probably consumed by a lost response (sent at {iso(sent)});"
            f" the provider now rejects it: {error.message}."
            f" Run `linkctl authorize {name}` to authorize the link again"
        )
    if isinstance(error, GrantError):
        return f"{text}; run `linkctl authorize {name}` to authorize the link again"
    return text


def access_valid_for(grant: Grant, now: float) -> float | None:
    """Seconds the stored access token stays valid (inf when it has no expiry; None without one)."""
    if grant.access_token is None and not grant.access_expires_at:
        return None
    if grant.access_expires_at is None:
        return float("inf")
    return grant.access_expires_at - now


def access_lifetime(grant: Grant) -> float | None:
    """The lifetime (``expires_in``) the stored access token was issued with (None: not recorded)."""
    stated = grant.details.get("expires_in")
    return float(stated) if isinstance(stated, int | float) and stated > 0 else None


def is_due(grant: Grant, *, client_credentials: bool, now: float) -> bool:
    """Whether a leased grant still needs work (another process may have refreshed it)."""
    if grant.in_flight_since is not None or (grant.lost_response and grant.status == grants.TRANSIENT_ERROR):
        return grant.retry_at is None or grant.retry_at <= now
    if client_credentials and not grant.has_refresh_token and grant.access_token is None:
        return grant.retry_at is None or grant.retry_at <= now
    if grant.status in grants.PARKED_STATUSES:
        return False
    due = grant.retry_at if grant.retry_at is not None else grant.next_refresh_at
    return due is not None and due <= now


def process_actor() -> str:
    """Who an audit event of this process names: ``$LINKCTL_ACTOR``, else ``user@host``."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("LINKCTL_ACTOR") or f"{user}@{socket.gethostname()}"


def record_status_change(
    store: Store, name: str, old: str, new: str, error: LinkctlError | None, *, now: float
) -> None:
    """Audit a failed refresh that moved a link to another status (never a token or a raw body)."""
    if old == new:
        return
    from reconciler.store.base import Event

    detail: dict[str, object] = {"old_status": old, "new_status": new}
    if error is not None:
        detail["error"] = type(error).__name__
        if isinstance(error, ProviderError):
            detail["error_class"] = error.error_class
            if error.oauth_error:
                detail["oauth_error"] = error.oauth_error
            if error.status_code is not None:
                detail["http_status"] = error.status_code
    try:
        store.add_event(Event("grant.status_changed", name, process_actor(), detail, at=now))
    except LinkctlError as failure:  # the refresh outcome is stored; the audit line must not undo it
        log.warning("%s: cannot record the status change: %s", name, failure.message)


def new_owner(role: str) -> str:
    """A lease owner id: host, pid and a random part (unique per worker and call)."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_dead(owner: str | None) -> bool:
    """True when a lease owner (see :func:`new_owner`) ran on this host and its process is gone."""
    parts = (owner or "").split(":")
    if len(parts) < 4 or parts[1] != socket.gethostname():
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


# -- one link ------------------------------------------------------------------------------
def client_config(store: Store, link: StoredLink) -> ClientConfig:
    """The token-request configuration of a stored link (secrets decrypted from the store)."""
    from reconciler.oauth.client import ClientConfig

    ref = link.spec.get("clientSecret")
    secret = None
    if isinstance(ref, dict) and "$secret" in ref:
        secret = store.read_secret(link.name, str(ref["$secret"]))
    return ClientConfig.from_spec(
        link.name, link.spec, secret, lambda field: store.read_secret(link.name, field)
    )


def _inactivity_days(provider: str) -> float | None:
    from reconciler.oauth.providers import find_preset

    preset = find_preset(provider)
    days = preset.refresh_token_inactivity_days if preset else None
    return float(days) if days else None


def _is_cc(link: StoredLink) -> bool:
    return link.spec.get("grant") == "client_credentials"


def _prepare(store: Store, link: StoredLink, grant: Grant, *, cc: bool) -> ClientConfig | LinkctlError:
    """The request configuration of a leased grant, or why no request can be sent."""
    try:
        config = client_config(store, link)
    except LinkctlError as error:
        return error
    if not cc and grant.refresh_token is None:
        if grant.access_token is None:
            return GrantError("the link has not been authorized yet")
        return GrantError(
            "the access token expired and the provider issued no refresh token",
            hint="authorize again; see `linkctl doctor` for why no refresh token was issued",
        )
    return config


def _send(
    client: TokenClientLike, config: ClientConfig, grant: Grant, *, cc: bool
) -> TokenResponse | tuple[LinkctlError, bool]:
    """Send the token request: the response, or ``(classified error, response lost?)``."""
    try:
        if cc:
            return client.client_credentials(config)
        assert grant.refresh_token is not None
        return client.refresh(config, grant.refresh_token)
    except ResponseLost as error:
        return error, True
    except LinkctlError as error:
        return error, False
    except Exception as error:  # a bug must not leave the link in flight forever
        log.exception("%s: unexpected error during refresh", grant.link_name)
        return TransientProviderError(f"internal error: {type(error).__name__}"), False


def _failure_record(
    error: LinkctlError,
    grant: Grant,
    *,
    cc: bool,
    sent_at: float | None,
    now: float,
    lost: bool,
    policy: KeeperPolicy,
    rng: random.Random,
) -> grants.FailureRecord:
    """What a failed attempt stores: classified status, backoff, and the status message."""
    status, error_class = classify(error, client_credentials=cc)
    retry_at = None
    if status == grants.TRANSIENT_ERROR:
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        retry_at = now + backoff_delay(
            grant.attempts,
            retry_after=retry_after,
            rng=rng,
            base=policy.backoff_base,
            cap=policy.backoff_cap,
        )
    message = failure_message(error, grant, name=grant.link_name, now=sent_at if sent_at is not None else now)
    return grants.FailureRecord(
        grant.link_name, grant.token_version, status, error_class, message, retry_at, lost
    )


def _token_commit(
    grant: Grant, link: StoredLink, response: TokenResponse, *, cc: bool, now: float, rng: random.Random
) -> grants.TokenCommit:
    """The fenced write of a successful response (received at ``now`` by the keeper's clock)."""
    # The keeper's clock is the one every stored time is measured against.
    response = dataclasses.replace(response, received_at=now)
    next_at = grants.next_refresh_time(
        now,
        response.expires_in,
        has_refresh_token=response.refresh_token is not None or grant.refresh_token is not None,
        client_credentials=cc,
        inactivity_days=_inactivity_days(link.provider),
        rng=rng,
    )
    return grants.TokenCommit(grant.link_name, grant.token_version, response, next_at)


def refresh_leased(
    store: Store,
    client: TokenClientLike,
    grant: Grant,
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Clock,
    rng: random.Random,
) -> tuple[Outcome, Grant | None, LinkctlError | None]:
    """Refresh (or obtain) the tokens of a grant whose lease ``owner`` holds; always ends the lease.

    Returns the outcome, the grant as stored afterwards (without tokens), and the
    classified error of a failure. The order is the invariant: mark in flight (durable),
    send, then commit the answer (rotated refresh token included) before anything else.
    """
    name = grant.link_name
    link = store.get_link(name)
    if link is None:  # deleted meanwhile; the grant row went with it
        return Outcome(name, SKIPPED, message="link deleted"), None, None
    cc = _is_cc(link)
    version = grant.token_version
    sent_at: float | None = None

    def fail(error: LinkctlError, *, lost: bool = False) -> tuple[Outcome, Grant | None, LinkctlError]:
        now = clock()
        record = _failure_record(
            error, grant, cc=cc, sent_at=sent_at, now=now, lost=lost, policy=policy, rng=rng
        )
        try:
            stored = store.record_failure(
                name,
                owner=owner,
                expected_version=version,
                status=record.status,
                error_class=record.error_class,
                message=record.message,
                retry_at=record.retry_at,
                lost_response=lost,
                now=now,
            )
        except LeaseLost as fenced:
            log.warning("%s: %s", name, fenced.message)
            return Outcome(name, SKIPPED, message=fenced.message), None, error
        log.warning("%s: %s: %s", name, record.status, record.message)
        record_status_change(store, name, grant.status, record.status, error, now=now)
        return Outcome(name, FAILED, status=record.status, message=record.message), stored, error

    config = _prepare(store, link, grant, cc=cc)
    if isinstance(config, LinkctlError):
        return fail(config)
    sent_at = clock()
    try:
        store.mark_in_flight(name, owner=owner, token_version=version, now=sent_at, ttl=policy.lease_ttl)
    except LeaseLost as fenced:
        return Outcome(name, SKIPPED, message=fenced.message), None, None
    result = _send(client, config, grant, cc=cc)
    if isinstance(result, tuple):
        error, lost = result
        return fail(error, lost=lost)
    now = clock()
    commit = _token_commit(grant, link, result, cc=cc, now=now, rng=rng)
    try:
        stored = store.commit_tokens(
            name,
            owner=owner,
            expected_version=version,
            response=commit.response,
            now=now,
            next_refresh_at=commit.next_refresh_at,
        )
    except LeaseLost as fenced:
        # Someone else wrote newer tokens: ours must not overwrite them (fencing).
        log.error("%s: %s", name, fenced.message)
        return Outcome(name, SKIPPED, message=fenced.message), None, fenced
    result_kind = OBTAINED if cc and grant.access_token is None else REFRESHED
    log.info("%s: %s (token version %d)", name, result_kind, stored.token_version)
    return Outcome(name, result_kind, status=stored.status), stored, None


def send_deadline(policy: KeeperPolicy, lease_expires_at: float) -> float:
    """The last moment a request may be sent under a lease ending at ``lease_expires_at``.

    Sending later could leave the answer without time to commit before the lease
    expires: the request itself may take ``http_timeout``, and half of the remaining
    margin (``lease_ttl - http_timeout``) is kept for the commit.
    """
    return lease_expires_at - policy.http_timeout - (policy.lease_ttl - policy.http_timeout) / 2


@dataclasses.dataclass
class _Job:
    grant: Grant
    link: StoredLink
    cc: bool
    config: ClientConfig | None = None
    sent_at: float | None = None


def refresh_batch(
    store: Store,
    client: TokenClientLike,
    names: Iterable[str],
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Clock,
    rng: random.Random,
) -> list[Outcome]:
    """:func:`refresh_link` for many links with three store transactions instead of three per link.

    1. ``acquire_leases`` (one transaction), then re-check which links are still due;
    2. ``mark_in_flight_many`` (one durable transaction) for those that will be sent;
    3. send the requests one after another (a kept-alive connection makes this cheap);
    4. ``commit_tokens_many`` / ``record_failures_many`` (one durable transaction each).

    Invariant 4 per link: no token is handed out and no lease released before step 4
    has committed (responses wait in memory; outcomes are only produced after the
    commit). Invariant 3: every lease was renewed at step 2 to ``lease_ttl``, and a request
    is sent only before :func:`send_deadline`, so its answer (at most ``http_timeout``
    later) still leaves half the lease margin for the commit. Links whose deadline
    passed are not sent: each is recorded as a transient failure without the
    lost-response flag (nothing was sent) and is due again at once.
    Returns one outcome per distinct name, in input order.
    """
    order = list(dict.fromkeys(names))
    outcomes: dict[str, Outcome] = {}
    leased = store.acquire_leases(order, owner=owner, ttl=policy.lease_ttl, now=clock())
    jobs: list[_Job] = []
    failures: list[tuple[grants.FailureRecord, _Job, LinkctlError | None]] = []
    for grant in leased:
        link = store.get_link(grant.link_name)
        if link is None:  # pragma: no cover - deleted between two statements; the grant went with it
            outcomes[grant.link_name] = Outcome(grant.link_name, SKIPPED, message="link deleted")
            continue
        job = _Job(grant, link, _is_cc(link))
        if not is_due(grant, client_credentials=job.cc, now=clock()):
            store.release_lease(grant.link_name, owner=owner)
            outcomes[grant.link_name] = Outcome(grant.link_name, SKIPPED, message="no longer due")
            continue
        config = _prepare(store, link, grant, cc=job.cc)
        if isinstance(config, LinkctlError):
            record = _failure_record(
                config, grant, cc=job.cc, sent_at=None, now=clock(), lost=False, policy=policy, rng=rng
            )
            failures.append((record, job, config))
            continue
        job.config = config
        jobs.append(job)
    sent_at = clock()
    marks = store.mark_in_flight_many(
        [(j.grant.link_name, j.grant.token_version) for j in jobs],
        owner=owner,
        now=sent_at,
        ttl=policy.lease_ttl,
    )
    marked = []
    for job, fenced in zip(jobs, marks, strict=True):
        if fenced is None:
            marked.append(job)
        else:
            outcomes[job.grant.link_name] = Outcome(job.grant.link_name, SKIPPED, message=fenced.message)
    deadline = send_deadline(policy, sent_at + policy.lease_ttl)
    commits: list[tuple[grants.TokenCommit, _Job]] = []
    for index, job in enumerate(marked):
        if clock() > deadline:
            # Out of lease time: the rest is not sent, so their refresh tokens are certainly
            # not consumed. Answers already received still have the commit margin.
            now = clock()
            for rest in marked[index:]:
                note = grants.FailureRecord(
                    rest.grant.link_name,
                    rest.grant.token_version,
                    grants.TRANSIENT_ERROR,
                    "transient",
                    "not sent: the keeper ran out of lease time before sending the request"
                    " (overloaded, or a slow provider); will retry",
                    now,
                    False,
                )
                failures.append((note, rest, None))
            break
        assert job.config is not None
        job.sent_at = clock()
        result = _send(client, job.config, job.grant, cc=job.cc)
        now = clock()
        if isinstance(result, tuple):
            error, lost = result
            record = _failure_record(
                error, job.grant, cc=job.cc, sent_at=job.sent_at, now=now, lost=lost, policy=policy, rng=rng
            )
            failures.append((record, job, error))
        else:
            commits.append((_token_commit(job.grant, job.link, result, cc=job.cc, now=now, rng=rng), job))
    _finish_batch(store, commits, failures, outcomes, owner=owner, clock=clock)
    return [
        outcomes.get(name) or Outcome(name, SKIPPED, message="lease held by another process")
        for name in order
    ]


def _finish_batch(
    store: Store,
    commits: list[tuple[grants.TokenCommit, _Job]],
    failures: list[tuple[grants.FailureRecord, _Job, LinkctlError | None]],
    outcomes: dict[str, Outcome],
    *,
    owner: str,
    clock: Clock,
) -> None:
    """Commit a batch's answers and failures durably; only then produce their outcomes."""
    if commits:
        now = clock()
        try:
            fenced_commits = store.commit_tokens_many([c for c, _ in commits], owner=owner, now=now)
        except LinkctlError as error:  # e.g. the store stayed busy: nothing committed; leases expire
            log.warning("%d links: commit failed: %s", len(commits), error.message)
            for commit, _ in commits:
                outcomes[commit.name] = Outcome(commit.name, SKIPPED, message=error.message)
        else:
            for (commit, job), fenced in zip(commits, fenced_commits, strict=True):
                if fenced is not None:
                    log.error("%s: %s", commit.name, fenced.message)
                    outcomes[commit.name] = Outcome(commit.name, SKIPPED, message=fenced.message)
                    continue
                kind = OBTAINED if job.cc and job.grant.access_token is None else REFRESHED
                log.info("%s: %s (token version %d)", commit.name, kind, commit.expected_version + 1)
                outcomes[commit.name] = Outcome(commit.name, kind, status=grants.HEALTHY)
    if failures:
        now = clock()
        try:
            fenced_failures = store.record_failures_many([f for f, _, _ in failures], owner=owner, now=now)
        except LinkctlError as error:
            log.warning("%d links: recording failures failed: %s", len(failures), error.message)
            for record, _, _ in failures:
                outcomes[record.name] = Outcome(record.name, SKIPPED, message=error.message)
        else:
            for (record, job, cause), fenced in zip(failures, fenced_failures, strict=True):
                if fenced is not None:
                    log.warning("%s: %s", record.name, fenced.message)
                    outcomes[record.name] = Outcome(record.name, SKIPPED, message=fenced.message)
                elif cause is None:  # not sent (lease time ran out): not a provider failure
                    outcomes[record.name] = Outcome(record.name, SKIPPED, message=record.message)
                else:
                    log.warning("%s: %s: %s", record.name, record.status, record.message)
                    record_status_change(store, record.name, job.grant.status, record.status, cause, now=now)
                    outcomes[record.name] = Outcome(
                        record.name, FAILED, status=record.status, message=record.message
                    )


def refresh_link(
    store: Store,
    client: TokenClientLike,
    name: str,
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Clock,
    rng: random.Random,
    force: bool = False,
) -> Outcome:
    """Take the lease of one link and refresh it if it is (still) due; skipped if the lease is held."""
    grant = store.acquire_lease(name, owner=owner, ttl=policy.lease_ttl, now=clock())
    if grant is None:
        return Outcome(name, SKIPPED, message="lease held by another process")
    link = store.get_link(name)
    cc = link is not None and link.spec.get("grant") == "client_credentials"
    if not force and not is_due(grant, client_credentials=cc, now=clock()):
        store.release_lease(name, owner=owner)
        return Outcome(name, SKIPPED, message="no longer due")
    outcome, _, _ = refresh_leased(store, client, grant, owner=owner, policy=policy, clock=clock, rng=rng)
    return outcome


# -- the daemon -----------------------------------------------------------------------------
class Keeper:
    """Refreshes whatever is due, with a small pool of worker threads (one store each)."""

    def __init__(
        self,
        store: Store,
        client: TokenClientLike,
        *,
        store_factory: Callable[[], Store] | None = None,
        workers: int = 1,
        policy: KeeperPolicy | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``store`` is used by the calling thread; ``store_factory`` opens one per worker thread."""
        if workers > 1 and store_factory is None:
            raise ValueError("more than one worker needs a store_factory (SQLite connections are per thread)")
        self.store = store
        self.client = client
        self.store_factory = store_factory
        self.workers = max(1, workers)
        self.policy = policy or KeeperPolicy()
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._lock = threading.Lock()

    def _process(self, store: Store, names: list[str], owner: str) -> list[Outcome]:
        """Refresh a chunk of links (:func:`refresh_batch`); one outcome per distinct name."""
        try:
            return refresh_batch(
                store, self.client, names, owner=owner, policy=self.policy, clock=self.clock, rng=self.rng
            )
        except LinkctlError as error:  # e.g. the store was busy: the leases (if any) simply expire
            log.warning("%d links: %s", len(names), error.message)
            return [Outcome(name, SKIPPED, message=error.message) for name in dict.fromkeys(names)]

    def _finish(self, report: KeeperReport) -> KeeperReport:
        """Add the links that wait for a human (not attempted by the keeper)."""
        attempted = set(report.failed) | set(report.refreshed) | set(report.obtained)
        for grant in self.store.list_grants():
            if grant.link_name in attempted:
                continue
            if grant.status in (grants.NEEDS_AUTHORIZATION, grants.PENDING_CREDENTIALS):
                if grant.obtained_at is None:
                    report.waiting_for_authorization.append(grant.link_name)
                else:
                    report.broken[grant.link_name] = grant.last_error or grant.status
            elif grant.status == grants.CONFIGURATION_ERROR:
                report.broken[grant.link_name] = grant.last_error or grant.status
        return report

    def run_once(self, *, max_rounds: int = 1000) -> KeeperReport:
        """Obtain client-credentials tokens and refresh everything due now, then return."""
        report = KeeperReport()
        seen: set[str] = set()
        with _Pool(self) as pool:
            for _ in range(max_rounds):
                names = [
                    n for n in self.store.due_links(self.clock(), limit=self.policy.batch) if n not in seen
                ]
                if not names:
                    break
                seen.update(names)
                for outcome in pool.map(names):
                    report.add(outcome)
        return self._finish(report)

    def run_forever(self, stop: threading.Event) -> KeeperReport:
        """Refresh until ``stop`` is set; then take no new work and let in-flight refreshes finish.

        A refresh abandoned by a kill is safe: its lease expires and the next holder
        treats its request as a lost response.
        """
        report = KeeperReport()
        with _Pool(self) as pool:
            while not stop.is_set():
                for outcome in pool.drain():
                    report.add(outcome)
                busy = pool.busy()
                names = [
                    n for n in self.store.due_links(self.clock(), limit=self.policy.batch) if n not in busy
                ]
                pool.submit(names)
                next_due = self.store.next_due_at()
                wait = self.policy.poll_interval
                if next_due is not None:
                    wait = min(wait, max(next_due - self.clock(), 0.0))
                if pool.pending():
                    wait = min(wait, 0.05)
                stop.wait(max(wait, 0.02))
            pool.cancel_pending()
        for outcome in pool.drain():
            report.add(outcome)
        return self._finish(report)


class _Pool:
    """Worker threads, each with its own store and lease owner id; names in, outcomes out.

    Names are handed to workers in chunks of at most ``policy.chunk`` (spread over the
    workers), each refreshed by :func:`refresh_batch` with a few store transactions.
    """

    def __init__(self, keeper: Keeper) -> None:
        self._keeper = keeper
        self._inbox: queue.Queue[list[str] | None] = queue.Queue()
        self._outbox: queue.Queue[Outcome] = queue.Queue()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._inline = keeper.workers == 1 and keeper.store_factory is None

    def __enter__(self) -> _Pool:
        if not self._inline:
            for index in range(self._keeper.workers):
                thread = threading.Thread(target=self._work, name=f"keeper-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        assert self._keeper.store_factory is not None
        store = self._keeper.store_factory()
        owner = new_owner("keeper")
        try:
            while True:
                names = self._inbox.get()
                if names is None:
                    return
                try:
                    outcomes = self._keeper._process(store, names, owner)
                finally:
                    with self._lock:
                        self._busy.difference_update(names)
                for outcome in outcomes:
                    self._outbox.put(outcome)
        finally:
            store.close()

    def _chunks(self, names: list[str]) -> list[list[str]]:
        workers = 1 if self._inline else self._keeper.workers
        size = max(1, min(self._keeper.policy.chunk, -(-len(names) // workers)))
        return [names[i : i + size] for i in range(0, len(names), size)]

    def submit(self, names: Iterable[str]) -> None:
        """Queue names (or process them inline with one worker and no factory)."""
        fresh: list[str] = []
        with self._lock:
            for name in dict.fromkeys(names):
                if name not in self._busy:
                    self._busy.add(name)
                    fresh.append(name)
        for chunk in self._chunks(fresh):
            if self._inline:
                try:
                    for outcome in self._keeper._process(self._keeper.store, chunk, new_owner("keeper")):
                        self._outbox.put(outcome)
                finally:
                    with self._lock:
                        self._busy.difference_update(chunk)
                continue
            self._inbox.put(chunk)

    def map(self, names: list[str]) -> list[Outcome]:
        """Process names and wait for all their outcomes."""
        self.submit(names)
        expected = len(set(names))
        outcomes: list[Outcome] = []
        while len(outcomes) < expected:
            outcomes.append(self._outbox.get())
        return outcomes

    def drain(self) -> list[Outcome]:
        """Outcomes finished so far."""
        out = []
        while True:
            try:
                out.append(self._outbox.get_nowait())
            except queue.Empty:
                return out

    def busy(self) -> set[str]:
        """Names queued or being processed."""
        with self._lock:
            return set(self._busy)

    def pending(self) -> bool:
        """Whether queued names wait for a worker."""
        return not self._inbox.empty()

    def cancel_pending(self) -> None:
        """Drop queued names that no worker started (stop taking new work)."""
        while True:
            try:
                names = self._inbox.get_nowait()
            except queue.Empty:
                return
            if names is not None:
                with self._lock:
                    self._busy.difference_update(names)


# -- linkctl token --------------------------------------------------------------------------
def _raise_for_status(grant: Grant, name: str) -> None:
    """Refuse to refresh a parked grant: say what a human must do."""
    message = grant.last_error
    if grant.status == grants.CONFIGURATION_ERROR:
        raise ProviderConfigError(
            f"link {name!r} has a configuration error: {message or 'see linkctl show'}",
            hint="fix the client registration or spec, apply, then run `linkctl keeper --once`",
        )
    if grant.status == grants.PENDING_CREDENTIALS:
        raise GrantError(
            f"link {name!r} has no client credentials yet",
            hint="declare clientId/clientSecret and apply",
        )
    raise NeedsAuthorization(
        f"link {name!r} needs authorization: {message or 'it has not been authorized yet'}",
        hint=f"run `linkctl authorize {name}`",
    )


def _lifetime_too_short(name: str, lifetime: float, min_valid: float) -> TokenLifetimeTooShort:
    """The refusal when no refresh can give ``min_valid`` seconds: say how long tokens live."""
    return TokenLifetimeTooShort(
        f"link {name!r}: the provider's access tokens live {lifetime:.0f} s, shorter than"
        f" --min-valid {min_valid:g}",
        lifetime=lifetime,
        min_valid=min_valid,
        hint=f"ask for at most --min-valid {max(int(lifetime) - 1, 0)}, or configure longer-lived"
        " tokens at the provider",
    )


def _token_error(error: ProviderError, message: str) -> ProviderError:
    """A failed refresh as ``linkctl token`` reports it: the class carries the exit code scripts read."""
    if isinstance(error, GrantError):
        kind: type[ProviderError] = NeedsAuthorization
    elif isinstance(error, TransientProviderError):
        kind = ProviderUnavailable
    else:
        kind = type(error)
    return kind(message, hint=error.hint, oauth_error=error.oauth_error, retry_after=error.retry_after)


def _resolve(client: TokenClientLike | Callable[[], TokenClientLike]) -> TokenClientLike:
    """A client, or the client a factory builds (so httpx is imported only when needed)."""
    if hasattr(client, "refresh"):
        return client  # type: ignore[return-value]
    assert callable(client)
    return client()


def fresh_token(
    store: Store,
    name: str,
    *,
    min_valid: float,
    client: TokenClientLike | Callable[[], TokenClientLike],
    clock: Clock = time.time,
    sleep: Sleep = time.sleep,
    policy: KeeperPolicy | None = None,
    wait_timeout: float = 60.0,
    rng: random.Random | None = None,
) -> Grant:
    """An access token valid for at least ``min_valid`` s (refreshing through the lease if needed).

    If another process holds the lease, poll until it has committed and return its
    token. Never refreshes in a loop: when the stored token's recorded lifetime, or that
    of a token refreshed during this call, is shorter than ``min_valid``, no refresh can
    help and :class:`TokenLifetimeTooShort` says how long the provider's tokens live.
    ``client`` may be a factory, so the HTTP client is only built when a request is
    really needed.
    """
    policy = policy or KeeperPolicy()
    rng = rng or random.Random()
    start = clock()
    grant = store.get_grant(name, with_tokens=True)
    if grant is None:
        raise UnknownLink(f"no link named {name!r} in the store", hint="run `linkctl list` to see links")

    def usable(g: Grant, now: float) -> bool:
        left = access_valid_for(g, now)
        if left is None or left <= 0:
            return False
        if left < min_valid and g.token_version != grant.token_version:
            # Refreshed meanwhile (by us or another process): as fresh as it gets when its
            # lifetime covers min_valid (the request's latency ate the rest); else say so.
            lifetime = access_lifetime(g)
            if lifetime is not None and lifetime >= min_valid:
                return True
            raise _lifetime_too_short(name, lifetime if lifetime is not None else left, min_valid)
        return left >= min_valid

    if usable(grant, start):
        return grant
    link = store.get_link(name)
    cc = link is not None and link.spec.get("grant") == "client_credentials"
    if grant.status in grants.PARKED_STATUSES and not (cc and grant.access_token is None):
        _raise_for_status(grant, name)
    recorded = access_lifetime(grant) if grant.access_token is not None else None
    if recorded is not None and recorded < min_valid:
        raise _lifetime_too_short(name, recorded, min_valid)  # a refresh would only repeat it
    owner = new_owner("token")
    delay = 0.02
    deadline = start + wait_timeout
    for _ in range(100_000):  # bounded; the deadline ends it long before
        now = clock()
        leased = store.acquire_lease(name, owner=owner, ttl=policy.lease_ttl, now=now)
        if leased is not None:
            try:
                fresh_enough = usable(leased, now)
            except TokenLifetimeTooShort:
                store.release_lease(name, owner=owner)
                raise
            if fresh_enough:
                store.release_lease(name, owner=owner)
                return leased
            if leased.status in grants.PARKED_STATUSES and not (cc and leased.access_token is None):
                store.release_lease(name, owner=owner)
                _raise_for_status(leased, name)
            outcome, _, error = refresh_leased(
                store, _resolve(client), leased, owner=owner, policy=policy, clock=clock, rng=rng
            )
            if outcome.result in (REFRESHED, OBTAINED):
                fresh = store.get_grant(name, with_tokens=True)
                assert fresh is not None
                usable(fresh, clock())  # raises when even the new token is too short
                return fresh
            if outcome.result == SKIPPED and isinstance(error, grants.LeaseLost):
                # Fenced out: another holder wrote newer tokens meanwhile; read them below.
                error = None
            if isinstance(error, LinkctlError):
                if isinstance(error, ProviderError):
                    raise _token_error(error, f"cannot refresh link {name!r}: {outcome.message or error}")
                raise error
            if error is not None or outcome.result != SKIPPED:
                raise ConflictError(f"cannot refresh link {name!r}: {outcome.message}")
        current = store.get_grant(name, with_tokens=True)
        if current is None:
            raise UnknownLink(f"link {name!r} was deleted meanwhile")
        if usable(current, now):
            return current
        if current.status in grants.PARKED_STATUSES and current.token_version != grant.token_version:
            _raise_for_status(current, name)
        if now >= deadline:
            raise ConflictError(
                f"link {name!r}: another process has held the refresh lease for more than"
                f" {wait_timeout:g} s (owner {current.lease_owner}, until {iso(current.lease_expires_at)})",
                hint="try again; a crashed holder's lease expires by itself",
            )
        sleep(delay)
        delay = min(delay * 2, 0.25)
    raise ConflictError(f"link {name!r}: gave up waiting for the refresh lease")  # pragma: no cover


# -- prune ----------------------------------------------------------------------------------
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
    clock: Clock = time.time,
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
    clock: Clock = time.time,
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
                status=grants.NEEDS_AUTHORIZATION,
                error_class="revoked",
                message="tokens were revoked at the provider",
                retry_at=None,
                lost_response=False,
                now=clock(),
            )
    else:
        pending.abandon(store)
    return result
