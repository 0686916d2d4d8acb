"""The parse cache: parsed documents of files seen before, keyed by their content.

What may be cached is decided here too (:func:`remember_parsed` after validation,
:func:`cacheable` for each document), so no decrypted or plaintext secret is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.diagnostics import Diagnostic
from reconciler.load.documents import API_GROUP, SOPS_PREFIX, LoadResult, is_encrypted
from reconciler.load.parse import Parsed, ParseOutcome
from reconciler.secrets import PARAM_FIELDS, SECRET_LOOKING_KEY

_CACHE_FORMAT = "1"  # bump whenever parsing or its diagnostics change


class ParseCache:
    """Parsed documents of files seen before, keyed by their content.

    ``plan``/``reconcile`` from cron read the same unchanged files again and again;
    parsing 10,000 links costs about 0.4 s, reading them from here about 0.05 s. Only
    what the YAML parser produced is kept (SOPS values stay ``ENC[...]``, secret
    references stay references): never a decrypted value. ``marshal`` holds plain data
    only; an unreadable entry is a miss. ``LINKCTL_NO_CACHE=1`` turns it off.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_env(cls, env: Mapping[str, str]) -> ParseCache | None:
        """The cache under ``$XDG_CACHE_HOME/linkctl`` (``~/.cache/linkctl``), unless disabled."""
        base = cache_home(env)
        return None if base is None else cls(base / f"parse-{__version__}-{_CACHE_FORMAT}")

    @staticmethod
    def key(text: str) -> str:
        """The cache key of a file's text (SHA-256)."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, display: str) -> ParseOutcome | None:
        """The parse of the text with ``key`` if cached (diagnostics re-labelled with ``display``)."""
        blob = self.read(key)
        return None if blob is None else self.decode(blob, display)

    def read(self, key: str) -> bytes | None:
        """The blob stored under ``key``, if there is one we trust (ours, private, a regular file)."""
        entry = self._entry(key)
        try:
            # Another local user could plant an entry that redirects tokenEndpoint: only
            # files and directories that are ours and writable by us alone are trusted.
            if not all(_owned_privately(os.lstat(d)) for d in (self.root, entry.parent)):
                return None
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not (stat.S_ISREG(info.st_mode) and _owned_privately(info)):
                    return None
                return handle.read()
        except OSError:
            return None

    @staticmethod
    def decode(blob: bytes, display: str) -> ParseOutcome | None:
        """Inverse of :meth:`encode`; ``None`` for a damaged blob."""
        try:
            parsed_raw, diagnostics_raw, json_fallback = marshal.loads(blob)
            parsed: Parsed = [(data, int(line)) for data, line in parsed_raw]
            per_document = {
                int(index): [
                    Diagnostic(sev, msg, display, line, col, tuple(path), hint, code)
                    for sev, msg, line, col, path, hint, code in items
                ]
                for index, items in diagnostics_raw.items()
            }
        except (ValueError, EOFError, TypeError):
            return None
        return parsed, per_document, bool(json_fallback)

    @staticmethod
    def encode(parsed: Parsed, per_document: dict[int, list[Diagnostic]], json_fallback: bool) -> bytes:
        """The cache form of a parse."""
        return marshal.dumps(
            (
                parsed,
                {
                    index: [(d.severity, d.message, d.line, d.column, d.path, d.hint, d.code) for d in items]
                    for index, items in per_document.items()
                },
                json_fallback,
            )
        )

    def put(self, key: str, blob: bytes) -> None:
        """Remember an encoded parse (best effort: a cache that cannot be written is no error)."""
        entry = self._entry(key)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            for directory in (self.root, entry.parent):  # 0700 whatever the umask
                os.chmod(directory, 0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(blob)
            os.replace(tmp, entry)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()


def cache_home(env: Mapping[str, str]) -> Path | None:
    """linkctl's cache directory (``$XDG_CACHE_HOME/linkctl``, ``~/.cache/linkctl``); None when disabled."""
    if env.get("LINKCTL_NO_CACHE"):
        return None
    base = env.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = env.get("HOME")
        if not home:
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "linkctl"


def source_fingerprint(names: Sequence[str]) -> list[str]:
    """``path:size:mtime`` of linkctl's Python sources under ``names`` (files, or folders walked).

    What a cache entry's meaning depends on: an edited checkout, or another build under the
    same version, is a new fingerprint, so its entries are misses. Read on every warm run.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts: list[str] = []
    for name in names:
        top = os.path.join(package, name)
        try:
            if os.path.isdir(top):
                parts += _module_stamps(top, name)
            else:
                info = os.stat(top)
                parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            continue
    return parts


def _module_stamps(folder: str, shown: str) -> list[str]:
    """``shown/file:size:mtime`` of each ``.py`` under ``folder``, sub-packages too (byte code not)."""
    stamps: list[str] = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.endswith(".py") and entry.is_file():
                info = entry.stat()
                stamps.append(f"{shown}/{entry.name}:{info.st_size}:{info.st_mtime_ns}")
            elif entry.is_dir() and entry.name != "__pycache__":
                stamps += _module_stamps(entry.path, f"{shown}/{entry.name}")
    return stamps


def _owned_privately(info: os.stat_result) -> bool:
    """True for a cache file or directory owned by the current user and writable by nobody else."""
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def remember_parsed(loaded: LoadResult, diagnostics: Sequence[Diagnostic]) -> None:
    """Cache the parses of files that validated cleanly and hold no plaintext secret.

    Called after validation (by :func:`reconciler.validate.declared_state`): a file with any
    error may hold a secret in an odd place (a typo'd field, a list), and a plaintext
    ``clientSecret`` (allowed by the Instance) must not be copied into the cache.
    """
    failed = {d.file for d in diagnostics if d.is_error}
    for display, (cache, key, blob) in loaded.cache_candidates.items():
        if display not in failed:
            cache.put(key, blob)
    loaded.cache_candidates.clear()


def cacheable(data: Any) -> bool:
    """A parsed document that may be copied into the parse cache.

    Only linkctl documents (plain or with an encrypted apiVersion), and none with a
    plaintext secret (a clientSecret, a secret-looking token or authorize parameter, a
    webhook key): another tool's document (a Kubernetes Secret's stringData) may hold
    anything.
    """
    if data is None:
        return True
    api_version = data.get("apiVersion") if isinstance(data, dict) else None
    if not isinstance(api_version, str) or not api_version.startswith((API_GROUP + "/", SOPS_PREFIX)):
        return False
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return True
    secret = spec.get("clientSecret")
    if isinstance(secret, str) and not secret.startswith(SOPS_PREFIX):
        return False
    for field in PARAM_FIELDS:  # a plaintext credential allowed by allowPlaintextSecrets
        params = spec.get(field)
        if isinstance(params, dict) and any(
            isinstance(key, str) and SECRET_LOOKING_KEY.search(key) and not is_encrypted(value)
            for key, value in params.items()
        ):
            return False
    targets = spec.get("notify")  # an Instance's webhook keys
    return not (
        isinstance(targets, list)
        and any(
            isinstance(t, dict) and isinstance(t.get("secret"), str) and not is_encrypted(t["secret"])
            for t in targets
        )
    )
