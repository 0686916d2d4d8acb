"""Usage errors exit 64, never 2 ("changes present"), on every command and subcommand."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.cli import INSTANCE, TRACEBACK, Linkctl, write

EXIT_USAGE = 64

TYPOS = [
    ("plan", ".", "--detaled-exitcode"),
    ("apply", ".", "--prnue"),
    ("reconcile", ".", "--lock-timeuot", "3"),
    ("validate", ".", "-o", "yaml"),
    ("list", "--outptu", "json"),
    ("show",),
    ("state", "events", "--limit", "many"),
    ("state", "bogus"),
    ("secrets", "encrypt", "--in-plaec", "x.yaml"),
    ("token",),
    ("token", "x", "--min-valid", "nan"),
    ("token", "x", "--min-valid", "inf"),
    ("token", "x", "--min-valid", "-5"),
    ("token", "x", "--wait", "nan"),
    ("keeper", "--workers", "two"),
    ("authorize",),
    ("doctor", "--timeuot", "1"),
    ("--sate", "x", "list"),
    ("frobnicate",),
]


@pytest.mark.parametrize("argv", TYPOS, ids=lambda argv: " ".join(argv))
def test_a_usage_error_exits_64_on_stderr_without_traceback(linkctl: Linkctl, argv: tuple[str, ...]) -> None:
    result = linkctl(*argv, expect=EXIT_USAGE)
    assert result.stdout == ""
    assert "error:" in result.stderr and "usage:" in result.stderr
    assert TRACEBACK not in result.stderr
    assert not linkctl.state_db.exists()  # nothing ran


def test_apply_without_paths_or_plan_is_a_usage_error(linkctl: Linkctl) -> None:
    result = linkctl("apply", expect=EXIT_USAGE)
    assert "give either PATHS or --plan FILE" in result.stderr


def test_the_readme_ci_line_fails_on_a_typo(linkctl: Linkctl) -> None:
    write(linkctl.cwd / "links" / "instance.yaml", INSTANCE)
    line = "linkctl plan links/ --detailed-exitcode || [ $? = 2 ]"

    def ci(command: str) -> int:
        shell = f'linkctl() {{ python -m reconciler "$@"; }}; {command}'
        return subprocess.run(
            ["sh", "-c", shell], env=linkctl.env, cwd=linkctl.cwd, capture_output=True
        ).returncode

    assert ci(line) == 0  # the documented line passes on a good plan
    assert ci(line.replace("--detailed-exitcode", "--detailed-exitcdoe")) != 0  # and fails on a typo
