"""A valid link's effective spec: presets resolved, Instance defaults applied, encrypted values sealed."""

from __future__ import annotations

from typing import Any

from reconciler.diagnostics import ERROR
from reconciler.domain.links import DesiredLink
from reconciler.load import Document
from reconciler.models import Instance, OutgoingLink
from reconciler.oauth.providers import get_preset, resolve
from reconciler.secrets import Secret
from reconciler.validate.paths import dotted, lookup
from reconciler.validate.results import Reporter

# A document is found by these, so they stay readable even when sops encrypted them.
IDENTITY_PATHS = frozenset({("apiVersion",), ("kind",), ("metadata", "name")})
# Fields whose encrypted values are sealed in the store and revealed only in requests;
# every other field is read by linkctl itself (discovery, URLs, plans) and stays readable.
SEALABLE_MAPS = ("tokenParams", "authorizeParams")


def desired_link(
    report: Reporter,
    doc: Document,
    link: OutgoingLink,
    grant: str,
    redirect: str | None,
    secrets: dict[str, Secret],
    *,
    instance: Instance | None,
) -> DesiredLink:
    """The link as planning sees it: presets resolved, Instance defaults applied, encrypted values sealed."""
    spec = link.spec
    defaults = instance.spec.defaults if instance else None
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
            "authorizeParams": dict(resolved.added_authorize_params) if grant != "client_credentials" else {},
        },
    }
    if spec.provider == "microsoft":
        effective["tenant"] = spec.tenant or get_preset("microsoft").default_tenant
        effective["cloud"] = spec.cloud or "global"
    sensitive = _seal_encrypted(report, doc, effective, secrets)
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
    report: Reporter, doc: Document, effective: dict[str, Any], secrets: dict[str, Secret]
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
        value = lookup(doc, path)
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
            sensitive.add(dotted(path[1:]))
        elif path[:2] == ("metadata", "labels"):
            sensitive.add(dotted(("labels", *path[2:])))
        readable.add(dotted(path))
    if readable:
        report.warn(
            doc,
            f"encrypted values of {', '.join(sorted(readable))} are stored and shown in plain text:"
            " linkctl reads them to plan, discover and build URLs",
            code="encrypted-readable-field",
            hint="encrypt only secrets, e.g. `sops encrypt --encrypted-regex "
            "'^(clientSecret|clientId|client_assertion)$'`; see docs/sops.md",
        )
    return frozenset(sensitive)
