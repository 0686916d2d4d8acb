"""Parsing ahead in a forked child gives exactly what parsing here gives, and survives the child."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.load import LoadResult, load_paths, parse, parse_ahead, remember_parsed
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
NO_CACHE = {"LINKCTL_NO_CACHE": "1"}


@pytest.fixture(autouse=True)
def _as_if_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_ahead never forks a process with other threads (the child could inherit a held lock).

    Earlier tests in the same pytest process may leave harmless daemon threads behind (a
    PostgreSQL pool's workers, a server's loop); these tests are about the fork itself, so they
    see the thread count the command line has: one. The thread rule has its own test below.
    """
    monkeypatch.setattr(parse_ahead.threading, "active_count", lambda: 1)


def _write_repo(root: Path, *, problems: bool = True) -> None:
    """Links in several files; the last ones (the child's share) hold every kind of problem."""
    root.mkdir()
    (root / "a-instance.yaml").write_text(INSTANCE)
    for f in range(4):
        (root / f"b-{f}.yaml").write_text("".join(LINK.format(i=f * 1000 + i) for i in range(150)))
    if not problems:
        return
    (root / "c-problems.yaml").write_text(
        LINK.format(i="dup").replace("  provider: google\n", "  provider: google\n  provider: google\n")
        + LINK.format(i="octal").replace("'id-octal'", "0755")
        + LINK.format(i="yes").replace("'id-yes'", "yes")
    )
    (root / "d-syntax.yaml").write_text(LINK.format(i="broken") + "spec: [unclosed\n")
    (root / "e-latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (root / "f-empty.yaml").write_text("")
    (root / "g.json").write_text(
        '{"apiVersion": "linkctl.dev/v1", "kind": "OutgoingLink", "metadata": {"name": "j"}}'
    )


def _summary(result: LoadResult) -> tuple[Any, ...]:
    return (
        [(d.file, d.index, d.data, d.line) for d in result.documents],
        [d.render() for d in result.diagnostics],  # in order: the same order both ways
        result.skipped,
        result.files,
    )


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many files each started child was given; two usable CPUs, any input size."""
    started: list[int] = []
    real_start = parse_ahead.ParseAhead._start

    def counting_start(self: parse_ahead.ParseAhead, files: Any) -> None:
        started.append(len(files))
        real_start(self, files)

    monkeypatch.setattr(parse_ahead.ParseAhead, "_start", counting_start)
    monkeypatch.setattr(parse_ahead, "usable_cpus", lambda: 2)
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_MIN_BYTES", 1)
    return started


def _sequential(root: Path, monkeypatch: pytest.MonkeyPatch) -> LoadResult:
    with monkeypatch.context() as m:
        m.setattr(parse_ahead, "PARSE_AHEAD_MIN_BYTES", 1 << 40)
        return load_paths([str(root)], env=NO_CACHE)


def test_parse_ahead_equals_parsing_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    _write_repo(tmp_path / "links")
    here = _sequential(tmp_path / "links", monkeypatch)
    assert forks == []
    ahead = load_paths([str(tmp_path / "links")], env=NO_CACHE)
    assert forks and 0 < forks[0] < len(ahead.files)  # the child took a share, not everything
    assert _summary(ahead) == _summary(here)
    rendered = " ".join(d.render() for d in ahead.diagnostics)
    for expected in ("duplicate key 'provider'", "0755", "`yes`", "YAML syntax error", "not UTF-8"):
        assert expected in rendered
    (doc,) = [d for d in ahead.documents if d.name == "link-3149"]
    assert doc.locate(("spec", "scopes", 1)) == (1499, 20)  # positions re-composed on demand


def test_a_child_that_dies_costs_time_not_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    _write_repo(tmp_path / "links")
    here = _sequential(tmp_path / "links", monkeypatch)
    parent, real_parse = os.getpid(), parse.parse_text

    def dying_in_child(*args: Any) -> Any:
        if os.getpid() != parent:
            os._exit(9)
        return real_parse(*args)

    monkeypatch.setattr(parse, "parse_text", dying_in_child)
    assert _summary(load_paths([str(tmp_path / "links")], env=NO_CACHE)) == _summary(here)
    assert forks


@pytest.mark.parametrize("failing", ["fork", "pipe"])
def test_no_fork_possible_means_parsing_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int], failing: str
) -> None:
    _write_repo(tmp_path / "links")
    here = _sequential(tmp_path / "links", monkeypatch)

    def refuse(*_: object) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, failing, refuse)
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    assert _summary(load_paths([str(tmp_path / "links")], env=NO_CACHE)) == _summary(here)
    assert forks  # it tried
    if before:
        assert set(os.listdir("/proc/self/fd")) <= before  # no descriptor left open


def test_when_a_fork_is_not_worth_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    _write_repo(tmp_path / "links")
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_MIN_BYTES", 1 << 40)  # about 150 KiB here: below the limit
    load_paths([str(tmp_path / "links")], env=NO_CACHE)
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_MIN_BYTES", 1)
    monkeypatch.setattr(parse_ahead, "usable_cpus", lambda: 1)
    load_paths([str(tmp_path / "links")], env=NO_CACHE)
    assert forks == []

    # One big file: with nothing else to do here, this process would only wait for the child;
    # with work meanwhile (imports, reading the store) the child takes it.
    monkeypatch.setattr(parse_ahead, "usable_cpus", lambda: 2)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "all.yaml").write_text("".join(LINK.format(i=i) for i in range(300)))
    load_paths([str(tmp_path / "one")], env=NO_CACHE)
    assert forks == []
    load_paths([str(tmp_path / "one")], env=NO_CACHE, meanwhile=lambda: None)
    assert forks == [1]


def test_cgroup_quota_limits_usable_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_read_text = Path.read_text

    def cpu_max(self: Path, *args: Any, **kwargs: Any) -> str:
        if str(self) == "/sys/fs/cgroup/cpu.max":
            return "150000 100000\n"
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(Path, "read_text", cpu_max)
    assert parse_ahead.usable_cpus() == 1


def test_meanwhile_runs_once_with_or_without_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    _write_repo(tmp_path / "links")
    for threshold, forked in ((1, 1), (1 << 40, 0)):
        monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_MIN_BYTES", threshold)
        calls: list[int] = []
        forks.clear()
        result = load_paths(
            [str(tmp_path / "links")], env=NO_CACHE, meanwhile=functools.partial(calls.append, 1)
        )
        assert calls == [1] and len(result.documents) > 600 and len(forks) == forked


def test_an_error_meanwhile_kills_and_reaps_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    _write_repo(tmp_path / "links")
    pids: list[int] = []
    counting_start = parse_ahead.ParseAhead._start

    def recording_start(self: parse_ahead.ParseAhead, files: Any) -> None:
        counting_start(self, files)
        assert self._pid is not None
        pids.append(self._pid)

    def failing() -> None:
        raise RuntimeError("meanwhile failed")

    monkeypatch.setattr(parse_ahead.ParseAhead, "_start", recording_start)
    with pytest.raises(RuntimeError, match="meanwhile failed"):
        load_paths([str(tmp_path / "links")], env=NO_CACHE, meanwhile=failing)
    (pid,) = pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: not even a zombie is left


def test_the_childs_parses_go_into_the_parse_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    _write_repo(tmp_path / "links", problems=False)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "S": "secret-value"}
    first = load_paths([str(tmp_path / "links")], env=env)
    assert forks and validate(first, env=env).ok
    remember_parsed(first, [])

    def no_parse(*_: object) -> None:
        raise AssertionError("a cached file was parsed again")

    monkeypatch.setattr(parse, "parse_text", no_parse)
    again = load_paths([str(tmp_path / "links")], env=env)
    assert _summary(again)[0] == _summary(first)[0]
    assert len(again.documents) == 601


def test_a_process_with_other_threads_never_forks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    monkeypatch.setattr(parse_ahead.threading, "active_count", lambda: 2)
    _write_repo(tmp_path / "links")
    result = load_paths([str(tmp_path / "links")], env=NO_CACHE)
    assert forks == [] and result.documents
