"""``validate.declared_state``: load, validate and remember clean parses in one call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.load import parse
from reconciler.validate import declared_state

INSTANCE = "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\nspec: {baseUrl: https://wiki.example.com}\n"
LINK = (
    "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata: {name: a}\nspec:\n"
    "  provider: google\n  clientId: id\n  clientSecret: {fromEnv: S}\n  scopes: [openid]\n"
)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "instance.yaml").write_text(INSTANCE)
    return {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "S": "secret-value"}


def _parsed_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The display names of the files parsed from now on (the others came from the cache)."""
    parsed: list[str] = []
    real = parse.parse_text

    def recording(display: str, *args: Any) -> Any:
        parsed.append(Path(display).name)
        return real(display, *args)

    monkeypatch.setattr(parse, "parse_text", recording)
    return parsed


def test_clean_files_are_remembered_without_the_caller_asking(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "links" / "a.yaml").write_text(LINK)
    first = declared_state([str(tmp_path / "links")], env=env)
    assert first.ok and [link.name for link in first.links] == ["a"]
    parsed = _parsed_files(monkeypatch)
    again = declared_state([str(tmp_path / "links")], env=env)
    assert again.ok and [link.name for link in again.links] == ["a"]
    assert parsed == []


def test_a_file_with_an_error_is_parsed_again_next_time(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "links" / "typo.yaml").write_text(LINK.replace("fromEnv: S", "fromEnvv: S"))
    assert not declared_state([str(tmp_path / "links")], env=env).ok
    parsed = _parsed_files(monkeypatch)
    result = declared_state([str(tmp_path / "links")], env=env)
    assert not result.ok and parsed == ["typo.yaml"]
    cached = b"".join(p.read_bytes() for p in Path(env["XDG_CACHE_HOME"]).rglob("*") if p.is_file())
    assert b"fromEnvv" not in cached


def test_meanwhile_runs_once_after_the_models_are_imported(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "links" / "a.yaml").write_text(LINK)
    seen: list[bool] = []
    declared_state(
        [str(tmp_path / "links")], env=env, meanwhile=lambda: seen.append("reconciler.models" in sys.modules)
    )
    assert seen == [True]


def test_importing_the_validate_package_leaves_pydantic_for_the_parse() -> None:
    code = "import sys, reconciler.validate\nprint('pydantic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
