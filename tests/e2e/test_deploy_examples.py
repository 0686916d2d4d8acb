"""Deployment examples (systemd units) are valid and use only commands, flags and variables linkctl has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.cli import build_parser
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "examples" / "systemd"
UNITS = sorted(SYSTEMD.glob("linkctl-*.*"))
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
# Variables the units set that are not linkctl's own (read by Python or the OS).
FOREIGN_ENV = {"HOME", "XDG_CACHE_HOME"}


def _directives(unit: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(key + "=")]


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    assert {u.name for u in UNITS} >= {
        "linkctl-keeper.service",
        "linkctl-reconcile.service",
        "linkctl-reconcile.timer",
        "linkctl-serve.service",
    }
    stand_in = shutil.which("true")
    assert stand_in
    copies = []
    for unit in UNITS:  # verify wants ExecStart's binary to exist: point it at a stand-in
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/usr/local/bin/linkctl", stand_in))
        copies.append(str(copy))
    verified = subprocess.run(
        [analyze, "verify", *copies], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # verify exits 0 on an unknown or misspelt key and only warns: any output is a defect.
    assert verified.returncode == 0 and verified.stderr == "" and verified.stdout == "", verified
    for copy in copies:
        if copy.endswith(".service"):
            security = subprocess.run(
                [analyze, "security", "--offline=yes", "--threshold=20", copy],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert security.returncode == 0, f"{copy}: exposure above 2.0\n{security.stdout[-2000:]}"


@pytest.mark.parametrize("unit", SERVICES, ids=lambda u: u.name)
def test_exec_start_is_a_linkctl_command_line_the_parser_accepts(unit: Path) -> None:
    (exec_start,) = _directives(unit, "ExecStart")
    binary, *argv = shlex.split(exec_start)
    assert binary == "/usr/local/bin/linkctl"
    args = build_parser().parse_args(argv)  # an unknown command or flag exits 64 here
    assert callable(args.handler)


@pytest.mark.parametrize("unit", SERVICES, ids=lambda u: u.name)
def test_environment_names_are_ones_linkctl_reads(unit: Path) -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "reconciler").rglob("*.py"))
    names = {value.split("=", 1)[0] for value in _directives(unit, "Environment")}
    assert names, unit
    for name in names - FOREIGN_ENV:
        assert re.search(rf"[\"']{name}[\"']", source), f"{unit.name}: linkctl never reads {name}"
    for credential in _directives(unit, "LoadCredential"):
        file_name = credential.split(":", 1)[0]
        assert any(v.endswith(f"=%d/{file_name}") for v in _directives(unit, "Environment")), credential
