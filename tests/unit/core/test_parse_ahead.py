"""Parsing ahead in a forked child gives exactly what parsing here gives, and survives the child."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import load
from reconciler.load import LoadResult, load_paths, remember_parsed
from reconciler.validate import validate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="parsing ahead needs os.fork")

INSTANCE = "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\nspec: {baseUrl: https://wiki.example.com}\n"
LINK = """---
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata: {{name: link-{i}, labels: {{team: "t{i}"}}}}
spec:
  provider: google
  clientId: 'id-{i}'
  clientSecret: {{fromEnv: S}}
  scopes: [openid, "https://mail.google.com/"]
  refresh: {{expectRefreshToken: true}}
"""


def _write_repo(root: Path) -> None:
    """Six files; the last ones (the child's share) hold every kind of problem."""
    root.mkdir()
    (root / "a-instance.yaml").write_text(INSTANCE)
    for f in range(4):
        (root / f"b-{f}.yaml").write_text("".join(LINK.format(i=f * 1000 + i) for i in range(150)))
    (root / "c-problems.yaml").write_text(
        LINK.format(i="dup").replace("  provider: google\n", "  provider: google\n  provider: google\n")
        + LINK.format(i="octal").replace("'id-octal'", "0755")
        + LINK.format(i="yes").replace("'id-yes'", "yes")
    )
    (root / "d-syntax.yaml").write_text(LINK.format(i="broken") + "spec: [unclosed\n")


def _summary(result: LoadResult) -> tuple[Any, ...]:
    return (
        [(d.file, d.index, d.data, d.line) for d in result.documents],
        sorted(d.render() for d in result.diagnostics),
        result.skipped,
        result.files,
    )


def _load(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, ahead: bool, meanwhile: Callable[[], object] | None = None
) -> LoadResult:
    monkeypatch.setattr(load, "PARSE_AHEAD_MIN_BYTES", 1 if ahead else 1 << 40)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    return load_paths([str(root)], env={"LINKCTL_NO_CACHE": "1"}, meanwhile=meanwhile)


def test_parse_ahead_equals_parsing_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_repo(tmp_path / "links")
    forks: list[int] = []
    real_start = load._ParseAhead._start

    def counting_start(self: load._ParseAhead, files: Any) -> None:
        forks.append(len(files))
        real_start(self, files)

    monkeypatch.setattr(load._ParseAhead, "_start", counting_start)
    here = _load(tmp_path / "links", monkeypatch, ahead=False)
    assert forks == []
    ahead = _load(tmp_path / "links", monkeypatch, ahead=True)
    assert forks and 0 < forks[0] < len(ahead.files)  # the child took a share, not everything
    assert _summary(ahead) == _summary(here)
    rendered = " ".join(d.render() for d in ahead.diagnostics)
    for expected in ("duplicate key 'provider'", "0755", "`yes`", "YAML syntax error"):
        assert expected in rendered
    (doc,) = [d for d in ahead.documents if d.name == "link-3149"]
    assert doc.locate(("spec", "scopes", 1)) == (1499, 20)  # positions re-composed on demand


def test_a_child_that_dies_costs_time_not_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_repo(tmp_path / "links")
    here = _load(tmp_path / "links", monkeypatch, ahead=False)
    parent, real_parse = os.getpid(), load._parse

    def dying_in_child(*args: Any) -> Any:
        if os.getpid() != parent:
            os._exit(9)
        return real_parse(*args)

    monkeypatch.setattr(load, "_parse", dying_in_child)
    assert _summary(_load(tmp_path / "links", monkeypatch, ahead=True)) == _summary(here)


def test_no_fork_for_small_inputs_or_one_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_repo(tmp_path / "links")

    def no_fork() -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    load_paths([str(tmp_path / "links")], env={"LINKCTL_NO_CACHE": "1"})  # about 150 KiB: below the limit
    monkeypatch.setattr(load, "PARSE_AHEAD_MIN_BYTES", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    load_paths([str(tmp_path / "links")], env={"LINKCTL_NO_CACHE": "1"})


def test_meanwhile_runs_once_with_or_without_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_repo(tmp_path / "links")
    for threshold in (1, 1 << 40):
        monkeypatch.setattr(load, "PARSE_AHEAD_MIN_BYTES", threshold)
        calls: list[int] = []
        result = load_paths(
            [str(tmp_path / "links")],
            env={"LINKCTL_NO_CACHE": "1"},
            meanwhile=functools.partial(calls.append, 1),
        )
        assert calls == [1] and len(result.documents) > 600


def test_an_error_meanwhile_kills_and_reaps_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_repo(tmp_path / "links")
    pids: list[int] = []
    real_start = load._ParseAhead._start

    def recording_start(self: load._ParseAhead, files: Any) -> None:
        real_start(self, files)
        assert self._pid is not None
        pids.append(self._pid)

    def failing() -> None:
        raise RuntimeError("meanwhile failed")

    monkeypatch.setattr(load._ParseAhead, "_start", recording_start)
    with pytest.raises(RuntimeError, match="meanwhile failed"):
        _load(tmp_path / "links", monkeypatch, ahead=True, meanwhile=failing)
    (pid,) = pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: not even a zombie is left


def test_the_childs_parses_go_into_the_parse_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_repo(tmp_path / "links")
    for problem in ("c-problems.yaml", "d-syntax.yaml"):
        (tmp_path / "links" / problem).unlink()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "S": "secret-value"}
    monkeypatch.setattr(load, "PARSE_AHEAD_MIN_BYTES", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    first = load_paths([str(tmp_path / "links")], env=env)
    assert validate(first, env=env).ok
    remember_parsed(first, [])

    def no_parse(*_: object) -> None:
        raise AssertionError("a cached file was parsed again")

    monkeypatch.setattr(load, "_parse", no_parse)
    again = load_paths([str(tmp_path / "links")], env=env)
    assert _summary(again)[0] == _summary(first)[0]
    assert len(again.documents) == len(first.documents) == 601
