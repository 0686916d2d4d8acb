"""``.pre-commit-hooks.yaml``'s hooks, run by the real ``pre-commit try-repo`` in a temporary git repository.

pre-commit clones the hook repository and pip-installs it into its own environment, so the
checkout's package files (with uncommitted changes) are committed into a temporary hook
repository first. The installation takes about 10 s once; later runs reuse it (marked slow).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.support.cli import INSTANCE

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ["reconciler", "schemas", "pyproject.toml", "README.md", "MANIFEST.in", "CHANGELOG.md"]
HOOKS = ROOT / ".pre-commit-hooks.yaml"

LINK = """\
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: {name}
spec:
  provider: custom
  grant: client_credentials
  tokenEndpoint: https://auth.example.com/token
  clientId: reports-client
  clientSecret: {secret}
  scopes: [reports.read]
"""


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding the checkout's package and hooks file, committed."""
    require_tool("git")
    repo = tmp_path_factory.mktemp("hooks")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z", "--", ".pre-commit-hooks.yaml", *PACKAGE],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if "__pycache__" in name or not source.is_file():
            continue
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "hooks")
    return repo


def _try_repo(hook_repo: Path, links: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(cache), "SOPS_AGE_KEY_FILE": "/nonexistent"}
    env.pop("SOPS_AGE_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "--all-files"],
        cwd=links,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _hook_lines(output: str) -> dict[str, str]:
    """``{hook name: Passed|Failed}`` from pre-commit's summary lines."""
    out = {}
    for line in output.splitlines():
        for verdict in ("Passed", "Failed"):
            if line.endswith(verdict) and line.startswith("linkctl"):
                out[line.split(".")[0].rstrip()] = verdict
    return out


def test_the_hooks_file_names_the_two_hooks() -> None:
    hooks = {hook["id"]: hook for hook in yaml.safe_load(HOOKS.read_text(encoding="utf-8"))}
    assert set(hooks) == {"linkctl-validate", "linkctl-no-plaintext-secrets"}
    assert hooks["linkctl-validate"]["entry"] == "linkctl validate --no-decrypt"
    assert hooks["linkctl-no-plaintext-secrets"]["entry"] == "linkctl secrets check"


# ~27 s on 2 cores: pre-commit pip-installs the package into its hook environment (~10 s),
# then runs three times; the real tool is the point of the test.
@pytest.mark.slow
def test_pre_commit_runs_both_hooks_on_good_and_bad_files(hook_repo: Path, tmp_path: Path) -> None:
    sops = require_tool("sops")
    keygen = require_tool("age-keygen")
    key = tmp_path / "key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    recipient = next(line.split(": ")[1] for line in key.read_text().splitlines() if "public key" in line)
    links = tmp_path / "links"
    links.mkdir()
    _git(links, "init", "-q")
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    good = links / "reports.yaml"
    good.write_text(LINK.format(name="reports", secret="canary-pc-1"), encoding="utf-8")
    encrypted = subprocess.run(
        [sops, "encrypt", "--age", recipient, "--encrypted-regex", "^clientSecret$", str(good)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1"},
    ).stdout
    good.write_text(encrypted, encoding="utf-8")
    key.unlink()  # the hooks run with no key, as on a contributor's machine
    _git(links, "add", "-A")
    cache = tmp_path / "pre-commit-cache"

    passed = _try_repo(hook_repo, links, cache)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert _hook_lines(passed.stdout) == {
        "linkctl validate (no decryption)": "Passed",
        "linkctl no plaintext secrets": "Passed",
    }, passed.stdout

    # A plaintext clientSecret: both hooks fail, the secret itself never printed.
    (links / "leaky.yaml").write_text(LINK.format(name="leaky", secret="canary-pc-2"), encoding="utf-8")
    _git(links, "add", "-A")
    leaky = _try_repo(hook_repo, links, cache)
    assert leaky.returncode == 1
    assert _hook_lines(leaky.stdout) == {
        "linkctl validate (no decryption)": "Failed",
        "linkctl no plaintext secrets": "Failed",
    }, leaky.stdout
    assert "leaky.yaml:10:17: error: clientSecret is in plaintext" in leaky.stdout
    assert "canary-pc-2" not in leaky.stdout + leaky.stderr
    (links / "leaky.yaml").unlink()

    # An encrypted file edited without sops (MAC removed): validate fails at the sops block's
    # line; it holds no plaintext secret, so the other hook passes.
    lines = encrypted.splitlines()
    (links / "reports.yaml").write_text(
        "\n".join(line for line in lines if not line.startswith("    mac: ")) + "\n", encoding="utf-8"
    )
    _git(links, "add", "-A")
    no_mac = _try_repo(hook_repo, links, cache)
    assert no_mac.returncode == 1
    assert _hook_lines(no_mac.stdout) == {
        "linkctl validate (no decryption)": "Failed",
        "linkctl no plaintext secrets": "Passed",
    }, no_mac.stdout
    assert f"reports.yaml:{lines.index('sops:') + 1}:1: error:" in no_mac.stdout
    assert "MAC missing" in no_mac.stdout
