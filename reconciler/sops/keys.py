"""Where age identities come from, in the order sops reads them.

``SOPS_AGE_KEY``, ``SOPS_AGE_KEY_FILE``, ``SOPS_AGE_KEY_CMD`` (run without a shell,
with ``SOPS_AGE_RECIPIENT`` set) and ``$XDG_CONFIG_HOME/sops/age/keys.txt`` (else
``~/.config/sops/age/keys.txt``). All sources are combined, like sops; a broken
source is noted and the others still count. The environment is always passed in
explicitly. Used by :mod:`reconciler.sops.tree` when a file is decrypted.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from reconciler.sops import age
from reconciler.sops.key_sources import (
    MAX_KEYS_FILE_BYTES,
    UnreadableKeysFile,
    default_keys_file,
    key_files,
    read_keys_file,
)

__all__ = ["MAX_KEYS_FILE_BYTES", "KeyRing", "default_keys_file", "load_keyring"]

KEY_CMD_TIMEOUT = 60.0


@dataclasses.dataclass
class KeyRing:
    """Identities loaded from the environment, plus notes on sources that failed."""

    env: Mapping[str, str] = dataclasses.field(repr=False)
    identities: list[age.X25519Identity] = dataclasses.field(default_factory=list)
    sources: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    _cmd_cache: dict[str, list[age.X25519Identity]] = dataclasses.field(default_factory=dict, repr=False)

    def for_recipient(self, recipient: str) -> list[age.X25519Identity]:
        """Static identities, plus what ``SOPS_AGE_KEY_CMD`` prints for this recipient."""
        cmd = self.env.get("SOPS_AGE_KEY_CMD")
        if not cmd:
            return self.identities
        if recipient not in self._cmd_cache:
            self._cmd_cache[recipient] = self._run_cmd(cmd, recipient)
        return self.identities + self._cmd_cache[recipient]

    def tried(self) -> list[str]:
        """Public recipients of every identity loaded so far (never the secret part)."""
        seen: dict[str, None] = {}
        for ident in self.identities:
            seen[ident.recipient] = None
        for idents in self._cmd_cache.values():
            for ident in idents:
                seen[ident.recipient] = None
        return list(seen)

    def _run_cmd(self, cmd: str, recipient: str) -> list[age.X25519Identity]:
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            self._note(f"SOPS_AGE_KEY_CMD cannot be split: {exc}")
            return []
        if not argv:
            return []
        child_env = {**self.env, "SOPS_AGE_RECIPIENT": recipient}
        try:
            done = subprocess.run(
                argv, env=child_env, capture_output=True, timeout=KEY_CMD_TIMEOUT, check=False, text=True
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._note(f"SOPS_AGE_KEY_CMD ({argv[0]}) failed to run: {type(exc).__name__}")
            return []
        if done.returncode != 0:
            self._note(f"SOPS_AGE_KEY_CMD ({argv[0]}) exited with status {done.returncode}")
            return []
        if "SOPS_AGE_KEY_CMD" not in self.sources:
            self.sources.append("SOPS_AGE_KEY_CMD")
        return self._parse(done.stdout, "SOPS_AGE_KEY_CMD output")

    def _note(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _parse(self, text: str, source: str, *, split_spaces: bool = False) -> list[age.X25519Identity]:
        stripped = text.lstrip()
        if stripped.startswith(("age-encryption.org/", "-----BEGIN AGE")):
            self._note(f"{source} is a passphrase-protected identities file, which linkctl cannot open")
            return []
        found: list[age.X25519Identity] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            for token in line.split() if split_spaces else [line]:
                try:
                    found.append(age.parse_identity(token))
                except age.AgeError as exc:
                    self._note(f"{source}: {exc}")
        return found


def load_keyring(env: Mapping[str, str]) -> KeyRing:
    """Read every identity source named in ``env`` (the key command runs later, per recipient)."""
    ring = KeyRing(env=env)
    text = env.get("SOPS_AGE_KEY")
    if text:
        ring.sources.append("SOPS_AGE_KEY")
        ring.identities += ring._parse(text, "SOPS_AGE_KEY", split_spaces=True)
    for label, path in key_files(env):
        ring.identities += _read_file(ring, path, label)
    return ring


def _read_file(ring: KeyRing, path: Path, label: str) -> list[age.X25519Identity]:
    where = f"{label} ({path})" if label != str(path) else label
    try:
        text = read_keys_file(path).decode("utf-8")
    except UnreadableKeysFile as exc:
        ring._note(f"{where} {exc.reason}")
        return []
    except UnicodeDecodeError as exc:
        ring._note(f"{where} cannot be read: {type(exc).__name__}")
        return []
    ring.sources.append(where)
    return ring._parse(text, where)
