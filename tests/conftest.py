"""Shared test fixtures, the skip policy and what makes the suite safe to run in parallel.

A test that needs something a fresh machine may lack (PostgreSQL, node,
chromium, the age CLI, ``../shared/vectors``) calls :func:`require`. Locally that
skips with the reason; under CI (``CI`` set to any truthy value: ``1``, ``true``,
``yes``, ``on``, case-insensitive) it fails, so CI always runs them.

``scripts/test`` runs pytest with pytest-xdist (``-n auto --dist loadgroup``): every
worker is a separate process with its own session fixtures (one oracle each), its own
``tmp_path`` tree and ports the kernel picks (bind port 0). Anything else a test names
outside ``tmp_path`` (a PostgreSQL database, a schema, a lock name) comes from
:func:`unique_name`, unique per run, per worker and per call. Tests that must not share
a worker's time with each other carry ``@pytest.mark.xdist_group("name")``; see
docs/testing.md.
"""

from __future__ import annotations

import compileall
import itertools
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LINKCTL_SHARED_DIR", ROOT.parent / "shared"))
VECTORS = SHARED / "vectors"
TRUTHY = frozenset({"1", "true", "yes", "on"})
IN_CI = os.environ.get("CI", "").strip().lower() in TRUTHY


# One id for the whole run: xdist gives its workers the controller's; a serial run makes one.
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
_NAMES = itertools.count(1)


def worker_id() -> str:
    """The pytest-xdist worker running this process (``gw0``, ``gw1``, ...), or ``main`` when serial."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def unique_name(prefix: str) -> str:
    """A name no other call, worker, or concurrent run of the suite gets (e.g. a test database).

    Lower-case letters, digits and ``_`` only, at most 63 characters (a PostgreSQL identifier):
    ``<prefix>_<run>_<worker>_<pid>_<n>``. ``prefix`` lets a cleanup find its own leftovers.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,23}", prefix):
        raise ValueError(f"prefix {prefix!r}: 1-24 of a-z, 0-9, _ (starting with a letter)")
    return f"{prefix}_{RUN_ID[:10]}_{worker_id()}_{os.getpid()}_{next(_NAMES)}"


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


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")  # set by pytest-xdist in its worker processes


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the package once, before any linkctl subprocess starts (the controller only).

    The subprocesses run with PYTHONDONTWRITEBYTECODE=1 (tests/support/cli.py), so without
    this each of the suite's thousands of ``python -m reconciler`` runs compiles every module
    it imports from source, as no installed linkctl does. Up-to-date files are only stat()ed.
    """
    if _is_worker(config):
        return
    for folder in ("reconciler", "tests/support", "bench"):
        compileall.compile_dir(ROOT / folder, quiet=2)  # a read-only checkout: compiled in memory then


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, hand out the slow tests first so that none of them starts last and runs alone.

    Every worker sorts its identical collection the same (stable) way; a serial run keeps
    the file order.
    """
    if _is_worker(config):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record every skip with its reason for the end-of-session skip check.

    Under xdist this runs in the controller too, for every worker's report (a tuple
    ``longrepr`` arrives there as a list), so the controller sees all skips.
    """
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, (tuple, list)) else str(longrepr)
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
    """Under CI, a skip outside the allow-list fails the run (decided where all skips are seen)."""
    if _is_worker(session.config):
        return  # the controller has every worker's skips and sets the run's exit status
    if IN_CI and any(_allowed(reason) is None for _, reason in _SKIPS):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
