"""Deployment examples (systemd, Kubernetes) are valid and use only commands, flags, variables linkctl has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import build_parser
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "examples" / "systemd"
KUBERNETES = ROOT / "examples" / "kubernetes"
MANIFESTS = ("secret.yaml", "deployment.yaml", "cronjob-reconcile.yaml")
UNITS = sorted(SYSTEMD.glob("linkctl-*.*"))
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
# Variables the units set that are not linkctl's own (read by Python or the OS).
FOREIGN_ENV = {"HOME", "XDG_CACHE_HOME"}


def _package_source(folder: str = "") -> str:
    return "\n".join(p.read_text() for p in (ROOT / "reconciler" / folder).rglob("*.py"))


def _reads_env(name: str, source: str) -> bool:
    return re.search(rf"[\"']{name}[\"']", source) is not None


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
    source = _package_source()
    names = {value.split("=", 1)[0] for value in _directives(unit, "Environment")}
    assert names, unit
    for name in names - FOREIGN_ENV:
        assert _reads_env(name, source), f"{unit.name}: linkctl never reads {name}"
    for credential in _directives(unit, "LoadCredential"):
        file_name = credential.split(":", 1)[0]
        assert any(v.endswith(f"=%d/{file_name}") for v in _directives(unit, "Environment")), credential


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, doc)
        for name in MANIFESTS
        for doc in yaml.safe_load_all((KUBERNETES / name).read_text())
        if doc is not None
    ]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    if "template" not in spec:
        return []
    return list(spec["template"]["spec"]["containers"])


def test_kubernetes_manifests_match_the_api_schemas_strictly() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    kinds = []
    for name, doc in _documents():
        try:  # strict: an unknown (e.g. misspelt) field is an error, not silently dropped
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {error.message}")
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["CronJob", "Deployment", "Secret", "Service"]


def test_kubernetes_commands_variables_and_probes_exist_in_linkctl() -> None:
    source, server = _package_source(), _package_source("server")
    linkctl_containers = [c for _, doc in _documents() for c in _containers(doc) if "linkctl" in c["image"]]
    assert {tuple(c["args"][:1]) for c in linkctl_containers} == {("serve",), ("reconcile",)}
    for container in linkctl_containers:
        args = build_parser().parse_args(container["args"])  # unknown command or flag: exit 64
        assert callable(args.handler)
        for env in container.get("env", []):
            assert env["name"] == "HOME" or _reads_env(env["name"], source), env["name"]
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in container:
                path = container[probe]["httpGet"]["path"]
                assert f'"{path}"' in server, f"the server has no route {path}"
    (serve,) = [c for c in linkctl_containers if c["args"][0] == "serve"]
    assert (serve["livenessProbe"]["httpGet"]["path"], serve["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz",
        "/readyz",
    )


def test_alert_rules_use_metrics_linkctl_exports() -> None:
    rules = yaml.safe_load((KUBERNETES / "prometheus-rules.yaml").read_text())
    metrics = (ROOT / "reconciler" / "server" / "metrics.py").read_text()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} == {
        "LinkctlLinkNeedsAuthorization",
        "LinkctlAccessTokenExpiresSoon",
        "LinkctlRefreshFailuresRising",
    }
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        names = set(re.findall(r"\b(linkctl_[a-z_]+)", rule["expr"]))
        assert names, rule["alert"]
        for name in names:  # counters are exported with a _total suffix
            assert f'"{name.removesuffix("_total")}"' in metrics, f"{rule['alert']}: no metric {name}"
