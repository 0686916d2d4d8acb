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


def test_no_import_cycle_in_the_package() -> None:
    """Tarjan's strongly connected components over every import, type-checking ones included."""
    import grimp

    graph = grimp.build_graph("reconciler", exclude_type_checking_imports=False)
    imports = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in imports[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in imports:
        if module not in index:
            visit(module)
    assert cycles == []
