"""Every timing rule of the keeper: due or not, next refresh, backoff, send deadline and pace, keep-alive.

The refresh schedule itself (:func:`next_refresh_time`, :func:`keepalive_interval`, the
due rule :func:`due_at` and their constants) is defined in :mod:`reconciler.domain.schedule`,
because the store applies it too when it writes a grant (the store is below the keeper);
it is re-exported here so the keeper reads every rule from this one module. Time, sleep and
randomness are injected (``Now``, ``Sleep``, ``random.Random``) so tests control them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

from reconciler.domain.clock import Clock
from reconciler.domain.grants import Grant
from reconciler.domain.schedule import KEEPALIVE, due_at, keepalive_interval, next_refresh_time

__all__ = [
    "KEEPALIVE",
    "KeeperPolicy",
    "Now",
    "SendPace",
    "Sleep",
    "access_lifetime",
    "access_valid_for",
    "backoff_delay",
    "due_at",
    "inactivity_days",
    "is_due",
    "keepalive_interval",
    "next_refresh_time",
    "send_deadline",
]

Now = Clock  # the keeper's name for the one clock type
Sleep = Callable[[float], None]


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


def send_deadline(policy: KeeperPolicy, lease_expires_at: float) -> float:
    """The last moment a request may be sent under a lease ending at ``lease_expires_at``.

    Sending later could leave the answer without time to commit before the lease
    expires: the request itself may take ``http_timeout``, and half of the remaining
    margin (``lease_ttl - http_timeout``) is kept for the commit.
    """
    return lease_expires_at - policy.http_timeout - (policy.lease_ttl - policy.http_timeout) / 2


class SendPace:
    """How long one token request takes, so that a chunk holds no more links than can be sent.

    A chunk's requests go one after another between the mark and :func:`send_deadline`, a
    window of ``(lease_ttl - http_timeout) / 2``; a link still waiting at the deadline is
    recorded as not sent and waits for a later round (``keeper --once``: the next run). So
    the keeper leases as many links as the measured pace fits in :data:`HEADROOM` of that
    window. The pace follows a slower provider at once (a chunk that would not fit is worse
    than a small one) and a faster one gradually; before the first timed request a chunk
    holds at most :data:`FIRST_CHUNK` links. One pace serves all providers: chunks are made
    of names, before their links (and endpoints) are read.

    Shared by the worker threads of one keeper without a lock: two records at once may keep
    only one of them, which costs a sample, never a wrong chunk.
    """

    FIRST_CHUNK = 8
    HEADROOM = 0.8  # of the send window: requests vary, and a few slower ones must still fit
    SPEED_UP = 0.25  # how far one faster chunk moves the pace towards its own

    def __init__(self) -> None:
        """No request timed yet."""
        self._seconds: float | None = None  # per request

    def record(self, sent: int, seconds: float) -> None:
        """``sent`` requests of one chunk took ``seconds`` in all (the keeper's clock)."""
        if sent < 1 or not math.isfinite(seconds) or seconds < 0:  # nothing sent, a clock gone back
            return
        each, before = seconds / sent, self._seconds
        if before is None or each > before:
            self._seconds = each
        else:
            self._seconds = before + self.SPEED_UP * (each - before)

    def chunk(self, policy: KeeperPolicy) -> int:
        """Links to lease for the next chunk: ``policy.chunk`` at most, never fewer than one."""
        seconds = self._seconds
        if seconds is None:
            return min(policy.chunk, self.FIRST_CHUNK)
        fits = self.HEADROOM * send_deadline(policy, policy.lease_ttl)  # the window after a mark at 0
        if seconds * policy.chunk <= fits:  # a stopped clock (0 s) too
            return policy.chunk
        return max(1, int(fits / seconds))


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
    """Whether a leased grant (tokens read) still needs work: another process may have refreshed it."""
    at = due_at(
        status=grant.status,
        retry_at=grant.retry_at,
        next_refresh_at=grant.next_refresh_at,
        in_flight_since=grant.in_flight_since,
        has_access_token=grant.access_token is not None,
        client_credentials=client_credentials,
    )
    return at is not None and at <= now


def inactivity_days(provider: str) -> float | None:
    """The preset's refresh-token inactivity limit in days (the keep-alive interval follows it)."""
    from reconciler.oauth.providers import find_preset

    preset = find_preset(provider)
    days = preset.refresh_token_inactivity_days if preset else None
    return float(days) if days else None
