"""The lease protocol, written once: acquire → mark in flight → send → commit tokens → release.

Every path that refreshes or obtains tokens runs :func:`run_leased` on grants whose
leases it holds: the keeper's batches (:func:`reconciler.keeper.refresh.refresh_batch`),
one link (:func:`reconciler.keeper.refresh.refresh_leased`) and ``linkctl token``
(:func:`reconciler.keeper.fresh.fresh_token`). For a batch it costs three store
transactions in all, whatever the number of links:

1. ``mark_in_flight_many`` (one durable transaction) for the grants that will be sent;
2. the requests, one after another (a kept-alive connection makes this cheap);
3. ``commit_tokens_many`` / ``record_failures_many`` (one durable transaction each),
   which also end the leases.

Invariant 4 of docs/testing.md (the rotated refresh token is durable before anything
else): no token is handed out and no lease released before step 3 has committed;
answers wait in memory and outcomes exist only after the commit. Invariant 3: every
lease is renewed to ``lease_ttl`` at step 1 and a request is sent only before
:func:`~reconciler.keeper.timing.send_deadline`, so its answer still leaves half the
lease margin for the commit. A request whose answer never came is stored as a lost
response, so a later ``invalid_grant`` is explained.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconciler.domain.grants import FailureRecord, Grant, GrantStatus, TokenCommit
from reconciler.errors import GrantError, LinkctlError, ProviderError, ResponseLost, TransientProviderError
from reconciler.keeper.audit import record_status_change
from reconciler.keeper.classify import classify, failure_message
from reconciler.keeper.config import TokenClientLike, client_config, is_client_credentials
from reconciler.keeper.report import FAILED, OBTAINED, REFRESHED, SKIPPED, Outcome
from reconciler.keeper.timing import (
    KeeperPolicy,
    Now,
    SendPace,
    backoff_delay,
    inactivity_days,
    is_due,
    next_refresh_time,
    send_deadline,
)

if TYPE_CHECKING:
    from reconciler.domain.tokens import ClientConfig, TokenResponse
    from reconciler.store.base import Store, StoredLink

__all__ = ["Attempt", "run_leased"]

log = logging.getLogger("linkctl.keeper")

NOT_SENT = (
    "not sent: the keeper ran out of lease time before sending the request"
    " (overloaded, or a slow provider); will retry"
)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The outcome of one leased link, and the error behind it (a failure, or a fenced write)."""

    outcome: Outcome
    cause: LinkctlError | None = None


@dataclasses.dataclass
class _Job:
    grant: Grant
    link: StoredLink
    cc: bool
    config: ClientConfig | None = None
    sent_at: float | None = None


def run_leased(
    store: Store,
    client: TokenClientLike,
    leased: Sequence[Grant],
    *,
    owner: str,
    policy: KeeperPolicy,
    clock: Now,
    rng: random.Random,
    only_if_due: bool,
    pace: SendPace | None = None,
) -> dict[str, Attempt]:
    """Refresh (or obtain) the tokens of grants whose leases ``owner`` holds; every lease ends.

    ``only_if_due`` re-checks each grant first (another process may have refreshed it
    since it was listed) and gives back the lease of one that is no longer due.
    ``pace`` is told how long the requests took. Returns one attempt per grant, by link name.
    """
    attempts: dict[str, Attempt] = {}
    jobs: list[_Job] = []
    failures: list[tuple[FailureRecord, _Job, LinkctlError | None]] = []
    for grant in leased:
        name = grant.link_name
        link = store.get_link(name)
        if link is None:  # deleted meanwhile; the grant row went with it
            attempts[name] = Attempt(Outcome(name, SKIPPED, message="link deleted"))
            continue
        job = _Job(grant, link, is_client_credentials(link))
        if only_if_due and not is_due(grant, client_credentials=job.cc, now=clock()):
            store.release_lease(name, owner=owner)
            attempts[name] = Attempt(Outcome(name, SKIPPED, message="no longer due"))
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
            attempts[job.grant.link_name] = Attempt(
                Outcome(job.grant.link_name, SKIPPED, message=fenced.message)
            )
    commits, sent, spent = _send_all(
        client,
        marked,
        failures,
        deadline=send_deadline(policy, sent_at + policy.lease_ttl),
        policy=policy,
        clock=clock,
        rng=rng,
    )
    _finish(store, commits, failures, attempts, owner=owner, clock=clock)
    if pace is not None:  # after the commit: nothing may stand between the answers and it
        pace.record(sent, spent)
    return attempts


def _send_all(
    client: TokenClientLike,
    marked: list[_Job],
    failures: list[tuple[FailureRecord, _Job, LinkctlError | None]],
    *,
    deadline: float,
    policy: KeeperPolicy,
    clock: Now,
    rng: random.Random,
) -> tuple[list[tuple[TokenCommit, _Job]], int, float]:
    """Send the marked requests in order until the send deadline; answers stay in memory.

    Returns the answers to commit, and how many requests were sent in how many seconds.
    """
    commits: list[tuple[TokenCommit, _Job]] = []
    sent, spent = 0, 0.0
    for index, job in enumerate(marked):
        if clock() > deadline:
            # Out of lease time: the rest is not sent, so their refresh tokens are certainly
            # not consumed. Answers already received still have the commit margin.
            now = clock()
            for rest in marked[index:]:
                note = FailureRecord(
                    rest.grant.link_name,
                    rest.grant.token_version,
                    GrantStatus.TRANSIENT_ERROR,
                    TransientProviderError.error_class,
                    NOT_SENT,
                    now,
                    False,
                )
                failures.append((note, rest, None))
            break
        assert job.config is not None
        job.sent_at = clock()
        result = _send(client, job.config, job.grant, cc=job.cc)
        now = clock()
        # A request takes at most about the timeout: more (or less than 0) is the clock jumping.
        sent, spent = sent + 1, spent + max(0.0, min(now - job.sent_at, policy.http_timeout))
        if isinstance(result, tuple):
            error, lost = result
            record = _failure_record(
                error, job.grant, cc=job.cc, sent_at=job.sent_at, now=now, lost=lost, policy=policy, rng=rng
            )
            failures.append((record, job, error))
        else:
            commits.append((_token_commit(job.grant, job.link, result, cc=job.cc, now=now, rng=rng), job))
    return commits, sent, spent


def _finish(
    store: Store,
    commits: list[tuple[TokenCommit, _Job]],
    failures: list[tuple[FailureRecord, _Job, LinkctlError | None]],
    attempts: dict[str, Attempt],
    *,
    owner: str,
    clock: Now,
) -> None:
    """Commit the answers and failures durably (ending their leases); only then produce outcomes."""
    if commits:
        now = clock()
        try:
            fenced_commits = store.commit_tokens_many([c for c, _ in commits], owner=owner, now=now)
        except LinkctlError as error:  # e.g. the store stayed busy: nothing committed; leases expire
            log.warning("%d links: commit failed: %s", len(commits), error.message)
            for commit, _ in commits:
                attempts[commit.name] = Attempt(Outcome(commit.name, SKIPPED, message=error.message), error)
        else:
            for (commit, job), fenced in zip(commits, fenced_commits, strict=True):
                if fenced is not None:
                    # Someone else wrote newer tokens: ours must not overwrite them (fencing).
                    log.error("%s: %s", commit.name, fenced.message)
                    attempts[commit.name] = Attempt(
                        Outcome(commit.name, SKIPPED, message=fenced.message), fenced
                    )
                    continue
                kind = OBTAINED if job.cc and job.grant.access_token is None else REFRESHED
                log.info("%s: %s (token version %d)", commit.name, kind, commit.expected_version + 1)
                attempts[commit.name] = Attempt(Outcome(commit.name, kind, status=GrantStatus.HEALTHY))
    if failures:
        now = clock()
        try:
            fenced_failures = store.record_failures_many([f for f, _, _ in failures], owner=owner, now=now)
        except LinkctlError as error:
            log.warning("%d links: recording failures failed: %s", len(failures), error.message)
            for record, _, _ in failures:
                attempts[record.name] = Attempt(Outcome(record.name, SKIPPED, message=error.message), error)
        else:
            for (record, job, cause), fenced in zip(failures, fenced_failures, strict=True):
                if fenced is not None:
                    log.warning("%s: %s", record.name, fenced.message)
                    attempts[record.name] = Attempt(
                        Outcome(record.name, SKIPPED, message=fenced.message), cause
                    )
                elif cause is None:  # not sent (lease time ran out): not a provider failure
                    attempts[record.name] = Attempt(Outcome(record.name, SKIPPED, message=record.message))
                else:
                    log.warning("%s: %s: %s", record.name, record.status, record.message)
                    record_status_change(store, record.name, job.grant.status, record.status, cause, now=now)
                    outcome = Outcome(record.name, FAILED, status=record.status, message=record.message)
                    attempts[record.name] = Attempt(outcome, cause)


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
) -> FailureRecord:
    """What a failed attempt stores: classified status, backoff, and the status message."""
    status, error_class = classify(error, client_credentials=cc)
    retry_at = None
    if status == GrantStatus.TRANSIENT_ERROR:
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        retry_at = now + backoff_delay(
            grant.attempts,
            retry_after=retry_after,
            rng=rng,
            base=policy.backoff_base,
            cap=policy.backoff_cap,
        )
    message = failure_message(error, grant, name=grant.link_name, now=sent_at if sent_at is not None else now)
    return FailureRecord(grant.link_name, grant.token_version, status, error_class, message, retry_at, lost)


def _token_commit(
    grant: Grant, link: StoredLink, response: TokenResponse, *, cc: bool, now: float, rng: random.Random
) -> TokenCommit:
    """The fenced write of a successful response (received at ``now`` by the keeper's clock)."""
    # The keeper's clock is the one every stored time is measured against.
    response = dataclasses.replace(response, received_at=now)
    next_at = next_refresh_time(
        now,
        response.expires_in,
        has_refresh_token=response.refresh_token is not None or grant.refresh_token is not None,
        client_credentials=cc,
        inactivity_days=inactivity_days(link.provider),
        rng=rng,
    )
    return TokenCommit(grant.link_name, grant.token_version, response, next_at)
