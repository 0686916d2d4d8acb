"""Scheduling math: refresh ahead of expiry, keep-alive, full-jitter backoff."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from reconciler.keeper.timing import KEEPALIVE, backoff_delay, keepalive_interval, next_refresh_time


@given(lifetime=st.floats(min_value=1, max_value=10 * 365 * 86400), seed=st.integers(0, 2**32))
def test_refresh_between_75_and_85_percent_and_before_the_margin(lifetime: float, seed: int) -> None:
    at = next_refresh_time(1000.0, lifetime, has_refresh_token=True, rng=random.Random(seed))
    assert at is not None
    offset = at - 1000.0
    latest = lifetime - min(60.0, 0.1 * lifetime)
    assert offset <= latest + 1e-6
    assert offset <= KEEPALIVE
    assert offset >= min(0.75 * lifetime, latest, 0.9 * KEEPALIVE) - 1e-6


def test_short_tokens_get_a_proportional_margin_not_60_seconds() -> None:
    # Authlib's fixed 60 s leeway breaks tokens that live <= 60 s (authlib#716).
    for seed in range(50):
        at = next_refresh_time(0.0, 10.0, has_refresh_token=True, rng=random.Random(seed))
        assert at is not None and 7.5 <= at <= 9.0


def test_one_hour_token_refreshes_at_45_to_51_minutes() -> None:
    for seed in range(50):
        at = next_refresh_time(0.0, 3600.0, has_refresh_token=True, rng=random.Random(seed))
        assert at is not None and 2700.0 <= at <= 3060.0


def test_unknown_or_long_lifetime_still_refreshes_at_least_weekly() -> None:
    for expires_in in (None, 0, 90 * 86400.0, 10 * 365 * 86400.0):
        at = next_refresh_time(0.0, expires_in, has_refresh_token=True, rng=random.Random(1))
        assert at is not None and at <= KEEPALIVE


def test_keepalive_respects_preset_inactivity_limits() -> None:
    assert keepalive_interval(180) == KEEPALIVE  # Google: 6 months
    assert keepalive_interval(90) == KEEPALIVE  # Microsoft: 90 days
    assert keepalive_interval(14) == 14 * 86400 * 0.25  # a stricter custom limit wins
    assert keepalive_interval(None) == KEEPALIVE


def test_without_refresh_token() -> None:
    # A long-lived access token without refresh token: nothing to schedule ...
    assert next_refresh_time(0.0, None, has_refresh_token=False) is None
    # ... an expiring one becomes due at expiry so the keeper can flag it.
    assert next_refresh_time(0.0, 600.0, has_refresh_token=False) == 600.0
    # Client credentials re-fetch without any refresh token.
    at = next_refresh_time(0.0, 600.0, has_refresh_token=False, client_credentials=True, rng=random.Random(2))
    assert at is not None and 450 <= at <= 540
    at = next_refresh_time(0.0, None, has_refresh_token=False, client_credentials=True, rng=random.Random(2))
    assert at is not None and at <= 3600


@given(attempts=st.integers(0, 100), seed=st.integers(0, 2**32))
def test_backoff_full_jitter_bounds(attempts: int, seed: int) -> None:
    delay = backoff_delay(attempts, retry_after=None, rng=random.Random(seed), base=2.0, cap=900.0)
    assert delay >= 1.0  # a floor, so a retry never hammers the provider
    assert delay <= max(1.0, min(900.0, 2.0 * 2**attempts))


def test_backoff_grows_and_is_jittered() -> None:
    rng = random.Random(7)
    early = [backoff_delay(0, retry_after=None, rng=rng) for _ in range(200)]
    late = [backoff_delay(8, retry_after=None, rng=rng) for _ in range(200)]
    assert max(early) <= 2.0
    assert sum(late) / len(late) > 100  # uniform(0, 512) averages ~256
    assert len(set(late)) > 150  # jittered: no thundering herd


def test_backoff_honours_retry_after() -> None:
    rng = random.Random(3)
    for _ in range(100):
        assert backoff_delay(0, retry_after=120.0, rng=rng) >= 120.0
    # Retry-After beyond the cap is still honoured: the provider asked for it.
    assert backoff_delay(3, retry_after=3600.0, rng=rng, cap=900.0) >= 3600.0
