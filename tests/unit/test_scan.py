"""The directory scan of ``load.files.iter_files``: errors a skipped directory would hide, as root too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.load import files


def _scan(*paths: Path) -> list[tuple[str, bool, str | None]]:
    return [
        (display, path is not None, problem) for display, path, problem in files.iter_files(map(str, paths))
    ]


def test_a_directory_that_cannot_be_listed_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ok.yaml").write_text("{}\n", encoding="utf-8")
    (tmp_path / "team").mkdir()
    real = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        if Path(path).name == "team":  # what chmod 0 does for anyone but root
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    assert _scan(tmp_path) == [
        (str(tmp_path / "ok.yaml"), True, None),
        (str(tmp_path / "team"), False, "cannot read directory: Permission denied"),
    ]


def test_a_directory_that_vanishes_during_the_scan_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "team").mkdir()
    real = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        if Path(path).name == "team":
            os.rmdir(path)  # removed between the parent's listing and its own
        return real(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    assert _scan(tmp_path) == [
        (str(tmp_path / "team"), False, "cannot read directory: No such file or directory")
    ]


def test_extensions_hidden_entries_and_loops(tmp_path: Path) -> None:
    for name in ("a.YAML", "b.Yml", "c.JSON", "d.txt", ".e.yaml", ".git/f.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)  # a cycle
    (tmp_path / "twice").symlink_to(tmp_path / "sub", target_is_directory=True)  # read once
    assert [Path(display).name for display, _, _ in _scan(tmp_path)] == ["a.YAML", "b.Yml", "c.JSON"]
