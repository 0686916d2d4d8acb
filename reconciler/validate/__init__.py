"""Validate: documents → desired links, or diagnostics saying what is wrong and how to fix it.

Two passes over the loaded documents: a structural one (the pydantic models that
also generate ``schemas/``) and semantic rules (HTTPS, redirect URLs, refresh
token prerequisites, duplicate names, secret sources). Every problem is
collected — never only the first — with file:line:col and a JSON path.
The result feeds ``plan``; nothing here touches the store or the network.

The package, by concern: :mod:`.validator` (the run), :mod:`.structure` (the pydantic
pass), :mod:`.urls`, :mod:`.secret_sources`, :mod:`.desired` (the effective spec) and
:mod:`.results`. Importing the package is cheap: the pydantic models are imported on the
first :func:`validate`, so :func:`declared_state` can import them while files are parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from reconciler.domain.links import DesiredLink
from reconciler.load import LoadResult, load_paths, remember_parsed
from reconciler.validate.results import ValidationResult
from reconciler.validate.urls import REDIRECT_PATH, is_loopback_host, redirect_url

__all__ = [
    "REDIRECT_PATH",
    "DesiredLink",
    "ValidationResult",
    "declared_state",
    "is_loopback_host",
    "redirect_url",
    "validate",
]


def validate(loaded: LoadResult, *, env: Mapping[str, str]) -> ValidationResult:
    """Check loaded documents; return diagnostics and (when valid) the desired links."""
    from reconciler.validate.validator import Validator

    return Validator(loaded, env).run()


def declared_state(
    paths: Iterable[str],
    *,
    env: Mapping[str, str],
    ignore_mac: bool = False,
    meanwhile: Callable[[], object] | None = None,
    secret_values: bool = True,
) -> ValidationResult:
    """Load and validate ``paths``, then cache the parses and conclusions of files that validated cleanly.

    The one way to read declared state: the parse cache may keep only files validation
    passed (see :func:`reconciler.load.remember_parsed`), so loading and remembering are
    never left to the caller. Unchanged files are not validated again (the validation
    cache, :mod:`.cache`): only what depends on the environment or on other files is.
    ``meanwhile`` runs while files are parsed, after the import of the validator's models
    when a file is not in the parse cache (then validation will need them).

    ``secret_values=False`` (``validate``: diagnostics and names, never a secret) lets SOPS
    files that opened before stay closed (:mod:`reconciler.load.decryption_memo`); their
    links' secrets are then ``ENC[…]`` stand-ins. Only a full replay from the validation
    cache may use such documents: on a miss the files are loaded again, opened.
    """
    from reconciler.validate.cache import remember, replay

    paths = list(paths)  # read twice when a vouched load must be redone

    def parsing() -> None:
        import reconciler.validate.validator  # noqa: F401  (pydantic: the costliest import)

    loaded = load_paths(
        paths, env=env, ignore_mac=ignore_mac, meanwhile=meanwhile, on_parse=parsing, vouch=not secret_values
    )
    result = replay(loaded, env=env)
    if result is None and any(doc.vouched for doc in loaded.documents):
        # The rules on a stand-in would judge ciphertext: validate what the files really hold.
        loaded = load_paths(paths, env=env, ignore_mac=ignore_mac, on_parse=parsing)
    if result is None:
        from reconciler.validate.validator import Validator

        validator = Validator(loaded, env)
        result = validator.run()
        remember(loaded, validator.entries, result.diagnostics, env=env)
    remember_parsed(loaded, result.diagnostics)
    return result
