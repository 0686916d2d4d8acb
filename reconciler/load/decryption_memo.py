"""The decryption memo: SOPS files known to open with the identities at hand, for ``validate``.

``validate`` in pre-commit opened the same SOPS file on every run, and the SOPS reader, YAML
and the age and AES-GCM code were most of a warm run. Opening a file is a function of its
bytes and the identities offered: bytes that opened once with the same identities open
again, to the same values. An entry records only that fact. Its key is a SHA-256 of the
file's text, of every identity source (``SOPS_AGE_KEY``, ``SOPS_AGE_KEY_FILE`` and the
default keys file, read as :mod:`reconciler.sops.key_sources` reads them), of ``--ignore-mac``,
of the format the name says (YAML or JSON) and of linkctl's version and SOPS code; it holds
neither a value nor a key. An edited file (or one renamed .json), a key added or removed, other SOPS
code is a miss; ``SOPS_AGE_KEY_CMD`` (whose output may change from run to run) or a key
source that is not a readable regular file turns the memo off.

Only files whose one encrypted field is each document's ``spec.clientSecret`` are
remembered: no rule reads that value beyond its presence and emptiness, and the validation
cache entry of the same text (written only when its decrypted value passed) is what the
caller needs besides. A remembered file is loaded *vouched*: its ``ENC[…]`` values stand in
for the secrets, so it suits a caller that needs no secret value (``validate``), never
``plan``. Entries live in a private, content-keyed store like the parse cache's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from reconciler import __version__
from reconciler.load.documents import Document, is_encrypted
from reconciler.load.parse_cache import ParseCache, cache_home, source_fingerprint
from reconciler.sops.key_sources import UnreadableKeysFile, key_files, read_keys_file

_MEMO_FORMAT = "1"  # bump when what an entry vouches for changes
_VOUCHED_PATH: tuple[str | int, ...] = ("spec", "clientSecret")
_VOUCHED: frozenset[tuple[str | int, ...]] = frozenset({_VOUCHED_PATH})
_ENTRY = b"opened\n"
_OPENING_CODE = ("sops", "load/decryption_memo.py", "load/sops_overlay.py")


class DecryptionMemo:
    """Which SOPS texts opened before with this environment's identities (see the module)."""

    def __init__(self, blobs: ParseCache, identities: str, *, ignore_mac: bool) -> None:
        self._blobs = blobs
        self._salt = f"{_code_version()}\0{identities}\0{int(ignore_mac)}\0"

    @classmethod
    def for_env(cls, env: Mapping[str, str], *, ignore_mac: bool) -> DecryptionMemo | None:
        """The memo of this environment, or None (no cache, a key command, an unreadable key source)."""
        base = cache_home(env)
        if base is None:
            return None
        identities = identity_fingerprint(env)
        if identities is None:
            return None
        blobs = ParseCache(base / f"opened-{__version__}-{_MEMO_FORMAT}")
        return cls(blobs, identities, ignore_mac=ignore_mac)

    def _key(self, file_key: str, fmt: str) -> str:
        # The format too: the same text read as JSON (a file renamed to .json) may not open.
        return hashlib.sha256(f"{self._salt}{fmt}\0{file_key}".encode()).hexdigest()

    def opened_before(self, file_key: str, fmt: str) -> bool:
        """True when the text with parse-cache key ``file_key``, read as ``fmt``, opened here before."""
        return bool(file_key) and self._blobs.read(self._key(file_key, fmt)) == _ENTRY

    def remember(self, file_key: str, fmt: str, documents: Sequence[Document]) -> None:
        """Note that this text opened, if its only encrypted values are ``spec.clientSecret``."""
        if file_key and documents and all(vouchable(doc.encrypted_paths) for doc in documents):
            self._blobs.put(self._key(file_key, fmt), _ENTRY)


def vouchable(encrypted_paths: frozenset[tuple[str | int, ...]]) -> bool:
    """True when a document's encrypted values are its ``spec.clientSecret`` alone (or none)."""
    return encrypted_paths <= _VOUCHED


def vouch_into(documents: Sequence[Document]) -> bool:
    """Load a remembered SOPS file without opening it: the ``ENC[…]`` values stay, marked encrypted.

    False (nothing changed) when a document has another encrypted value than
    ``spec.clientSecret``: then the file is opened as usual.
    """
    found: list[frozenset[tuple[str | int, ...]]] = []
    for doc in documents:
        data = doc.data
        spec = data.get("spec") if isinstance(data, dict) else None
        secret = spec.get("clientSecret") if isinstance(spec, dict) else None
        paths = _VOUCHED if is_encrypted(secret) else frozenset()
        if _has_encrypted(data, skip=secret, top=True):
            return False
        found.append(paths)
    for doc, paths in zip(documents, found, strict=True):  # all or none: checked before any change
        if isinstance(doc.data, dict):
            doc.data.pop("sops", None)
        doc.encrypted_paths = paths
        doc.vouched = True
    return True


def _code_version() -> str:
    """linkctl's version, the memo's format and a fingerprint of the code that opens a file.

    That is :mod:`reconciler.sops`, the overlay onto the documents and this module: an edited
    checkout (or another build under the same version) must not vouch for what the old code
    opened.
    """
    parts = [__version__, _MEMO_FORMAT, *source_fingerprint(_OPENING_CODE)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _has_encrypted(node: object, *, skip: object, top: bool = False) -> bool:
    """Any ``ENC[…]`` value in ``node`` but ``skip`` (its clientSecret) and the top-level ``sops`` block."""
    if isinstance(node, dict):
        return any(not (top and k == "sops") and _has_encrypted(v, skip=skip) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_encrypted(item, skip=skip) for item in node)
    return is_encrypted(node) and node is not skip


def identity_fingerprint(env: Mapping[str, str]) -> str | None:
    """A SHA-256 of every age identity source sops would read; None when one cannot be read as it is."""
    if env.get("SOPS_AGE_KEY_CMD"):
        return None
    digest = hashlib.sha256(b"SOPS_AGE_KEY\0" + env.get("SOPS_AGE_KEY", "").encode() + b"\0")
    for label, path in key_files(env):
        try:
            content = read_keys_file(path)
        except UnreadableKeysFile:
            return None  # opened in full, where the keyring says why the source was not used
        digest.update(f"{label}\0{path}\0".encode() + hashlib.sha256(content).digest())
    return digest.hexdigest()
