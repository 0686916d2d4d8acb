"""Helpers for end-to-end tests: run ``linkctl`` as a subprocess against temp dirs.

Imported by the e2e tests (``from tests.support.cli import ...``); the fixture lives in
tests/e2e/conftest.py.

Every test gets its own HOME/XDG dirs (``isolated_env`` from ``tests/conftest.py``),
so the default SQLite store and its key file live in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTANCE = """\
apiVersion: linkctl.dev/v1
kind: Instance
metadata:
  name: wiki
spec:
  baseUrl: https://wiki.example.com
"""

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Result:
    """The outcome of one linkctl run."""

    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"linkctl {' '.join(self.args)} -> {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


class Linkctl:
    """Runs ``python -m reconciler`` with an explicit environment and working directory."""

    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        self.env = dict(env)
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        expect: int | None = 0,
        timeout: float = 120,
    ) -> Result:
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            env=full_env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        assert TRACEBACK not in result.output, str(result)
        assert "internal error" not in result.stderr, str(result)
        if expect is not None:
            assert result.returncode == expect, str(result)
        return result

    def popen(
        self, *args: str, env: Mapping[str, str] | None = None, output: Path | None = None
    ) -> subprocess.Popen[str]:
        """Start linkctl without waiting (for kill -9 tests); stdout+stderr go to ``output``.

        Output goes to a file, not a pipe, so a long plan never blocks the process.
        """
        target = (output or self.cwd / "popen-output.txt").open("w", encoding="utf-8")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "reconciler", *args],
                env={**self.env, **(env or {})},
                cwd=self.cwd,
                stdout=target,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            target.close()

    def snapshot(self) -> dict[str, Any]:
        """What the store holds, as the CLI shows it: links (list -o json) and the serial."""
        links = self("list", "-o", "json").json()["links"]
        state = self("state", "show", "-o", "json").json()
        return {"links": links, "serial": state["serial"], "count": state["links"]}

    @property
    def state_db(self) -> Path:
        """The default SQLite store of this environment."""
        return Path(self.env["XDG_STATE_HOME"]) / "linkctl" / "state.db"


def make_linkctl(isolated_env: Mapping[str, str], tmp_path: Path) -> Linkctl:
    """A linkctl runner whose HOME, XDG dirs, store and cwd are in tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    env = {**isolated_env, "PYTHONDONTWRITEBYTECODE": "1"}
    # The package is installed editable; make sure a subprocess finds it from any cwd.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    return Linkctl(env, work)


def write(path: Path, text: str) -> Path:
    """Write dedented text, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def link_doc(
    name: str,
    *,
    provider: str = "google",
    client_id: str | None = "client-1",
    secret_env: str | None = None,
    scopes: Sequence[str] = ("https://mail.google.com/",),
    extra: str = "",
    metadata_extra: str = "",
) -> str:
    """The YAML text of one OutgoingLink document (``extra`` lines go under spec)."""
    lines = [
        "apiVersion: linkctl.dev/v1",
        "kind: OutgoingLink",
        "metadata:",
        f"  name: {name}",
    ]
    lines += [f"  {line}" for line in textwrap.dedent(metadata_extra).splitlines() if line.strip()]
    lines += ["spec:", f"  provider: {provider}"]
    if client_id is not None:
        lines.append(f"  clientId: {client_id}")
    if secret_env is not None:
        lines += ["  clientSecret:", f"    fromEnv: {secret_env}"]
    if scopes:
        lines.append("  scopes:")
        lines += [f"    - {scope}" for scope in scopes]
    lines += [f"  {line}" for line in textwrap.dedent(extra).splitlines() if line.strip()]
    return "\n".join(lines) + "\n"
