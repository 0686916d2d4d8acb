"""``SOPS_AGE_KEY_FILE`` naming a device, FIFO, directory or huge file: noted at once, never read."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.sops import age
from reconciler.sops.keys import MAX_KEYS_FILE_BYTES, load_keyring


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")  # nobody writes: a blocking open would hang forever
    return tmp_path / "fifo"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "dir").mkdir()
    return tmp_path / "dir"


def _huge(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    with path.open("wb") as handle:
        handle.truncate(MAX_KEYS_FILE_BYTES + 1)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp_path: Path("/dev/zero"), "not a regular file"),
        (_fifo, "not a regular file"),
        (_directory, "not a regular file"),
        (_huge, "byte limit"),
    ],
    ids=["dev-zero", "fifo", "directory", "over-1-mib"],
)
def test_hostile_key_file_is_noted_and_other_sources_still_count(
    tmp_path: Path, make: Callable[[Path], Path], problem: str
) -> None:
    identity = age.generate_identity()
    started = time.monotonic()
    ring = load_keyring({"SOPS_AGE_KEY_FILE": str(make(tmp_path)), "SOPS_AGE_KEY": identity.encode()})
    assert time.monotonic() - started < 5
    assert [note for note in ring.problems if note.startswith("SOPS_AGE_KEY_FILE") and problem in note]
    assert [i.recipient for i in ring.identities] == [identity.recipient]


def test_regular_key_file_still_loads(tmp_path: Path) -> None:
    identity = age.generate_identity()
    (tmp_path / "keys.txt").write_text(f"# created by a test\n{identity.encode()}\n", encoding="utf-8")
    ring = load_keyring({"SOPS_AGE_KEY_FILE": str(tmp_path / "keys.txt")})
    assert [i.recipient for i in ring.identities] == [identity.recipient] and ring.problems == []
