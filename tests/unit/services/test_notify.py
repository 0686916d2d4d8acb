"""The notifier's pure parts: retry timing, the environment's tuning, signing, the body."""

from __future__ import annotations

import hashlib
import hmac
import json
import random

import pytest

from reconciler.errors import ConfigError
from reconciler.secrets import Secret
from reconciler.services.notify import NotifyPolicy, render_body, sign, verify
from reconciler.store.notifications import LinkState, StatusChange


def test_retry_delay_doubles_to_the_cap_and_honours_retry_after() -> None:
    policy = NotifyPolicy(retry_base=10, retry_cap=60, jitter=0)
    rng = random.Random(1)
    assert [policy.retry_delay(n, None, rng) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert policy.retry_delay(1, 45, rng) == 45  # the receiver asked for longer
    assert policy.retry_delay(1, 10_000, rng) == 60  # but never past the cap
    jittered = NotifyPolicy(retry_base=10, jitter=0.2)
    assert all(8 <= jittered.retry_delay(1, None, rng) <= 12 for _ in range(50))


def test_policy_from_the_environment() -> None:
    policy = NotifyPolicy.from_env({"LINKCTL_NOTIFY_RETRY_BASE": "1.5", "LINKCTL_NOTIFY_MAX_ATTEMPTS": "3"})
    assert (policy.retry_base, policy.max_attempts, policy.interval) == (1.5, 3, 2.0)
    for var, value in (
        ("LINKCTL_NOTIFY_INTERVAL", "soon"),
        ("LINKCTL_NOTIFY_TIMEOUT", "-1"),
        ("LINKCTL_NOTIFY_MAX_ATTEMPTS", "2.5"),
        ("LINKCTL_NOTIFY_RETRY_CAP", "0"),
    ):
        with pytest.raises(ConfigError) as refused:
            NotifyPolicy.from_env({var: value})
        assert refused.value.file == var


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"k" * 20, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(Secret("k" * 20), 1700000000, body) == f"sha256={expected}"
    header = sign(Secret("k" * 20), 1700000000, body)
    assert verify("k" * 20, "1700000000", body, header, now=1700000100)
    assert not verify("k" * 20, "1700000000", body + b" ", header, now=1700000100)  # body altered
    assert not verify("k" * 20, "1700000000", body, header, now=1700000400)  # replayed later
    assert not verify("k" * 20, "17e8", body, header, now=1700000000)


def test_the_body_says_what_changed_and_what_to_do() -> None:
    state = LinkState("crm", "microsoft", "configuration_error", "AADSTS7000222: the client secret expired")
    body = json.loads(
        render_body(StatusChange("crm", "healthy", "configuration_error", 1.8e9, state), instance="w")
    )
    assert body["type"] == "link.status_changed" and body["instance"] == "w" and len(body["id"]) == 32
    assert (body["old_status"], body["new_status"], body["provider"]) == (
        "healthy",
        "configuration_error",
        "microsoft",
    )
    assert body["changed_at"] == "2027-01-15T08:00:00Z" and "AADSTS7000222" in body["reason"]
    assert body["fix"]  # the preset's fix for the AADSTS code
    healthy = json.loads(
        render_body(StatusChange("crm", "needs_authorization", "healthy", 1.8e9, state), instance=None)
    )
    assert healthy["reason"] is None and healthy["fix"] is None
