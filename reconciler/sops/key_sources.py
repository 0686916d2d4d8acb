"""Where sops finds age identities, and an identities file read safely, without the cryptography.

:mod:`.keys` parses what these sources hold; the decryption memo of
:mod:`reconciler.load` fingerprints the same sources without importing age or AES-GCM.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

MAX_KEYS_FILE_BYTES = 1024 * 1024  # an identity is 74 bytes; a megabyte is thousands of them


class UnreadableKeysFile(Exception):
    """An identities file that cannot be used as it is; ``reason`` completes "FILE ..."."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def default_keys_file(env: Mapping[str, str]) -> Path | None:
    """``<UserConfigDir>/sops/age/keys.txt`` as Go computes it on Linux."""
    config_home = env.get("XDG_CONFIG_HOME")
    if config_home:
        return Path(config_home) / "sops" / "age" / "keys.txt"
    home = env.get("HOME")
    return Path(home) / ".config" / "sops" / "age" / "keys.txt" if home else None


def key_files(env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """The identities files sops reads, in order: ``SOPS_AGE_KEY_FILE``, then the default one if present."""
    files: list[tuple[str, Path]] = []
    named = env.get("SOPS_AGE_KEY_FILE")
    if named:
        files.append(("SOPS_AGE_KEY_FILE", Path(os.path.expanduser(named))))
    default = default_keys_file(env)
    if default is not None:
        try:
            present = default.is_file()
        except (OSError, ValueError):
            present = True  # a folder we may not search, a name too long: read, and noted why not
        if present:
            files.append((str(default), default))
    return files


def read_keys_file(path: Path) -> bytes:
    """An identities file's bytes; :class:`UnreadableKeysFile` unless a regular file under the limit."""
    try:
        # O_NONBLOCK, fstat and a cap: /dev/zero, a FIFO or a directory must not hang or fill memory.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory
            os.close(fd)
            raise UnreadableKeysFile("is not a regular file (a directory, FIFO, socket or device)")
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_KEYS_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise UnreadableKeysFile(f"cannot be read: {type(exc).__name__}") from None
    if len(raw) > MAX_KEYS_FILE_BYTES:
        raise UnreadableKeysFile(f"is over the {MAX_KEYS_FILE_BYTES} byte limit of an age identities file")
    return raw
