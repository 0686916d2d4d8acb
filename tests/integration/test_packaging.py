"""Packaging: sdist and wheel build, carry every package file, install and run from a fresh environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import reconciler
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds and installs into a new venv (~20 s)


def _run(*argv: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def _package_files() -> set[str]:
    """Every file git tracks under reconciler/ (what an install must contain)."""
    listed = _run("git", "ls-files", "reconciler").stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the packaged files are compared with git ls-files")
    out = tmp_path_factory.mktemp("dist")
    # Builds the sdist, then the wheel from the unpacked sdist: a file missing from the sdist fails here.
    _run(sys.executable, "-m", "build", "--outdir", str(out), str(ROOT))
    return out


def test_sdist_and_wheel_carry_every_package_file_and_one_version(dist: Path) -> None:
    version = reconciler.__version__
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"linkctl-{version}-py3-none-any.whl" and sdist.name == f"linkctl-{version}.tar.gz"
    wanted = _package_files()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert wanted - in_wheel == set(), "files the wheel lacks"
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert (wanted | {"pyproject.toml", "README.md", "CHANGELOG.md"}) - in_sdist == set(), (
        "files the sdist lacks"
    )
    metadata = zipfile.ZipFile(wheel).read(f"linkctl-{version}.dist-info/METADATA").decode()
    assert f"Version: {version}\n" in metadata


def test_pipx_installs_the_sdist_and_the_command_runs(dist: Path, tmp_path: Path) -> None:
    pipx = Path(sys.executable).parent / "pipx"
    if not pipx.exists():
        pytest.skip("pipx is not installed in this environment: pip install -e '.[test]'")
    (sdist,) = dist.glob("*.tar.gz")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LINKCTL_", "SOPS_", "PIPX_", "VIRTUAL_ENV"))
    }
    env.update(
        HOME=str(tmp_path),
        PIPX_HOME=str(tmp_path / "pipx"),
        PIPX_BIN_DIR=str(tmp_path / "bin"),
        PIPX_MAN_DIR=str(tmp_path / "man"),
        PYTHONPATH="",  # the installed copy, not this checkout
    )
    _run(str(pipx), "install", "--python", sys.executable, str(sdist), env=env, cwd=tmp_path)
    linkctl = tmp_path / "bin" / "linkctl"
    assert _run(str(linkctl), "--version", env=env, cwd=tmp_path).stdout.strip() == (
        f"linkctl {reconciler.__version__}"
    )
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    env.update(
        TRACKER_CLIENT_SECRET="tracker-secret", SOPS_AGE_KEY_FILE=str(examples / "keys" / "demo-age-key.txt")
    )
    validated = _run(str(linkctl), "validate", "examples", env=env, cwd=tmp_path)
    assert validated.stdout.startswith("OK: 4 link(s) in "), validated
    where = _run(
        str(tmp_path / "pipx" / "venvs" / "linkctl" / "bin" / "python"),
        "-c",
        "import reconciler; print(reconciler.__file__)",
        env=env,
        cwd=tmp_path,
    ).stdout
    assert str(tmp_path) in where and str(ROOT) not in where  # ran the installed package
