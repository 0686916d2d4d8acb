"""The committed JSON Schemas equal the generated ones, and the examples satisfy them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from reconciler.models import json_schemas, render_schema

ROOT = Path(__file__).resolve().parents[3]


def test_committed_schemas_are_generated() -> None:
    for name, schema in json_schemas().items():
        committed = (ROOT / "schemas" / name).read_text(encoding="utf-8")
        assert committed == render_schema(schema), (
            f"schemas/{name} is stale: run `linkctl schema --write schemas`"
        )


def test_examples_validate_against_schema() -> None:
    schemas = json_schemas()
    by_kind = {
        "OutgoingLink": schemas["outgoing-link.schema.json"],
        "Instance": schemas["instance.schema.json"],
    }
    seen = 0
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") not in by_kind or "sops" in doc:
                continue
            jsonschema.Draft202012Validator(by_kind[doc["kind"]]).validate(doc)
            seen += 1
    assert seen >= 4


def test_schema_rejects_unknown_fields() -> None:
    schema = json_schemas()["outgoing-link.schema.json"]
    doc = {
        "apiVersion": "linkctl.dev/v1",
        "kind": "OutgoingLink",
        "metadata": {"name": "a"},
        "spec": {"provider": "google", "scope": []},
    }
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert errors and "scope" in json.dumps([e.message for e in errors])
