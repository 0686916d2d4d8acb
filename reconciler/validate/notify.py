"""``spec.notify`` of the Instance: webhook URLs checked and their signing secrets read.

Called by :class:`reconciler.validate.validator.Validator` for the Instance document.
A URL must be https (plain http only on loopback with ``allowInsecureLoopback``), must
not carry credentials and must not be declared twice; each ``secret`` comes through the
same sources as a clientSecret (SOPS, ``fromEnv``, ``fromFile``; plaintext refused).
What passes becomes a :class:`reconciler.domain.notify.NotifyTargetDecl`, which apply
seals into the store for the keeper and ``serve`` to deliver with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from reconciler.domain.notify import NotifyTargetDecl, target_origin
from reconciler.load import Document
from reconciler.models import Instance
from reconciler.secrets import Secret
from reconciler.validate.results import Reporter
from reconciler.validate.secret_sources import resolve_source
from reconciler.validate.urls import check_url

# An HMAC key shorter than this is guessable offline from one signed body.
MIN_SECRET_LENGTH = 16


def check_notify(
    report: Reporter,
    doc: Document,
    instance: Instance,
    *,
    env: Mapping[str, str],
    roots: Sequence[str],
) -> list[NotifyTargetDecl]:
    """The Instance's webhook targets, each URL checked and secret read (problems reported)."""
    targets: list[NotifyTargetDecl] = []
    seen: dict[str, int] = {}
    for index, target in enumerate(instance.spec.notify):
        path: tuple[str | int, ...] = ("spec", "notify", index)
        url_ok = check_url(
            report,
            doc,
            target.url,
            (*path, "url"),
            what=f"notify[{index}].url",
            allow_loopback=instance.spec.allowInsecureLoopback,
        )
        encrypted_url = (*path, "url") in doc.encrypted_paths
        if url_ok and urlsplit(target.url).fragment:
            report.error(
                doc,
                f"notify[{index}].url has a #fragment, which is never sent to the receiver",
                (*path, "url"),
                hint="remove the #... part",
                code="bad-url",
            )
            url_ok = False
        if url_ok and target.url in seen:
            report.error(
                doc,
                f"notify[{index}].url is the same as notify[{seen[target.url]}].url"
                " (the receiver would get every change twice)",
                (*path, "url"),
                hint="declare each webhook URL once",
                code="duplicate-notify",
            )
            url_ok = False
        seen.setdefault(target.url, index)
        secret = resolve_source(
            report,
            doc,
            target.secret,
            (*path, "secret"),
            what=f"notify[{index}].secret",
            env=env,
            roots=roots,
            allow_plaintext=instance.spec.allowPlaintextSecrets,
        )
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            report.error(
                doc,
                f"notify[{index}].secret is shorter than {MIN_SECRET_LENGTH} characters",
                (*path, "secret"),
                hint="generate one: `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                code="weak-notify-secret",
            )
            secret = None
        if url_ok and secret is not None:
            targets.append(
                NotifyTargetDecl(
                    url=Secret(target.url),
                    secret=secret,
                    origin=target_origin(target.url),
                    url_encrypted=encrypted_url,
                )
            )
    return targets
