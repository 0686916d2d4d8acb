"""Numeric flags and settings: nan, inf, negatives and absurd values are refused, naming the source.

A flag is a usage error (exit 64, argparse names the flag); an environment variable is
invalid input (exit 3, the message names the variable). Nothing is run, nothing stored.
"""

from __future__ import annotations

import pytest

from tests.support.cli import Linkctl

# (id, arguments, environment, exit code, what the message names, why it is refused)
CASES: list[tuple[str, tuple[str, ...], dict[str, str], int, str, str]] = [
    (
        "lock-timeout-nan",
        ("apply", "--lock-timeout", "nan", "x"),
        {},
        64,
        "--lock-timeout",
        "finite",
    ),
    ("lock-timeout-negative", ("apply", "--lock-timeout", "-1", "x"), {}, 64, "--lock-timeout", ">= 0"),
    ("lock-timeout-inf", ("apply", "--lock-timeout", "inf", "x"), {}, 64, "--lock-timeout", "finite"),
    (
        "lock-timeout-over-a-day",
        ("apply", "--lock-timeout", "90000", "x"),
        {},
        64,
        "--lock-timeout",
        "at most 86400",
    ),
    (
        "env-lock-timeout-abc",
        ("state", "show"),
        {"LINKCTL_LOCK_TIMEOUT": "abc"},
        3,
        "LINKCTL_LOCK_TIMEOUT",
        "not a number",
    ),
    (
        "env-lock-timeout-nan",
        ("state", "show"),
        {"LINKCTL_LOCK_TIMEOUT": "nan"},
        3,
        "LINKCTL_LOCK_TIMEOUT",
        "finite",
    ),
    ("events-limit-1e30", ("state", "events", "--limit", "1e30"), {}, 64, "--limit", "at most 1000000"),
    ("events-limit-fraction", ("state", "events", "--limit", "2.5"), {}, 64, "--limit", "whole number"),
    ("keeper-poll-nan", ("keeper", "--poll-interval", "nan"), {}, 64, "--poll-interval", "finite"),
    ("keeper-http-timeout-huge", ("keeper", "--http-timeout", "1e9"), {}, 64, "--http-timeout", "at most"),
    ("keeper-lease-negative", ("keeper", "--lease-ttl", "-5"), {}, 64, "--lease-ttl", ">= 0"),
    ("keeper-workers-negative", ("keeper", "--workers", "-2"), {}, 64, "--workers", ">= 0"),
    ("keeper-workers-nan", ("keeper", "--workers", "nan"), {}, 64, "--workers", "finite"),
    ("keeper-workers-fraction", ("keeper", "--workers", "1.5"), {}, 64, "--workers", "whole number"),
    ("keeper-workers-float-spelling", ("keeper", "--workers", "1.0"), {}, 64, "--workers", "whole number"),
    ("keeper-workers-exponent", ("keeper", "--workers", "1e3"), {}, 64, "--workers", "whole number"),
    ("events-limit-exponent", ("state", "events", "--limit", "1e2"), {}, 64, "--limit", "whole number"),
    ("authorize-timeout-nan", ("authorize", "x", "--timeout", "nan"), {}, 64, "--timeout", "finite"),
    ("authorize-timeout-inf", ("authorize", "x", "--timeout", "inf"), {}, 64, "--timeout", "finite"),
    ("authorize-timeout-negative", ("authorize", "x", "--timeout", "-1"), {}, 64, "--timeout", ">= 0"),
    ("doctor-timeout-nan", ("doctor", "--timeout", "nan"), {}, 64, "--timeout", "finite"),
    ("doctor-timeout-inf", ("doctor", "--timeout", "inf"), {}, 64, "--timeout", "finite"),
    ("doctor-timeout-negative", ("doctor", "--timeout", "-1"), {}, 64, "--timeout", ">= 0"),
]


@pytest.mark.parametrize(
    ("args", "env", "code", "names", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_number_is_refused_naming_its_source(
    linkctl: Linkctl, args: tuple[str, ...], env: dict[str, str], code: int, names: str, reason: str
) -> None:
    result = linkctl(*args, env=env, expect=code, timeout=30)
    assert names in result.stderr and reason in result.stderr, str(result)


def test_good_numbers_still_work(linkctl: Linkctl) -> None:
    linkctl("state", "events", "--limit", "5", env={"LINKCTL_LOCK_TIMEOUT": "2.5"})
