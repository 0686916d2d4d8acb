"""Broken stores: every command says which file is wrong and what to do, exit 1, no traceback.

Issue 8 §4: a corrupted or truncated store, a full disk, an unwritable store or key directory.
Full and read-only file systems are real (small tmpfs mounts) where this user may mount.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.support.cli import INSTANCE, Linkctl, link_doc, write

COMMANDS = (("list",), ("plan", "links"), ("apply", "links"), ("keeper", "--once"))


def _links(linkctl: Linkctl, count: int = 1) -> None:
    write(linkctl.cwd / "links" / "instance.yaml", INSTANCE)
    docs = [link_doc(f"link-{i}", client_id=f"client-{i}-" + "x" * 200) for i in range(count)]
    write(linkctl.cwd / "links" / "links.yaml", "---\n".join(docs))


def _real_store(linkctl: Linkctl) -> Path:
    linkctl("apply", "links")
    return linkctl.state_db


def _garbage(linkctl: Linkctl) -> Path:
    path = linkctl.state_db
    path.parent.mkdir(parents=True)
    path.write_bytes(random.Random(8).randbytes(5000))
    return path


def _truncated(linkctl: Linkctl) -> Path:
    path = _real_store(linkctl)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _zeroed_header(linkctl: Linkctl) -> Path:
    path = _real_store(linkctl)
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)
    path.write_bytes(bytes(data))
    return path


BROKEN: dict[str, Callable[[Linkctl], Path]] = {
    "garbage": _garbage,
    "truncated": _truncated,
    "zeroed-header": _zeroed_header,
}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_store_is_named_with_what_to_do(linkctl: Linkctl, kind: str, command: tuple[str, ...]) -> None:
    _links(linkctl)
    path = BROKEN[kind](linkctl)
    before = path.read_bytes()
    result = linkctl(*command, expect=1)  # the runner also asserts: no traceback, no internal error
    assert str(path) in result.stderr and "hint:" in result.stderr, str(result)
    assert "restore it from your backup" in result.stderr, str(result)
    assert path.read_bytes() == before  # a broken store is never "repaired" by overwriting it


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False
        ).returncode
        == 0
    )
    require(mounted, "mounting a small tmpfs needs root (full and read-only file systems)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_full_disk_fails_apply_cleanly_and_keeps_the_old_state(linkctl: Linkctl, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "512k") as small:
        state = f"sqlite:///{small / 'state.db'}"
        _links(linkctl, 1)
        linkctl("--state", state, "apply", "links")
        _links(linkctl, 3000)  # far more than the file system holds
        result = linkctl("--state", state, "apply", "links", expect=1)
        assert f"the store {small / 'state.db'} failed: database or disk is full" in result.stderr, str(
            result
        )
        assert "free space on the file system" in result.stderr
        shown = linkctl("--state", state, "state", "show", "-o", "json").json()
        assert (shown["serial"], shown["links"]) == (1, 1)  # nothing half-written


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_store_in_read_only_directory(linkctl: Linkctl, tmp_path: Path, command: tuple[str, ...]) -> None:
    _links(linkctl)
    with _tmpfs(tmp_path / "ro", "1m") as ro:
        state = f"sqlite:///{ro / 'state.db'}"
        linkctl("--state", state, "apply", "links")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        result = linkctl("--state", state, *command, expect=1)
        assert str(ro / "state.db") in result.stderr and "writable" in result.stderr, str(result)


def test_new_store_or_key_in_read_only_directory(linkctl: Linkctl, tmp_path: Path) -> None:
    _links(linkctl)
    with _tmpfs(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        result = linkctl("--state", f"sqlite:///{ro / 'state.db'}", "apply", "links", expect=1)
        assert f"cannot create the store file {ro / 'state.db'}" in result.stderr, str(result)
        assert f"make {ro} writable" in result.stderr
        key = ro / "state.key"
        result = linkctl("apply", "links", env={"LINKCTL_STATE_KEY_FILE": str(key)}, expect=1)
        assert f"cannot create the state key file {key}" in result.stderr, str(result)
