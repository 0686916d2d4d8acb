"""Shared test fixtures and the skip policy.

A test that needs something a fresh machine may lack (PostgreSQL, node,
chromium, the age CLI, ``../shared/vectors``) calls :func:`require`. Locally that
skips with the reason; under CI (``CI`` set to any truthy value: ``1``, ``true``,
``yes``, ``on``, case-insensitive) it fails, so CI always runs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LINKCTL_SHARED_DIR", ROOT.parent / "shared"))
VECTORS = SHARED / "vectors"
TRUTHY = frozenset({"1", "true", "yes", "on"})
IN_CI = os.environ.get("CI", "").strip().lower() in TRUTHY


def require(condition: object, reason: str) -> None:
    """Skip (locally) or fail (under CI) when a needed tool or service is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of an executable on PATH, or skip/fail."""
    path = shutil.which(name)
    require(path, f"`{name}` is not on PATH")
    assert path is not None
    return path


def require_vectors(*parts: str) -> Path:
    """A path inside ../shared/vectors, or skip/fail when that folder is absent."""
    path = VECTORS.joinpath(*parts)
    require(path.exists(), f"{path} is absent (the shared SOPS/age vectors are read from ../shared/vectors)")
    return path


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment whose HOME, XDG dirs and state live in tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PATH": os.environ.get("PATH", ""),
        "LANG": "C.UTF-8",
    }
    for key in list(os.environ):
        if key.startswith(("LINKCTL_", "SOPS_", "XDG_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


# Direct pytest.skip/skipif uses that are allowed, by a phrase of their reason, with why.
# Any other skip (a require() skip included) fails the session under CI; CI prints this list.
ALLOWED_SKIPS = {
    "scrypt and post-quantum hybrid recipients are not implemented": (
        "linkctl decrypts X25519 recipients only (what SOPS uses); vectors with an X25519 identity still run"
    ),
    "post-quantum hybrid identities are not implemented": "linkctl has no post-quantum identity type",
    "parsing ahead needs os.fork": "a platform without os.fork; CI runs on Linux",
    "running as root: a directory with mode 0000 stays readable": (
        "the e2e row needs a non-root user; tests/unit/test_scan.py covers an unreadable directory as root"
    ),
}
_SKIPS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record every skip with its reason for the end-of-session skip check."""
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _SKIPS.append((report.nodeid, reason))


def _allowed(reason: str) -> str | None:
    return next((why for phrase, why in ALLOWED_SKIPS.items() if phrase in reason), None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List allowed skips with their reasons, and every skip that is not allowed."""
    if not _SKIPS:
        return
    allowed = sorted({why for _, reason in _SKIPS if (why := _allowed(reason))})
    terminalreporter.section("skip policy")
    for why in allowed:
        count = sum(1 for _, reason in _SKIPS if _allowed(reason) == why)
        terminalreporter.write_line(f"allowed skip x{count}: {why}")
    for nodeid, reason in _SKIPS:
        if _allowed(reason) is None:
            terminalreporter.write_line(f"NOT ALLOWED skip: {nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a skip outside the allow-list fails the run."""
    if IN_CI and any(_allowed(reason) is None for _, reason in _SKIPS):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
