"""Browser fixtures: Debian's chromium driven by Playwright for Python, and one oracle.

``chromium`` is a Playwright ``Browser`` on ``/usr/bin/chromium`` (``LINKCTL_CHROMIUM``
overrides the path) — never a browser Playwright downloads. Without chromium or the
``playwright`` package the tests skip with the reason, and fail under ``CI=true``
(``scripts/test`` installs chromium). ``oidc_server`` is the oidc-provider oracle, one
for the session as in tests/integration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.support.oracle import OidcServer, start_oidc_server

CHROMIUM = Path(os.environ.get("LINKCTL_CHROMIUM", "/usr/bin/chromium"))
# Quiet, offline, headless: nothing phones home, nothing needs a GPU or a sandbox (root in CI).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def oidc_server() -> Iterator[OidcServer]:
    """One oracle for the browser tests."""
    with start_oidc_server() as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Debian chromium under Playwright (closed at the end of the session)."""
    require(CHROMIUM.exists(), f"{CHROMIUM} is absent: install Debian's chromium (scripts/test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[test]')")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
