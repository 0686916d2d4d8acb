"""Import layers point one way: an import-linter contract run as a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = require_tool("lint-imports")
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


def test_core_does_not_import_edges_at_runtime() -> None:
    code = (
        "import sys, reconciler.load, reconciler.validate, reconciler.plan, reconciler.apply\n"
        "bad = [m for m in sys.modules if m.startswith(('reconciler.cli', 'reconciler.server', 'httpx'))]\n"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
