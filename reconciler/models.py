"""The declared document kinds as pydantic models: the single source of the JSON Schema.

Field names are the public contract (users' repos depend on them): extend,
never rename. ``schemas/*.schema.json`` is generated from these models by
:func:`json_schemas` (``linkctl schema --write schemas/``); a test fails when
the committed files differ.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SCHEMA_BASE = "https://linkctl.dev/schemas"

Provider = Literal["google", "microsoft", "custom"]
GrantType = Literal["authorization_code", "device_code", "client_credentials"]
ClientAuth = Literal["client_secret_basic", "client_secret_post"]
DeletionPolicy = Literal["delete", "retain"]
Cloud = Literal["global", "usgov", "china"]
Url = Annotated[StrictStr, Field(min_length=1, json_schema_extra={"format": "uri"})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _document_config(title: str, schema_file: str) -> ConfigDict:
    """Model config of a top-level document kind (its schema's title and $id)."""
    return ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title=title,
        json_schema_extra={"$id": f"{SCHEMA_BASE}/{schema_file}"},
    )


class FromEnv(_Strict):
    """Take the secret from an environment variable at plan/apply time."""

    fromEnv: Annotated[StrictStr, Field(min_length=1, description="Environment variable name")]


class FromFile(_Strict):
    """Take the secret from a file (path relative to the declaring file)."""

    fromFile: Annotated[StrictStr, Field(min_length=1, description="Path, relative to this file")]


SecretSource = Annotated[
    StrictStr | FromEnv | FromFile,
    Field(
        description=(
            "A SOPS-encrypted value (ENC[AES256_GCM,...]), {fromEnv: NAME} or {fromFile: path}. "
            "Plaintext is refused unless the Instance sets allowPlaintextSecrets."
        )
    ),
]


class Metadata(_Strict):
    """Identity of a document."""

    name: Annotated[
        StrictStr, Field(pattern=DNS_LABEL, max_length=63, description="DNS label; the link's identity")
    ]
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    renamedFrom: Annotated[
        StrictStr | None,
        Field(
            pattern=DNS_LABEL,
            description="Previous name: move the stored link (and its grant) instead of delete + create",
        ),
    ] = None


class RefreshPolicy(_Strict):
    """How tokens of a link are kept fresh."""

    expectRefreshToken: StrictBool = Field(
        True, description="Refuse configurations that cannot yield a refresh token (offline_access etc.)"
    )
    keepAliveDays: Annotated[int | None, Field(ge=1, le=365)] = Field(
        None, description="Refresh at least this often, even when the access token lives longer"
    )


class OutgoingLinkSpec(_Strict):
    """Desired state of one outgoing OAuth 2.0 link."""

    provider: Provider
    clientId: Annotated[StrictStr, Field(min_length=1)] | None = Field(
        None, description="Omit until the app is registered at the provider (pending credentials)"
    )
    clientSecret: SecretSource | None = None
    scopes: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)
    grant: GrantType = "authorization_code"
    clientAuth: ClientAuth | None = Field(None, description="Default: the preset's method")
    authorizationEndpoint: Url | None = None
    tokenEndpoint: Url | None = None
    revocationEndpoint: Url | None = None
    deviceAuthorizationEndpoint: Url | None = None
    issuer: Url | None = Field(None, description="custom only: discover endpoints (OIDC / RFC 8414)")
    tenant: StrictStr | None = Field(None, description="microsoft only (default: organizations)")
    cloud: Cloud | None = Field(None, description="microsoft only (default: global)")
    authorizeParams: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    tokenParams: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    refresh: RefreshPolicy = Field(default_factory=RefreshPolicy)
    revokeOnDelete: StrictBool = True
    deletionPolicy: DeletionPolicy = "delete"


class OutgoingLink(_Strict):
    """An outgoing OAuth 2.0 link (linkctl.dev/v1)."""

    model_config = _document_config("OutgoingLink", "outgoing-link.schema.json")
    apiVersion: Literal["linkctl.dev/v1"]
    kind: Literal["OutgoingLink"]
    metadata: Metadata
    spec: OutgoingLinkSpec


class InstanceDefaults(_Strict):
    """Defaults applied to every link that does not set the field."""

    clientAuth: ClientAuth | None = None
    grant: GrantType | None = None
    deletionPolicy: DeletionPolicy | None = None


class NotifyTarget(_Strict):
    """A webhook that gets a signed JSON POST whenever a link's status changes."""

    url: Url = Field(
        description="HTTPS endpoint receiving the POST (http only on loopback with allowInsecureLoopback);"
        " may be SOPS-encrypted: it is sealed in the store and shown by its origin only"
    )
    secret: SecretSource = Field(
        description="HMAC-SHA256 key signing each body (X-Linkctl-Signature): SOPS-encrypted,"
        " {fromEnv: NAME} or {fromFile: path}"
    )


class InstanceSpec(_Strict):
    """The app instance whose outgoing links these are."""

    baseUrl: Url = Field(description="Public URL of the instance; redirect URLs derive from it")
    allowInsecureLoopback: StrictBool = Field(
        False, description="Allow http:// endpoints and base URL on loopback hosts (local testing only)"
    )
    allowPlaintextSecrets: StrictBool = Field(
        False, description="Allow plaintext clientSecret values in declared files (not recommended)"
    )
    defaults: InstanceDefaults = Field(default_factory=InstanceDefaults)
    notify: list[NotifyTarget] = Field(
        default_factory=list,
        max_length=20,
        description="Status webhooks: each gets a signed JSON POST when a link's status changes",
    )


class Instance(_Strict):
    """The instance document (linkctl.dev/v1)."""

    model_config = _document_config("Instance", "instance.schema.json")
    apiVersion: Literal["linkctl.dev/v1"]
    kind: Literal["Instance"]
    metadata: Metadata
    spec: InstanceSpec


MODELS: dict[str, type[_Strict]] = {"OutgoingLink": OutgoingLink, "Instance": Instance}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (draft 2020-12) for every kind, plus one for any document."""
    schemas: dict[str, dict[str, Any]] = {}
    for file_name, model in (("outgoing-link.schema.json", OutgoingLink), ("instance.schema.json", Instance)):
        schema = model.model_json_schema()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        schemas[file_name] = schema
    schemas["linkctl.schema.json"] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/linkctl.schema.json",
        "title": "linkctl document",
        "description": "Any linkctl.dev/v1 document, selected by kind",
        "if": {"properties": {"kind": {"const": "Instance"}}},
        "then": {"$ref": "instance.schema.json"},
        "else": {"$ref": "outgoing-link.schema.json"},
    }
    return schemas


def render_schema(schema: dict[str, Any]) -> str:
    """Stable text of a schema file."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
