"""Secret sources: clientSecret and webhook secrets from sops, ``fromEnv`` or ``fromFile``; no plaintext.

A refusal never quotes what may be the secret itself (a value pasted as an env name).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.load import Document
from reconciler.secrets import PARAM_FIELDS, SECRET_LOOKING_KEY, Secret
from reconciler.validate.results import Reporter

if TYPE_CHECKING:  # pydantic: imported by the validator, never by a cache replay
    from reconciler.models import OutgoingLink

# linkctl's and SOPS's own settings (state key, age identities) must never be sent to a provider.
_RESERVED_ENV_PREFIXES = ("LINKCTL_", "SOPS_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# A client secret or assertion is a few hundred bytes; 64 KiB leaves room for a JWT
# with a certificate chain while a wrong file (a log, an image) is refused at once.
MAX_SECRET_FILE_BYTES = 64 * 1024


class _SecretFileRefused(Exception):
    """A ``fromFile`` secret that is not read: message, hint and diagnostic code."""

    def __init__(self, message: str, hint: str, code: str) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


def _inside(real: str, directories: Sequence[str]) -> bool:
    """True when the resolved path ``real`` is one of ``directories`` or below one (after symlinks)."""
    for directory in directories:
        top = os.path.realpath(directory)
        if os.path.commonpath([real, top]) == top:
            return True
    return False


def _not_regular(mode: int) -> str | None:
    """What a non-regular file is (for the message), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


_ENV_NAME_HINT = "fromEnv takes the NAME of an environment variable (e.g. WIKI_CLIENT_SECRET), not its value"


def _refused_env_name(name: str) -> str | None:
    """Why ``fromEnv: name`` is refused (never quoting a name that may be a pasted secret), or None."""
    if not _ENV_NAME.fullmatch(name):
        return "fromEnv is not a valid environment variable name (is it the secret itself?)"
    if name.upper().startswith(_RESERVED_ENV_PREFIXES):
        return f"fromEnv {name} is one of linkctl's or SOPS's own variables (LINKCTL_*, SOPS_*)"
    return None


def plaintext_secret_params(doc: Document, link: OutgoingLink) -> list[tuple[str, str]]:
    """``(field, key)`` of every plaintext value under a secret-looking parameter key."""
    return [
        (field, key)
        for field in PARAM_FIELDS
        for key in getattr(link.spec, field)
        if SECRET_LOOKING_KEY.search(key) and ("spec", field, key) not in doc.encrypted_paths
    ]


def check_plaintext_params(
    report: Reporter, doc: Document, link: OutgoingLink, *, allow_plaintext: bool
) -> None:
    """A plaintext value under a secret-looking parameter key is an error, as for clientSecret."""
    if allow_plaintext:
        return
    for field, key in plaintext_secret_params(doc, link):
        report.error(
            doc,
            f"{field}.{key} looks like a secret and is in plaintext",
            ("spec", field, key),
            hint="encrypt it: `linkctl secrets encrypt --in-place --encrypted-regex "
            f"'^(clientSecret|{key})$' FILE` (or sops)",
            code="plaintext-secret",
        )


def source_of(doc: Document, source: object, path: tuple[str | int, ...]) -> tuple[str, str]:
    """Where a declared secret comes from: ``(kind, reference)``; kind: env, file, sops, plain or none.

    The reference is an environment variable's name or a file's path, never a secret: the
    validation cache keeps it, and :func:`read_source` reads the value again on every run.
    """
    from reconciler.models import FromEnv, FromFile  # the validator has pydantic loaded already

    if source is None:
        return "none", ""
    if isinstance(source, FromEnv):
        return "env", source.fromEnv
    if isinstance(source, FromFile):
        return "file", source.fromFile
    return ("sops" if path in doc.encrypted_paths else "plain"), ""


def secret_source(doc: Document, link: OutgoingLink) -> tuple[str, str]:
    """Where a link's clientSecret comes from (see :func:`source_of`)."""
    return source_of(doc, link.spec.clientSecret, _CLIENT_SECRET)


_CLIENT_SECRET: tuple[str | int, ...] = ("spec", "clientSecret")


def resolve_secrets(
    report: Reporter,
    doc: Document,
    link: OutgoingLink,
    *,
    env: Mapping[str, str],
    roots: Sequence[str],
    allow_plaintext: bool,
) -> dict[str, Secret]:
    """The link's clientSecret read from where it is declared (errors reported, never the value)."""
    value = resolve_source(
        report,
        doc,
        link.spec.clientSecret,
        _CLIENT_SECRET,
        what="clientSecret",
        env=env,
        roots=roots,
        allow_plaintext=allow_plaintext,
    )
    return {} if value is None else {"clientSecret": value}


def resolve_source(
    report: Reporter,
    doc: Document,
    source: object,
    path: tuple[str | int, ...],
    *,
    what: str,
    env: Mapping[str, str],
    roots: Sequence[str],
    allow_plaintext: bool,
) -> Secret | None:
    """One declared secret (SOPS, ``fromEnv``, ``fromFile``) read, or None with the error reported."""
    kind, reference = source_of(doc, source, path)
    if kind in ("sops", "plain"):
        assert isinstance(source, str)
        reference = source
    return read_source(
        report, doc, kind, reference, path, what=what, env=env, roots=roots, allow_plaintext=allow_plaintext
    )


def read_source(
    report: Reporter,
    doc: Document,
    kind: str,
    reference: str,
    path: tuple[str | int, ...],
    *,
    what: str,
    env: Mapping[str, str],
    roots: Sequence[str],
    allow_plaintext: bool,
) -> Secret | None:
    """A secret from its :func:`source_of` (for sops and plain, ``reference`` is the value), or None."""
    if kind == "none":
        return None
    if kind == "env":
        refusal = _refused_env_name(reference)
        if refusal:
            report.error(doc, refusal, (*path, "fromEnv"), hint=_ENV_NAME_HINT, code="secret-env-refused")
            return None
        value = env.get(reference)
        if value is None:
            report.error(
                doc,
                f"environment variable {reference} is not set",
                (*path, "fromEnv"),
                hint=f"export {reference}=... before running linkctl",
                code="secret-unresolved",
            )
            return None
    elif kind == "file":
        try:
            value = read_secret_file(doc, reference, env=env, roots=roots)
        except _SecretFileRefused as refused:
            report.error(doc, refused.message, (*path, "fromFile"), hint=refused.hint, code=refused.code)
            return None
    else:
        value = reference
        if kind == "plain" and not allow_plaintext:
            report.error(
                doc,
                f"{what} is in plaintext",
                path,
                hint="encrypt it: `linkctl secrets encrypt --in-place FILE` (or sops), or use "
                "{fromEnv: NAME} / {fromFile: PATH}",
                code="plaintext-secret",
            )
            return None
    if not value:
        report.error(doc, f"{what} is empty", path, code="secret-empty")
        return None
    return Secret(value)


def read_secret_file(doc: Document, declared: str, *, env: Mapping[str, str], roots: Sequence[str]) -> str:
    """The text of a ``fromFile`` secret, or :class:`_SecretFileRefused` saying why not."""
    secret_dirs = [d for d in env.get("LINKCTL_SECRET_DIRS", "").split(":") if os.path.isabs(d)]
    if os.path.isabs(declared):
        shown = declared
        if not _inside(os.path.realpath(declared), secret_dirs):
            raise _SecretFileRefused(
                f"fromFile {declared!r} is an absolute path outside LINKCTL_SECRET_DIRS",
                "use a path relative to the declaring file, or list its directory in "
                "LINKCTL_SECRET_DIRS (colon-separated, e.g. /run/secrets)",
                "secret-file-refused",
            )
    else:
        shown = str(Path(os.path.dirname(doc.file)) / declared)
        roots = roots or [os.path.dirname(doc.file) or "."]
        if not _inside(os.path.realpath(shown), [*roots, *secret_dirs]):
            raise _SecretFileRefused(
                f"fromFile {declared!r} resolves outside the directories given as input",
                "keep the secret file inside the directory tree given to linkctl (symlinks "
                "included), or use an absolute path under a directory listed in LINKCTL_SECRET_DIRS",
                "secret-file-refused",
            )
    real = os.path.realpath(shown)
    try:
        kind = _not_regular(os.stat(real).st_mode)  # before open: a device is never opened
        if kind is None:
            # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                kind = _not_regular(info.st_mode)
                raw = b"" if kind else handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise _SecretFileRefused(
            f"cannot read secret file {shown!r}: {exc.strerror}",
            "fromFile paths are relative to the declaring file",
            "secret-unresolved",
        ) from None
    if kind:
        raise _SecretFileRefused(
            f"secret file {shown!r} is not a regular file ({kind})",
            "fromFile must name a regular file holding the secret",
            "secret-file-refused",
        )
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise _SecretFileRefused(
            f"secret file {shown!r} is over the {MAX_SECRET_FILE_BYTES} byte limit",
            "a client secret is a short string: is this the right file?",
            "secret-file-refused",
        )
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _SecretFileRefused(
            f"cannot read secret file {shown!r}: it is not UTF-8 text",
            "fromFile paths are relative to the declaring file",
            "secret-unresolved",
        ) from None
