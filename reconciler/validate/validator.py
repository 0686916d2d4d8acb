"""The semantic pass: one run over the loaded documents, every problem collected with its position.

:class:`Validator` holds the run's state (the Instance, names seen, diagnostics) and
applies the rules in order: instance, structure, provider fields, endpoints, scopes,
redirect URL, secrets, renames. Rules that stand alone live beside it (:mod:`.urls`,
:mod:`.secret_sources`, :mod:`.structure`, :mod:`.desired`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from reconciler.diagnostics import ERROR, WARNING, Diagnostic
from reconciler.domain.links import DesiredLink
from reconciler.domain.notify import NotifyTargetDecl
from reconciler.load import Document, LoadResult
from reconciler.models import Instance, OutgoingLink
from reconciler.oauth.providers import get_preset
from reconciler.validate.cache import Entry, ValidationCache, cacheable_paths, instance_entry, link_entry
from reconciler.validate.desired import desired_link
from reconciler.validate.names import check_renames, remember_name
from reconciler.validate.notify import check_notify
from reconciler.validate.results import ValidationResult
from reconciler.validate.secret_sources import (
    check_plaintext_params,
    plaintext_secret_params,
    resolve_secrets,
    secret_source,
)
from reconciler.validate.structure import check_structure
from reconciler.validate.urls import base_host, check_url, is_private_ip, redirect_url

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); a space would split it in two.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class Validator:
    """Holds the state of one validation run (instance, names seen, diagnostics)."""

    def __init__(self, loaded: LoadResult, env: Mapping[str, str]) -> None:
        self.loaded = loaded
        self.env = env
        self.diagnostics: list[Diagnostic] = list(loaded.diagnostics)
        self.instance: Instance | None = None
        self.instance_doc: Document | None = None
        self.links: list[DesiredLink] = []
        self._names: dict[str, Document] = {}
        self.notify: list[NotifyTargetDecl] = []
        # What the validation cache may keep of each valid document, by (file, index).
        self.entries: dict[tuple[str, int], Entry] = {}
        # Without a cache (LINKCTL_NO_CACHE, a fresh CI checkout) nothing is kept: no memory, no time.
        self._keep = bool(loaded.file_keys) and ValidationCache.for_env(env) is not None
        self.errors = sum(1 for d in self.diagnostics if d.is_error)

    def error(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        """Record an error at ``path`` in ``doc`` (the link it belongs to is then not desired)."""
        self.errors += 1
        self.diagnostics.append(doc.diagnostic(ERROR, message, path, **kw))

    def warn(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        """Record a warning at ``path`` in ``doc``."""
        self.diagnostics.append(doc.diagnostic(WARNING, message, path, **kw))

    # -- semantic pass ----------------------------------------------------------------
    def run(self) -> ValidationResult:
        """Check every loaded document once; the result holds all problems found."""
        links: list[tuple[Document, OutgoingLink]] = []
        for doc in self.loaded.documents:
            model = check_structure(self, doc)
            if isinstance(model, Instance):
                if self.instance_doc is not None:
                    first = self.instance_doc
                    self.error(
                        doc,
                        f"a second Instance document (the first is at {first.file}:{first.line})",
                        hint="declare exactly one Instance",
                        code="duplicate-instance",
                    )
                    continue
                self.instance, self.instance_doc = model, doc
            elif isinstance(model, OutgoingLink):
                links.append((doc, model))
            elif model is None and doc.kind == "OutgoingLink" and doc.name:
                self._remember_name(doc, doc.name)
        if self.instance is not None and self.instance_doc is not None:
            self._check_instance(self.instance_doc, self.instance)
        renames = [(doc, link.metadata.name, link.metadata.renamedFrom) for doc, link in links]
        # Each model is dropped once its link is checked: 10,000 models alive beside the
        # desired links they become was the peak memory of a cold plan.
        links.reverse()
        while links:
            doc, link = links.pop()
            if self._remember_name(doc, link.metadata.name):
                desired = self._check_link(doc, link)
                if desired is not None:
                    self.links.append(desired)
            del link
        check_renames(self, renames)
        return ValidationResult(
            self.diagnostics, self.instance, self.links, self.loaded.skipped, self.loaded.files, self.notify
        )

    def _remember_name(self, doc: Document, name: str) -> bool:
        return remember_name(self, self._names, doc, name)

    def _check_instance(self, doc: Document, instance: Instance) -> None:
        before, errors = len(self.diagnostics), self.errors
        check_url(
            self,
            doc,
            instance.spec.baseUrl,
            ("spec", "baseUrl"),
            what="baseUrl",
            allow_loopback=self._allow_loopback(),
            base=True,
        )
        self.notify = check_notify(self, doc, instance, env=self.env, roots=self.loaded.roots)
        # Webhook targets carry secrets read from the environment, which an entry never holds:
        # an Instance with any is validated in full on every run (and with it the whole run).
        if self._keep and self.errors == errors and cacheable_paths(doc) and not instance.spec.notify:
            self.entries[(doc.file, doc.index)] = instance_entry(
                doc, instance.metadata.name, instance.spec.baseUrl, self.diagnostics[before:]
            )

    def _allow_loopback(self) -> bool:
        return bool(self.instance and self.instance.spec.allowInsecureLoopback)

    def _allow_plaintext(self) -> bool:
        return bool(self.instance and self.instance.spec.allowPlaintextSecrets)

    def _check_link(self, doc: Document, link: OutgoingLink) -> DesiredLink | None:
        spec = link.spec
        name = link.metadata.name
        errors_before, before = self.errors, len(self.diagnostics)
        defaults = self.instance.spec.defaults if self.instance else None
        grant = spec.grant
        if defaults and defaults.grant and "grant" not in (doc.data.get("spec") or {}):
            grant = defaults.grant
        interactive = grant != "client_credentials"
        preset = get_preset(spec.provider)

        # provider-specific fields
        if spec.provider != "microsoft":
            for field in ("tenant", "cloud"):
                if getattr(spec, field) is not None:
                    self.error(
                        doc,
                        f"{field} applies only to provider microsoft",
                        ("spec", field),
                        code="provider-field",
                    )
        if spec.provider != "custom":
            for field in ("issuer", "authorizationEndpoint", "tokenEndpoint", "deviceAuthorizationEndpoint"):
                if getattr(spec, field) is not None:
                    self.error(
                        doc,
                        f"{field} is set by the {spec.provider} preset",
                        ("spec", field),
                        hint="remove it, or use provider: custom",
                        code="provider-field",
                    )
        if spec.provider == "google" and grant == "client_credentials":
            self.error(
                doc,
                "Google does not support the client_credentials grant for OAuth clients",
                ("spec", "grant"),
                hint="use authorization_code (or a service account outside linkctl)",
                code="unsupported-grant",
            )

        # endpoints
        if spec.provider == "custom":
            self._check_custom_endpoints(doc, link, grant)
        for field in (
            "authorizationEndpoint",
            "tokenEndpoint",
            "revocationEndpoint",
            "deviceAuthorizationEndpoint",
            "issuer",
        ):
            value = getattr(spec, field)
            if value is not None:
                check_url(
                    self, doc, value, ("spec", field), what=field, allow_loopback=self._allow_loopback()
                )

        # scopes and refresh-token prerequisites
        for index, scope in enumerate(spec.scopes):
            if not _SCOPE_TOKEN.fullmatch(scope):
                self.error(
                    doc,
                    f"scope {scope!r} is not a single scope token (RFC 6749 §3.3: no spaces, quotes, "
                    "backslashes or control characters, never empty)",
                    ("spec", "scopes", index),
                    hint="list each scope as its own item of spec.scopes",
                    code="bad-scope",
                )
        if not spec.scopes:
            if interactive:
                self.error(
                    doc,
                    "scopes are missing",
                    ("spec",),
                    hint="list the scopes the app needs under spec.scopes",
                    code="no-scopes",
                )
            else:
                self.warn(doc, "no scopes: the provider's default scope applies", ("spec",), code="no-scopes")
        if interactive and spec.refresh.expectRefreshToken:
            if spec.provider == "custom" and "offline_access" not in spec.scopes:
                self.error(
                    doc,
                    "no refresh token will be issued without the offline_access scope",
                    ("spec", "scopes"),
                    hint="add offline_access to spec.scopes, or set spec.refresh.expectRefreshToken: false "
                    "if this provider issues refresh tokens without it",
                    code="no-refresh-token",
                )
            if spec.provider == "google":
                for param, wanted in preset.authorize_params.items():
                    got = spec.authorizeParams.get(param)
                    if got is not None and got != wanted:
                        self.error(
                            doc,
                            f"Google issues no refresh token unless {param}={wanted}",
                            ("spec", "authorizeParams", param),
                            hint=f"remove it; the preset sets {param}={wanted}",
                            code="no-refresh-token",
                        )

        # redirect URL
        redirect: str | None = None
        if interactive or grant == "authorization_code":
            if self.instance is None:
                self.error(
                    doc,
                    "no Instance document declares spec.baseUrl, so this link has no redirect URL",
                    hint="add a document `kind: Instance` with spec.baseUrl: https://your.app.example",
                    code="no-instance",
                )
            else:
                redirect = redirect_url(self.instance.spec.baseUrl, name)
                host = base_host(self.instance.spec.baseUrl)
                if spec.provider == "google" and is_private_ip(host):
                    self.error(
                        doc,
                        f"Google refuses redirect URLs on private or loopback addresses ({host})",
                        hint="give the Instance a public host name in spec.baseUrl",
                        code="redirect-private-ip",
                    )

        check_plaintext_params(self, doc, link, allow_plaintext=self._allow_plaintext())
        secret_at = len(self.diagnostics) - before
        secrets = resolve_secrets(
            self,
            doc,
            link,
            env=self.env,
            roots=self.loaded.roots,
            allow_plaintext=self._allow_plaintext(),
        )
        if spec.clientId is None:
            self.warn(
                doc,
                "clientId is not declared yet: the link is stored with pending credentials",
                ("spec",),
                hint=f"register the app with redirect URL from `linkctl redirect-url {name}`, "
                "then add clientId and clientSecret",
                code="pending-credentials",
            )
        elif spec.clientSecret is None and grant != "device_code":
            self.warn(
                doc,
                "clientSecret is not declared: the link cannot get tokens until it is",
                ("spec",),
                code="pending-credentials",
            )

        if self.errors > errors_before:
            return None
        desired = desired_link(self, doc, link, grant, redirect, secrets, instance=self.instance)
        if self._keep and cacheable_paths(doc):
            kind, reference = secret_source(doc, link)
            # A plaintext secret (allowed by allowPlaintextSecrets) would sit in the entry.
            if kind != "plain" and not plaintext_secret_params(doc, link):
                entry = link_entry(doc, desired, self.diagnostics[before:], (kind, reference, secret_at))
                self.entries[(doc.file, doc.index)] = entry
        return desired

    def _check_custom_endpoints(self, doc: Document, link: OutgoingLink, grant: str) -> None:
        spec = link.spec
        needed = {
            "authorization_code": ("authorizationEndpoint", "tokenEndpoint"),
            "device_code": ("deviceAuthorizationEndpoint", "tokenEndpoint"),
            "client_credentials": ("tokenEndpoint",),
        }[grant]
        missing = [f for f in needed if getattr(spec, f) is None]
        if missing and spec.issuer is None:
            self.error(
                doc,
                f"a custom {grant} link needs {' and '.join(missing)}, or issuer for discovery",
                ("spec",),
                hint="declare the endpoints, or spec.issuer to discover them",
                code="no-endpoints",
            )
        for field in ("authorizationEndpoint", "tokenEndpoint", "issuer", "deviceAuthorizationEndpoint"):
            value = getattr(spec, field)
            host = urlsplit(value).hostname if value else None
            for preset_name in ("google", "microsoft"):
                if host and host in get_preset(preset_name).hosts:
                    self.error(
                        doc,
                        f"{field} points at {preset_name.title()} ({host}) but provider is custom",
                        ("spec", field),
                        hint=f"use provider: {preset_name}: the preset adds what is needed"
                        " for a refresh token",
                        code="custom-preset-host",
                    )
                    return
