"""Validate: documents → desired links, or diagnostics saying what is wrong and how to fix it.

Two passes over the loaded documents: a structural one (the pydantic models that
also generate ``schemas/``) and semantic rules (HTTPS, redirect URLs, refresh
token prerequisites, duplicate names, secret sources). Every problem is
collected — never only the first — with file:line:col and a JSON path.
The result feeds ``plan``; nothing here touches the store or the network.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import itertools
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from reconciler.diagnostics import ERROR, WARNING, Diagnostic, has_errors
from reconciler.domain.links import DesiredLink
from reconciler.load import Document, LoadResult
from reconciler.models import MODELS, FromEnv, FromFile, Instance, OutgoingLink
from reconciler.oauth.providers import get_preset, resolve
from reconciler.secrets import Secret

REDIRECT_PATH = "/oauth/callback/{name}"
# pydantic names the members of the clientSecret union in error locations.
_UNION_MEMBERS = {"str", "FromEnv", "FromFile"}
# A document is found by these, so they stay readable even when sops encrypted them.
IDENTITY_PATHS = frozenset({("apiVersion",), ("kind",), ("metadata", "name")})
# Fields whose encrypted values are sealed in the store and revealed only in requests;
# every other field is read by linkctl itself (discovery, URLs, plans) and stays readable.
SEALABLE_MAPS = ("tokenParams", "authorizeParams")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); a space would split it in two.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclasses.dataclass
class ValidationResult:
    """What validation found: diagnostics, the instance, and the desired links."""

    diagnostics: list[Diagnostic]
    instance: Instance | None
    links: list[DesiredLink]
    skipped: list[str]
    files: list[str]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not has_errors(self.diagnostics)


def redirect_url(base_url: str, name: str) -> str:
    """The redirect URL of a link: a pure function of the base URL and the link name."""
    return base_url.rstrip("/") + REDIRECT_PATH.format(name=name)


_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_BAD_HOST_CHARS = re.compile(r"[\x00-\x20\x7f<>\"{}|\\^`%]")


def _url_problem(url: str, *, endpoint: bool) -> tuple[str, str] | None:
    """What makes an absolute URL unsafe to compare or send to (message, fix), or None."""
    # Browsers read a backslash as a slash, Python's urlsplit does not: the two would disagree
    # on the host.
    if "\\" in url or _BAD_HOST_CHARS.search(url.replace("%", "")):
        return (
            "contains a space, backslash or character not allowed in a URL",
            "percent-encode it or remove it",
        )
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or _BAD_HOST_CHARS.search(host):
        return (
            "has an invalid host or port (ports are 1-65535)",
            "write the host name and a port from 1 to 65535",
        )
    if host.endswith("."):
        return f"host {host!r} ends with a dot", f"write {host.rstrip('.')!r}"
    if host.startswith("[") or ":" in host:
        try:
            mapped = ipaddress.IPv6Address(host.strip("[]")).ipv4_mapped
        except ValueError:
            return f"host {host!r} is not a valid IPv6 address", "write the address in canonical form"
        if mapped is not None:
            return f"host {host!r} is an IPv4-mapped IPv6 address", f"write {str(mapped)!r}"
    elif all(_NUMERIC_LABEL.fullmatch(label) for label in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return (
                f"host {host!r} is a non-canonical numeric address (resolvers read it as an IPv4 address)",
                "write the address as four decimal numbers, e.g. 127.0.0.1",
            )
    if endpoint and (parts.fragment or url.endswith("#")):
        return "must not have a fragment (RFC 6749 §3.1, §3.2)", "remove the #... part"
    return None


def is_loopback_host(host: str | None) -> bool:
    """True for localhost names and loopback IP addresses."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.cache
def _base_host(base_url: str) -> str | None:
    return urlsplit(base_url).hostname


@functools.cache
def _is_private_ip(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return host == "localhost"
    return address.is_private or address.is_loopback or address.is_link_local


class _Validator:
    """Holds the state of one validation run (instance, names seen, diagnostics)."""

    def __init__(self, loaded: LoadResult, env: Mapping[str, str]) -> None:
        self.loaded = loaded
        self.env = env
        self.diagnostics: list[Diagnostic] = list(loaded.diagnostics)
        self.instance: Instance | None = None
        self.instance_doc: Document | None = None
        self.links: list[DesiredLink] = []
        self._names: dict[str, Document] = {}
        self.errors = sum(1 for d in self.diagnostics if d.is_error)

    def error(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        self.errors += 1
        self.diagnostics.append(doc.diagnostic(ERROR, message, path, **kw))

    def warn(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        self.diagnostics.append(doc.diagnostic(WARNING, message, path, **kw))

    # -- structural pass -------------------------------------------------------------
    def structural(self, doc: Document) -> BaseModel | None:
        model = MODELS[doc.kind or ""]
        try:
            return model.model_validate(doc.data)
        except ValidationError as exc:
            self._report(doc, exc, model)
            return None

    def _report(self, doc: Document, exc: ValidationError, model: type[BaseModel]) -> None:
        reported: set[tuple[Any, ...]] = set()
        for err in exc.errors(include_url=False, include_input=False):
            raw_loc = tuple(err["loc"])
            cut = next(
                (
                    i
                    for i, p in enumerate(raw_loc)
                    if i and raw_loc[i - 1] == "clientSecret" and isinstance(p, str) and p in _UNION_MEMBERS
                ),
                None,
            )
            union = cut is not None
            loc = raw_loc[:cut] if cut is not None else raw_loc
            kind = err["type"]
            if union:
                key = (loc, "union")
                if key in reported:
                    continue
                reported.add(key)
                typo = next(
                    (
                        str(e["loc"][-1])
                        for e in exc.errors()
                        if e["type"] == "extra_forbidden" and tuple(e["loc"][: len(loc)]) == loc
                    ),
                    None,
                )
                close = difflib.get_close_matches(typo, ["fromEnv", "fromFile"], n=1) if typo else []
                self.error(
                    doc,
                    "clientSecret must be an encrypted string, {fromEnv: NAME} or {fromFile: PATH}",
                    loc,
                    hint=f"did you mean {close[0]!r}?"
                    if close
                    else "encrypt it with `linkctl secrets encrypt --in-place FILE`, or reference it",
                    code="secret-source",
                )
                continue
            if (loc, kind) in reported:
                continue
            reported.add((loc, kind))
            if kind == "extra_forbidden":
                field = str(loc[-1])
                known = _known_fields(model, loc[:-1])
                close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else (f"known fields here: {', '.join(sorted(known))}" if known else None)
                )
                self.error(doc, f"unknown field {field!r}", loc, hint=hint, code="unknown-field", key=True)
            elif kind == "missing":
                self.error(doc, f"required field {loc[-1]!r} is missing", loc, code="missing-field")
            elif kind in ("string_type", "int_type", "bool_type", "dict_type", "list_type", "model_type"):
                expected = kind.split("_")[0].replace("dict", "mapping").replace("model", "mapping")
                hint = "quote the value" if expected == "string" else None
                self.error(
                    doc,
                    f"expected a {expected}, got {_type_name(doc, loc)}",
                    loc,
                    hint=hint,
                    code="wrong-type",
                )
            elif kind == "string_pattern_mismatch" and loc[:1] == ("metadata",):
                value = _value_at(doc, loc)
                suggestion = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-") if value else ""
                self.error(
                    doc,
                    f"{loc[-1]} {value!r} is not a DNS label: use lowercase letters, digits and '-',"
                    " starting and ending with a letter or digit",
                    loc,
                    hint=f"for example {suggestion!r}" if suggestion else None,
                    code="bad-name",
                )
            else:
                self.error(doc, err["msg"], loc, code=kind.replace("_", "-"))

    # -- semantic pass ----------------------------------------------------------------
    def run(self) -> ValidationResult:
        links: list[tuple[Document, OutgoingLink]] = []
        for doc in self.loaded.documents:
            model = self.structural(doc)
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
        for doc, link in links:
            if self._remember_name(doc, link.metadata.name):
                desired = self._check_link(doc, link)
                if desired is not None:
                    self.links.append(desired)
        self._check_renames(links)
        return ValidationResult(
            self.diagnostics, self.instance, self.links, self.loaded.skipped, self.loaded.files
        )

    def _remember_name(self, doc: Document, name: str) -> bool:
        first = self._names.get(name)
        if first is not None and first is not doc:
            line, col = first.locate(("metadata", "name"))
            self.error(
                doc,
                f"link {name!r} is declared twice (also at {first.file}:{line}:{col})",
                ("metadata", "name"),
                hint="link names must be unique across all files",
                code="duplicate-name",
            )
            return False
        self._names[name] = doc
        return True

    def _check_instance(self, doc: Document, instance: Instance) -> None:
        self._check_url(doc, instance.spec.baseUrl, ("spec", "baseUrl"), what="baseUrl", base=True)

    def _allow_loopback(self) -> bool:
        return bool(self.instance and self.instance.spec.allowInsecureLoopback)

    def _check_url(
        self, doc: Document, url: str, path: Sequence[str | int], *, what: str, base: bool = False
    ) -> bool:
        if not self._check_url_credentials(doc, url, path, what=what):
            return False
        parts = urlsplit(url)
        encrypted = tuple(path) in doc.encrypted_paths  # checked, never quoted
        if parts.scheme not in ("https", "http") or not parts.hostname:
            shown = "an encrypted value" if encrypted else repr(url)
            self.error(doc, f"{what} must be an absolute https:// URL, got {shown}", path, code="bad-url")
            return False
        problem = _url_problem(url, endpoint=not base)
        if problem:
            message, hint = problem
            self.error(doc, f"{what} {message}", path, hint=hint, code="bad-url")
            return False
        if parts.scheme == "http":
            if not is_loopback_host(parts.hostname):
                self.error(
                    doc,
                    f"{what} must use https (plain http is allowed only for loopback hosts)",
                    path,
                    hint="use https://" if encrypted else f"use {url.replace('http://', 'https://', 1)}",
                    code="insecure-url",
                )
                return False
            if not self._allow_loopback():
                self.error(
                    doc,
                    f"{what} uses plain http on a loopback host",
                    path,
                    hint="for local testing set spec.allowInsecureLoopback: true in the Instance document",
                    code="insecure-url",
                )
                return False
        if base and (parts.query or parts.fragment):
            self.error(doc, "baseUrl must not have a query or fragment", path, code="bad-url")
            return False
        return True

    def _check_url_credentials(
        self, doc: Document, url: str, path: Sequence[str | int], *, what: str
    ) -> bool:
        # Checked before anything that quotes the URL: a password in it must never be echoed.
        # The authority ends where a browser ends it: backslashes count as slashes there.
        authority = re.split(r"[/\\?#]", url.partition("://")[2], maxsplit=1)[0]
        if "@" not in authority:
            return True
        self.error(
            doc,
            f"{what} must not contain credentials (user:password@)",
            path,
            hint="remove them from the URL; a client secret belongs in clientSecret",
            code="url-credentials",
        )
        return False

    def _check_link(self, doc: Document, link: OutgoingLink) -> DesiredLink | None:
        spec = link.spec
        name = link.metadata.name
        errors_before = self.errors
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
                self._check_url(doc, value, ("spec", field), what=field)

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
                host = _base_host(self.instance.spec.baseUrl)
                if spec.provider == "google" and _is_private_ip(host):
                    self.error(
                        doc,
                        f"Google refuses redirect URLs on private or loopback addresses ({host})",
                        hint="give the Instance a public host name in spec.baseUrl",
                        code="redirect-private-ip",
                    )

        self._check_plaintext_params(doc, link)
        secrets = self._resolve_secrets(doc, link)
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
        return self._desired(doc, link, grant, redirect, secrets)

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

    def _check_plaintext_params(self, doc: Document, link: OutgoingLink) -> None:
        """A plaintext value under a secret-looking parameter key is an error, as for clientSecret."""
        if self.instance and self.instance.spec.allowPlaintextSecrets:
            return
        for field in ("tokenParams", "authorizeParams"):
            for key in getattr(link.spec, field):
                path = ("spec", field, key)
                if _SECRET_PARAM.search(key) and path not in doc.encrypted_paths:
                    self.error(
                        doc,
                        f"{field}.{key} looks like a secret and is in plaintext",
                        path,
                        hint="encrypt it: `linkctl secrets encrypt --in-place --encrypted-regex "
                        f"'^(clientSecret|{key})$' FILE` (or sops)",
                        code="plaintext-secret",
                    )

    def _resolve_secrets(self, doc: Document, link: OutgoingLink) -> dict[str, Secret]:
        secrets: dict[str, Secret] = {}
        source = link.spec.clientSecret
        path = ("spec", "clientSecret")
        if source is None:
            return secrets
        if isinstance(source, FromEnv):
            refusal = _refused_env_name(source.fromEnv)
            if refusal:
                self.error(doc, refusal, (*path, "fromEnv"), hint=_ENV_NAME_HINT, code="secret-env-refused")
                return secrets
            value = self.env.get(source.fromEnv)
            if value is None:
                self.error(
                    doc,
                    f"environment variable {source.fromEnv} is not set",
                    (*path, "fromEnv"),
                    hint=f"export {source.fromEnv}=... before running linkctl",
                    code="secret-unresolved",
                )
                return secrets
        elif isinstance(source, FromFile):
            try:
                value = self._read_secret_file(doc, source.fromFile)
            except _SecretFileRefused as refused:
                self.error(doc, refused.message, (*path, "fromFile"), hint=refused.hint, code=refused.code)
                return secrets
        else:
            value = source
            if path not in doc.encrypted_paths and not (
                self.instance and self.instance.spec.allowPlaintextSecrets
            ):
                self.error(
                    doc,
                    "clientSecret is in plaintext",
                    path,
                    hint="encrypt it: `linkctl secrets encrypt --in-place FILE` (or sops), or use "
                    "{fromEnv: NAME} / {fromFile: PATH}",
                    code="plaintext-secret",
                )
                return secrets
        if not value:
            self.error(doc, "clientSecret is empty", path, code="secret-empty")
            return secrets
        secrets["clientSecret"] = Secret(value)
        return secrets

    def _read_secret_file(self, doc: Document, declared: str) -> str:
        """The text of a ``fromFile`` secret, or :class:`_SecretFileRefused` saying why not."""
        secret_dirs = [d for d in self.env.get("LINKCTL_SECRET_DIRS", "").split(":") if os.path.isabs(d)]
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
            roots = self.loaded.roots or [os.path.dirname(doc.file) or "."]
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

    def _desired(
        self, doc: Document, link: OutgoingLink, grant: str, redirect: str | None, secrets: dict[str, Secret]
    ) -> DesiredLink:
        spec = link.spec
        defaults = self.instance.spec.defaults if self.instance else None
        declared = doc.data.get("spec") or {}
        raw = {
            "provider": spec.provider,
            "scopes": list(spec.scopes),
            "authorizeParams": dict(spec.authorizeParams),
            "tenant": spec.tenant,
            "cloud": spec.cloud,
            "clientAuth": spec.clientAuth or (defaults.clientAuth if defaults else None),
            "authorizationEndpoint": spec.authorizationEndpoint,
            "tokenEndpoint": spec.tokenEndpoint,
            "revocationEndpoint": spec.revocationEndpoint,
            "deviceAuthorizationEndpoint": spec.deviceAuthorizationEndpoint,
            "issuer": spec.issuer,
        }
        resolved = resolve(raw)
        scopes = list(resolved.scopes)
        added_scopes = list(resolved.added_scopes)
        if grant == "client_credentials":  # no consent, no refresh token: presets add nothing
            scopes, added_scopes = list(spec.scopes), []
        deletion_policy = spec.deletionPolicy
        if defaults and defaults.deletionPolicy and "deletionPolicy" not in declared:
            deletion_policy = defaults.deletionPolicy
        effective: dict[str, Any] = {
            "provider": spec.provider,
            "clientId": spec.clientId,
            "clientSecret": {"$secret": "clientSecret"} if "clientSecret" in secrets else None,
            "scopes": scopes,
            "grant": grant,
            "clientAuth": resolved.client_auth,
            "authorizationEndpoint": resolved.authorization_endpoint,
            "tokenEndpoint": resolved.token_endpoint,
            "revocationEndpoint": resolved.revocation_endpoint,
            "deviceAuthorizationEndpoint": resolved.device_authorization_endpoint,
            "issuer": resolved.issuer,
            "authorizeParams": dict(resolved.authorize_params) if grant != "client_credentials" else {},
            "tokenParams": dict(spec.tokenParams),
            "redirectUri": redirect,
            "refresh": spec.refresh.model_dump(),
            "revokeOnDelete": spec.revokeOnDelete,
            "deletionPolicy": deletion_policy,
            "labels": dict(link.metadata.labels),
            "presetAdded": {
                "scopes": added_scopes,
                "authorizeParams": dict(resolved.added_authorize_params)
                if grant != "client_credentials"
                else {},
            },
        }
        if spec.provider == "microsoft":
            effective["tenant"] = spec.tenant or get_preset("microsoft").default_tenant
            effective["cloud"] = spec.cloud or "global"
        sensitive = self._seal_encrypted(doc, effective, secrets)
        line = doc.line
        return DesiredLink(
            name=link.metadata.name,
            provider=spec.provider,
            spec=effective,
            secrets=secrets,
            source_file=doc.file,
            source_line=line,
            deletion_policy=deletion_policy,
            renamed_from=link.metadata.renamedFrom,
            sensitive_fields=sensitive,
            renamed_from_at=None
            if link.metadata.renamedFrom is None
            else doc.diagnostic(ERROR, "", ("metadata", "renamedFrom")),
        )

    def _seal_encrypted(
        self, doc: Document, effective: dict[str, Any], secrets: dict[str, Secret]
    ) -> frozenset[str]:
        """Move encrypted values into ``secrets`` (marker left in the spec); the paths plans redact."""
        sensitive: set[str] = set()
        readable: set[str] = set()
        for path in sorted(doc.encrypted_paths, key=str):
            if (
                path in IDENTITY_PATHS
                or path == ("spec", "clientSecret")
                or path[:2] == ("metadata", "annotations")
            ):
                continue  # annotations are never stored or shown
            value = _lookup(doc, path)
            if path == ("spec", "clientId") and isinstance(value, str):
                secrets["clientId"] = Secret(value)
                effective["clientId"] = {"$secret": "clientId"}
                sensitive.add("clientId")
                continue
            if (
                len(path) == 3
                and path[0] == "spec"
                and path[1] in SEALABLE_MAPS
                and isinstance(value, str)
                and path[2] in effective[str(path[1])]
            ):
                field = f"{path[1]}.{path[2]}"
                secrets[field] = Secret(value)
                effective[str(path[1])][str(path[2])] = {"$secret": field}
                sensitive.add(field)
                continue
            # Read by linkctl itself: plans redact its changes, but the store keeps it readable.
            if path[:1] == ("spec",):
                sensitive.add(_dotted(path[1:]))
            elif path[:2] == ("metadata", "labels"):
                sensitive.add(_dotted(("labels", *path[2:])))
            readable.add(_dotted(path))
        if readable:
            self.warn(
                doc,
                f"encrypted values of {', '.join(sorted(readable))} are stored and shown in plain text:"
                " linkctl reads them to plan, discover and build URLs",
                code="encrypted-readable-field",
                hint="encrypt only secrets, e.g. `sops encrypt --encrypted-regex "
                "'^(clientSecret|clientId|client_assertion)$'`; see docs/sops.md",
            )
        return frozenset(sensitive)

    def _check_renames(self, links: list[tuple[Document, OutgoingLink]]) -> None:
        names = {link.metadata.name for _, link in links}
        claimed: dict[str, tuple[Document, str]] = {}
        for doc, link in links:
            old = link.metadata.renamedFrom
            if old is None:
                continue
            if old == link.metadata.name:
                self.error(
                    doc,
                    "renamedFrom equals the link's own name",
                    ("metadata", "renamedFrom"),
                    hint="remove renamedFrom once the rename is applied",
                    code="bad-rename",
                )
            elif old in names:
                self.error(
                    doc,
                    f"renamedFrom {old!r} is still declared as a link",
                    ("metadata", "renamedFrom"),
                    hint="remove the old document when renaming",
                    code="bad-rename",
                )
            elif old in claimed:
                first_doc, first_name = claimed[old]
                self.error(
                    doc,
                    f"renamedFrom {old!r} is also claimed by link {first_name!r}"
                    f" ({first_doc.file}:{first_doc.line}); one link can be renamed only once",
                    ("metadata", "renamedFrom"),
                    hint=f"keep renamedFrom: {old} on one of the two links",
                    code="bad-rename",
                )
            else:
                claimed[old] = (doc, link.metadata.name)


def _known_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


_MISSING = object()


def _dotted(path: Sequence[str | int]) -> str:
    """``spec.scopes`` for ``("spec", "scopes", 0)``: the named part of a path, as plans name fields."""
    return ".".join(str(p) for p in itertools.takewhile(lambda p: isinstance(p, str), path))


def _lookup(doc: Document, loc: Sequence[Any]) -> Any:
    """The value at ``loc`` in a document's data, or ``_MISSING``."""
    value: Any = doc.data
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def _value_at(doc: Document, loc: Sequence[Any]) -> str:
    value = _lookup(doc, loc)
    return value if isinstance(value, str) else ""


def _type_name(doc: Document, loc: Sequence[Any]) -> str:
    value = _lookup(doc, loc)
    if value is _MISSING:
        return "something else"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def validate(loaded: LoadResult, *, env: Mapping[str, str]) -> ValidationResult:
    """Check loaded documents; return diagnostics and (when valid) the desired links."""
    return _Validator(loaded, env).run()


# linkctl's and SOPS's own settings (state key, age identities) must never be sent to a provider.
_RESERVED_ENV_PREFIXES = ("LINKCTL_", "SOPS_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Parameter keys whose values are credentials (client_secret, client_assertion,
# password, refresh_token, assertion, api_token, ...): they must be encrypted.
_SECRET_PARAM = re.compile(r"secret|password|token|assertion", re.IGNORECASE)
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
