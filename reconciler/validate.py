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
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from reconciler.diagnostics import ERROR, WARNING, Diagnostic, has_errors
from reconciler.load import SECRET_KEYS, Document, LoadResult
from reconciler.models import MODELS, FromEnv, FromFile, Instance, OutgoingLink
from reconciler.oauth.providers import get_preset, resolve
from reconciler.secrets import Secret

REDIRECT_PATH = "/oauth/callback/{name}"
# pydantic names the members of the clientSecret union in error locations.
_UNION_MEMBERS = {"str", "FromEnv", "FromFile"}
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); a space would split it in two.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclasses.dataclass(frozen=True)
class DesiredLink:
    """One link as the files declare it, with presets applied and secrets resolved."""

    name: str
    provider: str
    spec: Mapping[str, Any]  # effective values; secret fields hold {"$secret": field}
    secrets: Mapping[str, Secret]
    source_file: str
    source_line: int
    deletion_policy: str
    renamed_from: str | None
    sensitive_fields: frozenset[str]  # spec keys whose values were SOPS-encrypted

    @property
    def pending_credentials(self) -> bool:
        """True while clientId is not declared yet."""
        return not self.spec.get("clientId")


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
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            self.error(doc, f"{what} must be an absolute https:// URL, got {url!r}", path, code="bad-url")
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
                    hint=f"use {url.replace('http://', 'https://', 1)}",
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

    def _resolve_secrets(self, doc: Document, link: OutgoingLink) -> dict[str, Secret]:
        secrets: dict[str, Secret] = {}
        source = link.spec.clientSecret
        path = ("spec", "clientSecret")
        if source is None:
            return secrets
        if isinstance(source, FromEnv):
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
            file = Path(os.path.dirname(doc.file)) / source.fromFile
            try:
                value = file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
                self.error(
                    doc,
                    f"cannot read secret file {str(file)!r}: {reason}",
                    (*path, "fromFile"),
                    hint="fromFile paths are relative to the declaring file",
                    code="secret-unresolved",
                )
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
        sensitive = frozenset(
            str(p[1])
            for p in doc.encrypted_paths
            if len(p) >= 2 and p[0] == "spec" and p[1] not in SECRET_KEYS
        )
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
        )

    def _check_renames(self, links: list[tuple[Document, OutgoingLink]]) -> None:
        names = {link.metadata.name for _, link in links}
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
