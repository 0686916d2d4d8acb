"""The CI recipes of ``examples/ci/``: each one's commands, in order, against a temporary links repository.

The YAML is parsed as the CI system would read it; every step (GitHub Actions ``run``) or
job script line (GitLab) that calls linkctl runs in bash with the variables the recipe
passes, secrets taken from a fake secret store, against a fresh PostgreSQL database as the
shared store. Steps that only install linkctl or talk to the forge's API are named and
skipped (the test asserts exactly which). A fork's pull request gets no secrets: then only
validation runs, without decryption.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.postgres import fresh_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
_SECRET = re.compile(r"^\$\{\{\s*secrets\.([A-Z_]+)\s*\}\}$")


def _repository(tmp_path: Path) -> Path:
    """A links repository laid out as the recipes expect: ``links/`` with the example links."""
    repo = tmp_path / "repo"
    links = repo / "links"
    links.mkdir(parents=True)
    shutil.copy(EXAMPLES / "instance.yaml", links / "instance.yaml")
    shutil.copytree(EXAMPLES / "links", links / "links")
    shutil.copytree(EXAMPLES / "secrets", links / "secrets")
    return repo


def _secrets() -> dict[str, str]:
    """The CI's secret store: the shared PostgreSQL store, its key, the age identity, a fromEnv secret."""
    return {
        "LINKCTL_STATE": fresh_url(),
        "LINKCTL_STATE_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SOPS_AGE_KEY": (EXAMPLES / "keys" / "demo-age-key.txt").read_text(encoding="utf-8"),
        "TRACKER_CLIENT_SECRET": "tracker-secret-canary",
    }


def _base_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)  # the linkctl under test
    return {"HOME": str(home), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "LANG": "C.UTF-8"}


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # GitHub runs `bash -e {0}` with pipefail; GitLab stops a job at the first failing line.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- GitHub Actions ---------------------------------------------------------------------


def _github_steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def _run_github_job(
    workflow: dict[str, Any], job: str, repo: Path, secrets: dict[str, str], *, fork: bool, summary: Path
) -> tuple[list[str], list[str]]:
    """Run a job's linkctl steps; return (names run, names skipped)."""
    ran, skipped = [], []
    for step in _github_steps(workflow, job):
        if "run" not in step:
            assert "uses" in step
            continue
        name = step["name"]
        condition = step.get("if", "")
        if fork and "head.repo.full_name == github.repository" in condition:
            skipped.append(name)  # a fork's PR does not reach the store
            continue
        if "linkctl " not in step["run"] or step["run"].startswith(("pip install", "gh ")):
            skipped.append(name)
            continue
        env = _base_env(repo.parent)
        env["GITHUB_STEP_SUMMARY"] = str(summary)
        for key, value in (step.get("env") or {}).items():
            match = _SECRET.match(str(value))
            assert match, f"{job}/{name}: {key} is not from secrets: {value}"
            env[key] = "" if fork else secrets[match.group(1)]  # GitHub gives a missing secret as ""
        done = _bash(step["run"], repo, env)
        assert done.returncode == 0, f"{job}/{name} -> {done.returncode}\n{done.stdout}{done.stderr}"
        assert "tracker-secret-canary" not in done.stdout + done.stderr
        ran.append(name)
    return ran, skipped


def test_github_actions_recipe(tmp_path: Path) -> None:
    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text(encoding="utf-8"))
    # PyYAML reads the bare `on:` key as True (YAML 1.1); GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))
    assert set(triggers) == {"pull_request", "push"}
    assert workflow["jobs"]["apply"]["needs"] == "plan"
    repo = _repository(tmp_path)
    secrets = _secrets()
    summary = tmp_path / "summary.md"

    # A fork's pull request: no secrets, validation without decryption only.
    ran, skipped = _run_github_job(workflow, "pull-request", repo, secrets, fork=True, summary=summary)
    assert ran == ["Validate"] and skipped == ["Install linkctl", "Plan", "Comment the plan"]
    assert not (repo / "plan.md").exists()

    # A pull request from a branch of the repository: validate, plan to plan.md (comment-ready).
    ran, skipped = _run_github_job(workflow, "pull-request", repo, secrets, fork=False, summary=summary)
    assert ran == ["Validate", "Plan"] and skipped == ["Install linkctl", "Comment the plan"]
    comment = (repo / "plan.md").read_text(encoding="utf-8")
    assert comment.startswith("**Plan:** 4 to create, 0 to update"), comment
    assert "### create: `support-gmail` (`google`)" in comment and comment in summary.read_text()
    assert "tracker-secret-canary" not in comment

    # Merged: plan on the default branch, then apply that saved plan to the shared store.
    ran, _ = _run_github_job(workflow, "plan", repo, secrets, fork=False, summary=summary)
    assert ran == ["Plan"] and (repo / "plan.json").is_file()
    ran, _ = _run_github_job(workflow, "apply", repo, secrets, fork=False, summary=summary)
    assert ran == ["Apply the saved plan"]

    # The store outlived the "runner": the next pull request's plan has nothing to change.
    _run_github_job(workflow, "pull-request", repo, secrets, fork=False, summary=summary)
    assert (repo / "plan.md").read_text(encoding="utf-8").startswith("**No changes.** 4 link(s) up to date")


# -- GitLab CI --------------------------------------------------------------------------


def _run_gitlab_job(
    pipeline: dict[str, Any], job: str, repo: Path, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {**_base_env(repo.parent), **variables}
    script = "\n".join(pipeline[job]["script"])
    return _bash(script, repo, env)


def test_gitlab_ci_recipe(tmp_path: Path) -> None:
    pipeline = yaml.safe_load((EXAMPLES / "ci" / "gitlab-ci.yml").read_text(encoding="utf-8"))
    assert pipeline["stages"] == ["validate", "plan", "apply"]
    assert [pipeline[job]["stage"] for job in ("validate", "plan", "apply")] == pipeline["stages"]
    assert pipeline["apply"]["needs"] == ["plan"] and "plan.json" in pipeline["plan"]["artifacts"]["paths"]
    assert pipeline["default"]["before_script"][0].startswith("pip install")  # skipped: linkctl is here
    repo = _repository(tmp_path)
    secrets = _secrets()
    merge_request = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"}

    # A fork's merge request: no (protected) variables, so validate without decryption.
    done = _run_gitlab_job(pipeline, "validate", repo, merge_request)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not checked without decryption" in done.stdout

    # A merge request of the project: validate and plan; plan.md is the artifact (no token: no note).
    for job in ("validate", "plan"):
        done = _run_gitlab_job(pipeline, job, repo, {**merge_request, **secrets})
        assert done.returncode == 0, f"{job}: {done.stdout}{done.stderr}"
        assert "tracker-secret-canary" not in done.stdout + done.stderr
    assert (repo / "plan.md").read_text(encoding="utf-8").startswith("**Plan:** 4 to create")

    # The default branch: plan, then apply the saved plan; a second plan shows no change.
    default = {"CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main", **secrets}
    for job in ("validate", "plan", "apply"):
        done = _run_gitlab_job(pipeline, job, repo, default)
        assert done.returncode == 0, f"{job}: {done.stdout}{done.stderr}"
    assert "Applied: state serial is now 1." in done.stdout
    done = _run_gitlab_job(pipeline, "plan", repo, default)
    assert (repo / "plan.md").read_text(encoding="utf-8").startswith("**No changes.**")


@pytest.mark.parametrize("recipe", ["github-actions.yml", "gitlab-ci.yml"])
def test_recipes_use_only_existing_commands_and_flags(recipe: str) -> None:
    """Every linkctl command line of a recipe parses with linkctl's own parser."""
    from reconciler.cli import build_parser

    text = "\n".join(
        line
        for line in (EXAMPLES / "ci" / recipe).read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith(("#", "expose_as:"))  # comments and the artifact's title
    )
    lines = re.findall(r"linkctl ((?:validate|plan|apply)[^;|>&\n]*)", text)
    assert len(lines) >= 4, lines
    parser = build_parser()
    for line in lines:
        parser.parse_args(line.replace('"', "").split())
