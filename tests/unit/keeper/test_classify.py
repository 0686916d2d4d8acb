"""Failure classification into grant statuses, and the messages a human reads."""

from __future__ import annotations

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.errors import (
    GrantError,
    LinkctlError,
    ProviderConfigError,
    ProviderError,
    ResponseLost,
    StateError,
    TransientProviderError,
)
from reconciler.keeper.classify import classify, failure_message
from reconciler.store import grants


@pytest.mark.parametrize(
    ("error", "cc", "expected"),
    [
        (TransientProviderError("503"), False, GrantStatus.TRANSIENT_ERROR),
        (ResponseLost("timeout"), False, GrantStatus.TRANSIENT_ERROR),
        (GrantError("invalid_grant"), False, GrantStatus.NEEDS_AUTHORIZATION),
        (GrantError("invalid_grant"), True, GrantStatus.CONFIGURATION_ERROR),  # nothing to re-consent
        (ProviderConfigError("invalid_client"), False, GrantStatus.CONFIGURATION_ERROR),
        (StateError("secret does not decrypt"), False, GrantStatus.CONFIGURATION_ERROR),
        (ProviderError("odd answer"), False, GrantStatus.TRANSIENT_ERROR),
    ],
)
def test_classification(error: LinkctlError, cc: bool, expected: str) -> None:
    assert classify(error, client_credentials=cc)[0] == expected


def _grant(**kw: object) -> grants.Grant:
    return grants.Grant(link_name="l", link_uid="u", status="healthy", token_version=3, **kw)  # type: ignore[arg-type]


def test_invalid_grant_after_a_lost_response_names_the_cause() -> None:
    grant = _grant(lost_response=True, details={"lost_response_sent_at": 1_800_000_000.0})
    text = failure_message(GrantError("HTTP 400 invalid_grant"), grant, name="l", now=1_800_000_100.0)
    assert "probably consumed by a lost response (sent at 2027-01-15T08:00:00+00:00)" in text
    assert "linkctl authorize l" in text


def test_plain_invalid_grant_is_not_blamed_on_a_lost_response() -> None:
    text = failure_message(GrantError("HTTP 400 invalid_grant"), _grant(), name="l", now=0.0)
    assert "lost response" not in text and "linkctl authorize l" in text


def test_response_lost_message_says_the_token_may_be_consumed() -> None:
    text = failure_message(ResponseLost("ReadTimeout"), _grant(), name="l", now=1_800_000_000.0)
    assert "may have consumed the refresh token" in text and "2027-01-15T08:00:00" in text
