"""The one atomic file writer of the CLI (plan files, secrets encrypt/decrypt --in-place)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.cli.output import write_atomic
from reconciler.errors import LinkctlError


def test_new_files_get_the_given_mode_and_existing_files_keep_theirs(tmp_path: Path) -> None:
    fresh = tmp_path / "plan.json"
    write_atomic(fresh, "{}\n", new_mode=0o644)
    assert fresh.read_text() == "{}\n" and stat.S_IMODE(fresh.stat().st_mode) == 0o644
    kept = tmp_path / "links.yaml"
    kept.write_text("old")
    kept.chmod(0o640)
    write_atomic(kept, "new")
    assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links.yaml", "plan.json"]  # no temporaries


def test_a_write_that_fails_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "plan.json"
    with pytest.raises(LinkctlError, match="cannot write"):
        write_atomic(target, "{}")
    directory = tmp_path / "dir-in-the-way"
    (directory / "plan.json").mkdir(parents=True)
    with pytest.raises(LinkctlError, match="cannot write"):
        write_atomic(directory / "plan.json", "{}")
    assert [p.name for p in directory.iterdir()] == ["plan.json"]
